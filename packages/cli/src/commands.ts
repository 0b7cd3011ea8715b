// The API-facing commands: keys, tenants, adapters, generate. Each takes its argv (after the
// command words) and writes to stdout; failures throw (UsageError: exit 2; API errors: exit 1).
import { Loraplex, type UploadProgress } from '@loraplex/sdk';
import { GLOBAL_HELP, intOpt, numOpt, parse, UsageError } from './args.js';

function client(values: { 'base-url'?: unknown; 'api-key'?: unknown }): Loraplex {
  const baseURL =
    (values['base-url'] as string | undefined) ?? process.env.LORAPLEX_BASE_URL ?? 'http://127.0.0.1:8080';
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.LORAPLEX_API_KEY;
  return new Loraplex({ baseURL, ...(apiKey ? { apiKey } : {}) });
}

const print = (v: unknown): void => console.log(JSON.stringify(v, null, 2));

export const KEYS_HELP = `usage: loraplex keys create [--name NAME] [--scopes inference,adapters:write,admin] [--tenant ID]
       loraplex keys list [--tenant ID]
       loraplex keys revoke KEY_ID
Creates, lists (prefix only) and revokes API keys; needs an admin key. A created key is printed once.
${GLOBAL_HELP}`;

export async function keys(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void console.log(KEYS_HELP);
  const a = parse(
    rest,
    { name: { type: 'string' }, scopes: { type: 'string' }, tenant: { type: 'string' } },
    KEYS_HELP,
    { min: 0, max: sub === 'revoke' ? 1 : 0 },
  );
  if (a.help) return void console.log(KEYS_HELP);
  const c = client(a.values);
  if (sub === 'create') {
    const scopes = typeof a.values.scopes === 'string' ? a.values.scopes.split(',').map((s) => s.trim()) : undefined;
    return print(
      await c.keys.create({
        ...(typeof a.values.name === 'string' ? { name: a.values.name } : {}),
        ...(scopes ? { scopes } : {}),
        ...(typeof a.values.tenant === 'string' ? { tenantId: a.values.tenant } : {}),
      }),
    );
  }
  if (sub === 'list')
    return print(await c.keys.list(typeof a.values.tenant === 'string' ? { tenantId: a.values.tenant } : {}));
  if (sub === 'revoke') {
    if (!a.positionals[0]) throw new UsageError(`keys revoke needs a key id\n\n${KEYS_HELP}`);
    return print(await c.keys.revoke(a.positionals[0]));
  }
  throw new UsageError(`unknown keys command ${JSON.stringify(sub)}\n\n${KEYS_HELP}`);
}

export const TENANTS_HELP = `usage: loraplex tenants create NAME
       loraplex tenants list
Creates and lists tenants; needs the platform admin key.
${GLOBAL_HELP}`;

export async function tenants(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void console.log(TENANTS_HELP);
  const a = parse(rest, {}, TENANTS_HELP, { min: sub === 'create' ? 1 : 0, max: sub === 'create' ? 1 : 0 });
  if (a.help) return void console.log(TENANTS_HELP);
  const c = client(a.values);
  if (sub === 'create') return print(await c.tenants.create(a.positionals[0]!));
  if (sub === 'list') return print(await c.tenants.list());
  throw new UsageError(`unknown tenants command ${JSON.stringify(sub)}\n\n${TENANTS_HELP}`);
}

export const ADAPTERS_HELP = `usage: loraplex adapters upload DIR --name NAME [--base-model ID] [--multipart-threshold BYTES]
       loraplex adapters list
       loraplex adapters get REF
       loraplex adapters delete REF
Uploads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors or .bin), with a
progress bar; REF is NAME, NAME@VERSION or an adapter id.
${GLOBAL_HELP}`;

function progressBar(): (p: UploadProgress) => void {
  const tty = process.stderr.isTTY === true;
  let lastPct = -1;
  return (p) => {
    const pct = p.total === 0 ? 100 : Math.floor((100 * p.loaded) / p.total);
    if (tty) {
      const width = 30,
        fill = Math.round((width * pct) / 100);
      process.stderr.write(
        `\r${p.phase.padEnd(10)} [${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${String(pct).padStart(3)}% ${p.loaded}/${p.total} bytes${p.phase === 'done' ? '\n' : ''}`,
      );
    } else if (pct !== lastPct && (pct % 25 === 0 || p.phase !== 'uploading')) {
      process.stderr.write(`${p.phase} ${pct}%\n`);
    }
    lastPct = pct;
  };
}

export async function adapters(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void console.log(ADAPTERS_HELP);
  const a = parse(
    rest,
    { name: { type: 'string' }, 'base-model': { type: 'string' }, 'multipart-threshold': { type: 'string' } },
    ADAPTERS_HELP,
    { min: sub === 'list' ? 0 : 1, max: sub === 'list' ? 0 : 1 },
  );
  if (a.help) return void console.log(ADAPTERS_HELP);
  const c = client(a.values);
  if (sub === 'upload') {
    if (typeof a.values.name !== 'string') throw new UsageError(`adapters upload needs --name\n\n${ADAPTERS_HELP}`);
    const threshold = intOpt(a.values['multipart-threshold'], 'multipart-threshold', 0);
    return print(
      await c.adapters.upload(a.positionals[0]!, {
        name: a.values.name,
        onProgress: progressBar(),
        ...(typeof a.values['base-model'] === 'string' ? { baseModel: a.values['base-model'] } : {}),
        ...(threshold !== undefined ? { multipartThreshold: threshold } : {}),
      }),
    );
  }
  if (sub === 'list') return print(await c.adapters.list());
  if (sub === 'get') return print(await c.adapters.get(a.positionals[0]!));
  if (sub === 'delete') return print(await c.adapters.delete(a.positionals[0]!));
  throw new UsageError(`unknown adapters command ${JSON.stringify(sub)}\n\n${ADAPTERS_HELP}`);
}

export const GENERATE_HELP = `usage: loraplex generate [--adapter REF] [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K]
                        [--seed S] [--stop STR]... "PROMPT"
Streams the completion of PROMPT to the terminal (the base model without --adapter).
${GLOBAL_HELP}`;

export async function generate(argv: string[]): Promise<void> {
  const a = parse(
    argv,
    {
      adapter: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
    },
    GENERATE_HELP,
    { min: 1, max: 1 },
  );
  if (a.help) return void console.log(GENERATE_HELP);
  const v = a.values;
  const opt = <T>(k: string, x: T | undefined): Record<string, T> => (x === undefined ? {} : { [k]: x });
  const stream = client(v).generateStream(a.positionals[0]!, {
    ...opt('adapterId', v.adapter as string | undefined),
    ...opt('maxNewTokens', intOpt(v['max-new-tokens'], 'max-new-tokens', 1)),
    ...opt('temperature', numOpt(v.temperature, 'temperature', 0)),
    ...opt('topP', numOpt(v['top-p'], 'top-p', 0)),
    ...opt('topK', intOpt(v['top-k'], 'top-k', 0)),
    ...opt('seed', intOpt(v.seed, 'seed', 0)),
    ...opt('stop', v.stop as string[] | undefined),
  });
  let last;
  for await (const e of stream) {
    if (!e.token.special) process.stdout.write(e.token.text);
    last = e.final;
  }
  process.stdout.write('\n');
  if (last)
    process.stderr.write(
      `[${last.finishReason}, ${last.promptTokens} prompt + ${last.generatedTokens} generated tokens]\n`,
    );
}
