// Command-line options of loraplex-worker.
import { parseArgs } from 'node:util';
import type { WorkerOptions } from './worker.js';

export const USAGE = `usage: loraplex-worker --model DIR [--port N] [--host ADDR] [--served-model-name NAME]
       [--adapter-dir DIR | --adapter-s3 s3://bucket/prefix/] [--adapter-refresh-interval SECONDS] [--allow-hub-adapters]
       [--adapter-cache-dir DIR] [--disk-cache-bytes N] [--host-cache-adapters N] [--host-cache-bytes N]
       [--max-adapters N] [--max-lora-rank N] [--kv-cache-tokens N] [--max-batch-tokens N]
       [--threads N] [--backend cpu|cuda|auto]
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

export function parseCli(argv: string[]): CliOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
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
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) throw new Error(USAGE);
  if (positionals.length > 0) throw new Error(`unexpected argument ${positionals[0]}\n${USAGE}`);
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
    ...opt('adapterDir', values['adapter-dir']),
    ...opt('adapterS3', values['adapter-s3']),
    ...opt('allowHubAdapters', values['allow-hub-adapters']),
    ...opt('adapterRefreshInterval', num('adapter-refresh-interval', values['adapter-refresh-interval'], 0)),
    ...opt('adapterCacheDir', values['adapter-cache-dir']),
    ...opt('diskCacheBytes', int('disk-cache-bytes', values['disk-cache-bytes'], 0)),
    ...opt('hostCacheAdapters', int('host-cache-adapters', values['host-cache-adapters'], 1)),
    ...opt('hostCacheBytes', int('host-cache-bytes', values['host-cache-bytes'], 1)),
    ...opt('workerSecret', values['worker-secret']),
    ...opt('apiKey', values['api-key']),
    ...opt('apiUrl', values['api-url']),
    ...opt('advertiseUrl', values['advertise-url']),
    ...opt('workerId', values['worker-id']),
    ...opt('heartbeatInterval', num('heartbeat-interval', values['heartbeat-interval'], 0.05)),
    ...opt('servedModelName', values['served-model-name']),
    ...opt('maxAdapters', int('max-adapters', values['max-adapters'], 0)),
    ...opt('maxLoraRank', int('max-lora-rank', values['max-lora-rank'], 1)),
    ...opt('kvCacheTokens', int('kv-cache-tokens', values['kv-cache-tokens'], 1)),
    ...opt('maxBatchTokens', int('max-batch-tokens', values['max-batch-tokens'], 1)),
    ...opt('threads', int('threads', values.threads, 0)),
  };
}
