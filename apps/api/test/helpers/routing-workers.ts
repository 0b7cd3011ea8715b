// Real worker processes for the routing tests: the built `loraplex-worker` (apps/worker/dist/cli.js)
// on the tiny fixture model, and the contract §2 heartbeat body describing one. The dist is rebuilt
// with tsc when it is missing or older than the worker's sources.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { metric, platformHeaders } from '../../../worker/test/helpers/http.js';
import { ensureBuilt, spawnWorker } from '../../../worker/test/helpers/process.js';
import { API_DIR } from './routing-db.js';

export { sseData, until } from '../../../worker/test/helpers/http.js';

export const REPO = resolve(API_DIR, '..', '..');
export const FIXTURE = join(REPO, 'packages', 'engine', 'test', 'fixtures', 'hf-tiny', 'llama');
export const MODEL_DIR = join(FIXTURE, 'base');
export const ADAPTER_DIR = join(FIXTURE, 'adapters');
export const BASE_MODEL = 'tiny-llama';

export interface WorkerProcess {
  id: string;
  child: ChildProcess;
  port: number;
  url: string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The secret the test workers verify adapter descriptors with (Routers in the tests sign with it). */
export const WORKER_SECRET = 'test-worker-secret';

export async function startWorker(id: string, extraArgs: string[] = [], timeoutMs = 60_000): Promise<WorkerProcess> {
  ensureBuilt();
  const w = await spawnWorker(
    [
      '--host',
      '127.0.0.1',
      '--model',
      MODEL_DIR,
      '--adapter-dir',
      ADAPTER_DIR,
      '--served-model-name',
      BASE_MODEL,
      '--threads',
      '1',
      '--worker-secret',
      WORKER_SECRET,
      ...extraArgs,
    ],
    timeoutMs,
  );
  const { child, port, exited } = w;
  return {
    id,
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export const MODEL_CONFIG = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;

/** The heartbeat a worker sends (contract §2), for a worker at `url`. */
export function heartbeatFor(
  id: string,
  url: string,
  over: Partial<{ resident: string[]; draining: boolean; running: number; baseModel: string }> = {},
): Record<string, unknown> {
  return {
    id,
    url,
    base_model: over.baseModel ?? BASE_MODEL,
    model_config: MODEL_CONFIG,
    max_lora_rank: 64,
    capacity: { adapter_slots: 4, host_adapters: 16, kv_blocks: 256, max_batch_tokens: 512 },
    load: { running: over.running ?? 0, waiting: 0, kv_free_blocks: 256 },
    resident_adapters: over.resident ?? [],
    draining: over.draining ?? false,
  };
}

/** A worker's metric, read as the platform does (workers answer /metrics to signed requests only). */
export async function workerMetric(url: string, name: string, labels = ''): Promise<number> {
  return metric(
    await (await fetch(`${url}/metrics`, { headers: platformHeaders(WORKER_SECRET, 'GET', '/metrics') })).text(),
    name,
    labels,
  );
}

/** A request straight to a worker, signed as the API signs it. */
export function postToWorker(worker: { url: string }, path: string, body: unknown): Promise<Response> {
  const text = JSON.stringify(body);
  return fetch(`${worker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...platformHeaders(WORKER_SECRET, 'POST', path, text) },
    body: text,
  });
}
