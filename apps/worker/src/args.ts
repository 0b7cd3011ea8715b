// Command-line options of loraplex-worker, with vLLM's LoRA flags as aliases (--max-loras = --max-adapters,
// --max-cpu-loras = --host-cache-adapters, --lora-modules, --enable-lora accepted: LoRA is always on) and
// NIM's environment variables as defaults (LOCAL_PEFT_DIRECTORY, NIM_PEFT_REFRESH_INTERVAL,
// NIM_MAX_GPU_LORAS, NIM_MAX_CPU_LORAS, NIM_MAX_LORA_RANK). Flags win over the environment.
import { parseArgs } from 'node:util';
import type { WorkerOptions } from './worker.js';

export const USAGE = `usage: loraplex-worker --model DIR [--port N] [--host ADDR] [--served-model-name NAME]
       [--adapter-dir DIR | --adapter-s3 s3://bucket/prefix/] [--adapter-refresh-interval SECONDS] [--allow-hub-adapters]
       [--adapter-cache-dir DIR] [--disk-cache-bytes N] [--host-cache-adapters N] [--host-cache-bytes N]
       [--max-adapters N] [--max-lora-rank N] [--kv-cache-tokens N] [--max-batch-tokens N]
       [--threads N] [--backend cpu|cuda|auto]
       [--lora-modules NAME=PATH|JSON ...] [--max-loras N] [--max-cpu-loras N] [--enable-lora]
       [--allow-runtime-lora-updating] [--allow-lora-paths-outside-adapter-dir]
       [--api-key KEY] [--worker-secret S] [--api-url URL] [--advertise-url URL] [--worker-id ID] [--heartbeat-interval SECONDS]`;

export type CliOptions = WorkerOptions & { port: number; host: string };

