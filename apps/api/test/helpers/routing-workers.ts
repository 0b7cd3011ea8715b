// Real worker processes for the routing tests: the built `loraplex-worker` (apps/worker/dist/cli.js)
// on the tiny fixture model, and the contract §2 heartbeat body describing one. The dist is rebuilt
// with tsc when it is missing or older than the worker's sources.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { API_DIR } from './routing-db.js';

export const REPO = resolve(API_DIR, '..', '..');
const WORKER_APP = join(REPO, 'apps', 'worker');
export const WORKER_CLI = join(WORKER_APP, 'dist', 'cli.js');
export const FIXTURE = join(REPO, 'packages', 'engine', 'test', 'fixtures', 'hf-tiny', 'llama');
export const MODEL_DIR = join(FIXTURE, 'base');
export const ADAPTER_DIR = join(FIXTURE, 'adapters');
export const BASE_MODEL = 'tiny-llama';

function newestMtime(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return t;
}

export function ensureWorkerBuilt(): void {
  if (existsSync(WORKER_CLI) && statSync(WORKER_CLI).mtimeMs >= newestMtime(join(WORKER_APP, 'src'))) return;
  const tsc = createRequire(join(WORKER_APP, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(WORKER_APP, 'tsconfig.json')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the worker failed:\n${r.stdout}${r.stderr}`);
}

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
  ensureWorkerBuilt();
  const args = [WORKER_CLI, '--port', '0', '--host', '127.0.0.1', '--model', MODEL_DIR, '--adapter-dir', ADAPTER_DIR, '--served-model-name', BASE_MODEL, '--threads', '1', '--worker-secret', WORKER_SECRET, ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  let out = '', err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const port = await new Promise<number>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`worker did not start in ${timeoutMs} ms:\n${out}${err}`)), timeoutMs);
    child.stdout!.on('data', () => {
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        res((JSON.parse(line) as { port: number }).port);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`worker exited with ${code} before listening:\n${out}${err}`));
    });
  });
  return {
    id, child, port, url: `http://127.0.0.1:${port}`, exited,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export const MODEL_CONFIG = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;

/** The heartbeat a worker sends (contract §2), for a worker at `url`. */
export function heartbeatFor(id: string, url: string, over: Partial<{ resident: string[]; draining: boolean; running: number; baseModel: string }> = {}): Record<string, unknown> {
  return {
    id, url, base_model: over.baseModel ?? BASE_MODEL, model_config: MODEL_CONFIG, max_lora_rank: 64,
    capacity: { adapter_slots: 4, host_adapters: 16, kv_blocks: 256, max_batch_tokens: 512 },
    load: { running: over.running ?? 0, waiting: 0, kv_free_blocks: 256 },
    resident_adapters: over.resident ?? [], draining: over.draining ?? false,
  };
}

/** Value of a Prometheus sample (labels matched as a substring), 0 when absent. */
export function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

export async function workerMetric(url: string, name: string, labels = ''): Promise<number> {
  return metric(await (await fetch(`${url}/metrics`)).text(), name, labels);
}

/** The `data:` payloads of an SSE body ('[DONE]' kept as a string). */
export function sseData(text: string): Array<Record<string, unknown> | string> {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map((b) => {
      const line = b.split('\n').find((l) => l.startsWith('data:'));
      if (!line) throw new Error(`not an SSE event: ${b}`);
      const data = line.slice(5).trim();
      return data === '[DONE]' ? data : (JSON.parse(data) as Record<string, unknown>);
    });
}

export async function until(cond: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