function num(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}, got ${v}`);
  return n;
}

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

/** One --lora-modules value: vLLM's `name=path` or its JSON form `{"name", "path", "base_model_name"?}`. */
export function parseLoraModule(v: string): { name: string; path: string } {
  if (v.trimStart().startsWith('{')) {
    let j: unknown;
    try {
      j = JSON.parse(v);
    } catch {
      throw new Error(`--lora-modules: invalid JSON ${v}`);
    }
    const { name, path } = (j ?? {}) as { name?: unknown; path?: unknown };
    if (typeof name !== 'string' || !name || typeof path !== 'string' || !path)
      throw new Error(`--lora-modules: JSON needs string "name" and "path", got ${v}`);
    return { name, path };
  }
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw new Error(`--lora-modules wants NAME=PATH or JSON, got ${v}`);
  return { name: v.slice(0, eq), path: v.slice(eq + 1) };
}

/** vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING test: "true" or "1", any case. */
export function envFlag(v: string | undefined): boolean {
  return v !== undefined && ['true', '1'].includes(v.trim().toLowerCase());
}

/** The flag's value, else the environment variable's (an empty variable is unset). */
function orEnv(flag: string | undefined, env: NodeJS.ProcessEnv, name: string): string | undefined {
  return flag ?? (env[name] || undefined);
}

/** Two spellings of one setting: either, or both when they agree. */
function alias(a: [string, string | undefined], b: [string, string | undefined]): string | undefined {
  if (a[1] !== undefined && b[1] !== undefined && a[1] !== b[1])
    throw new Error(`--${a[0]} ${a[1]} and --${b[0]} ${b[1]} disagree (they are the same setting)`);
  return a[1] ?? b[1];
}

export function parseCli(argv: string[], env: NodeJS.ProcessEnv = process.env): CliOptions {
  const { values, tokens } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    tokens: true,
    options: {
      model: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'adapter-dir': { type: 'string' },
      'adapter-s3': { type: 'string' },
      'allow-hub-adapters': { type: 'boolean' },
      'adapter-refresh-interval': { type: 'string' },
      'adapter-cache-dir': { type: 'string' },
      'disk-cache-bytes': { type: 'string' },
      'host-cache-adapters': { type: 'string' },
      'host-cache-bytes': { type: 'string' },
      'worker-secret': { type: 'string' },
      'api-key': { type: 'string' },
      'api-url': { type: 'string' },
      'advertise-url': { type: 'string' },
      'worker-id': { type: 'string' },
      'heartbeat-interval': { type: 'string' },
      'max-adapters': { type: 'string' },
      'max-lora-rank': { type: 'string' },
      'kv-cache-tokens': { type: 'string' },
      'max-batch-tokens': { type: 'string' },
      threads: { type: 'string' },
      backend: { type: 'string' },
      'served-model-name': { type: 'string' },
      'enable-lora': { type: 'boolean' },
      'lora-modules': { type: 'string', multiple: true },
      'max-loras': { type: 'string' },
      'max-cpu-loras': { type: 'string' },
      'allow-runtime-lora-updating': { type: 'boolean' },
      'allow-lora-paths-outside-adapter-dir': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) throw new Error(USAGE);
  // vLLM's --lora-modules takes several values (nargs='+'): positionals right after it are more modules.
  const loraModules = [...(values['lora-modules'] ?? [])];
  let afterLoraModules = false;
  for (const t of tokens) {
    if (t.kind === 'option') afterLoraModules = t.name === 'lora-modules';
    else if (t.kind === 'positional') {
      if (!afterLoraModules) throw new Error(`unexpected argument ${t.value}\n${USAGE}`);
      loraModules.push(t.value);
    } else afterLoraModules = false;
  }
  const adapterDir =
    values['adapter-dir'] ?? (values['adapter-s3'] === undefined ? env.LOCAL_PEFT_DIRECTORY || undefined : undefined);
  const maxAdapters = alias(['max-adapters', values['max-adapters']], ['max-loras', values['max-loras']]);
  const hostAdapters = alias(
    ['host-cache-adapters', values['host-cache-adapters']],
    ['max-cpu-loras', values['max-cpu-loras']],
  );
  const runtimeUpdates = values['allow-runtime-lora-updating'] || envFlag(env.VLLM_ALLOW_RUNTIME_LORA_UPDATING);
  if (!values.model) throw new Error(`--model is required\n${USAGE}`);
  const backend = values.backend ?? 'auto';
  if (backend !== 'cpu' && backend !== 'cuda' && backend !== 'auto')
    throw new Error(`--backend must be cpu, cuda or auto, got ${backend}`);
  const opt = <T>(k: string, v: T | undefined): Record<string, T> => (v === undefined ? {} : { [k]: v });
  return {
    model: values.model,
    port: int('port', values.port, 0) ?? 8000,
    host: values.host ?? '127.0.0.1',
    backend,
    defaultMetrics: true,
    ...opt('adapterDir', adapterDir),
    ...opt('adapterS3', values['adapter-s3']),
    ...opt('allowHubAdapters', values['allow-hub-adapters']),
    ...opt(
      'adapterRefreshInterval',
      num('adapter-refresh-interval', orEnv(values['adapter-refresh-interval'], env, 'NIM_PEFT_REFRESH_INTERVAL'), 0),
    ),
    ...opt('adapterCacheDir', values['adapter-cache-dir']),
    ...opt('diskCacheBytes', int('disk-cache-bytes', values['disk-cache-bytes'], 0)),
    ...opt('hostCacheAdapters', int('host-cache-adapters', hostAdapters ?? (env.NIM_MAX_CPU_LORAS || undefined), 1)),
    ...opt('hostCacheBytes', int('host-cache-bytes', values['host-cache-bytes'], 1)),
    ...opt('workerSecret', values['worker-secret']),
    ...opt('apiKey', values['api-key']),
    ...opt('apiUrl', values['api-url']),
    ...opt('advertiseUrl', values['advertise-url']),
    ...opt('workerId', values['worker-id']),
    ...opt('heartbeatInterval', num('heartbeat-interval', values['heartbeat-interval'], 0.05)),
    ...opt('servedModelName', values['served-model-name']),
    ...opt('maxAdapters', int('max-adapters', maxAdapters ?? (env.NIM_MAX_GPU_LORAS || undefined), 0)),
    ...opt('maxLoraRank', int('max-lora-rank', orEnv(values['max-lora-rank'], env, 'NIM_MAX_LORA_RANK'), 1)),
    ...(loraModules.length > 0 ? { loraModules: loraModules.map(parseLoraModule) } : {}),
    ...(runtimeUpdates ? { allowRuntimeLoraUpdating: true } : {}),
    ...opt('allowLoraPathsOutsideAdapterDir', values['allow-lora-paths-outside-adapter-dir']),
    ...opt('kvCacheTokens', int('kv-cache-tokens', values['kv-cache-tokens'], 1)),
    ...opt('maxBatchTokens', int('max-batch-tokens', values['max-batch-tokens'], 1)),
    ...opt('threads', int('threads', values.threads, 0)),
  };
}
