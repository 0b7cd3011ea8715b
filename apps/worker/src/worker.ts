// Builds a worker: engine + adapter manager + scheduler + metrics + Hono app. The listener lives in
// serve.ts / cli.ts, so tests can drive `worker.app.request()` without a socket.
import { stat } from 'node:fs/promises';
import { Engine, EngineError } from '@loraplex/engine';
import type { Hono } from 'hono';
import { AdapterManager } from './adapters/adapter-manager.js';
import { LocalDirSource, NoAdapters, type AdapterSource } from './adapters/source.js';
import { WorkerMetrics } from './metrics.js';
import { Scheduler } from './scheduler/scheduler.js';
import { StructuredOutput } from './structured/structured-output.js';
import { createApp } from './server/app.js';
import type { WorkerEnv } from './server/types.js';
import type { WorkerContext } from './worker-context.js';

export interface WorkerOptions {
  /** Hugging Face model directory. */
  model: string;
  /** The base model's id in `model` fields; default the model path as given (as vLLM does). */
  servedModelName?: string;
  /** Directory of PEFT adapters, one subdirectory each, named after it. */
  adapterDir?: string;
  /** Another adapter source (tests, later tiers); overrides adapterDir. */
  adapterSource?: AdapterSource;
  backend?: 'cpu' | 'cuda' | 'auto';
  maxAdapters?: number;
  maxLoraRank?: number;
  kvCacheTokens?: number;
  maxBatchTokens?: number;
  threads?: number;
  /** Most sequences in the running batch. Default 256. */
  maxRunning?: number;
  /** Node process metrics in /metrics (off in tests with several workers). */
  defaultMetrics?: boolean;
}

export interface Worker extends WorkerContext {
  app: Hono<WorkerEnv>;
  /** Stops accepting, lets every accepted request finish, then closes the engine. */
  shutdown(): Promise<void>;
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  if (opts.adapterDir !== undefined && !opts.adapterSource) {
    const st = await stat(opts.adapterDir).catch(() => undefined);
    if (!st?.isDirectory()) throw new Error(`--adapter-dir ${opts.adapterDir} is not a directory`);
  }
  const engine = await Engine.load(opts.model, {
    backend: opts.backend ?? 'auto',
    ...(opts.maxAdapters !== undefined ? { maxAdapters: opts.maxAdapters } : {}),
    ...(opts.maxLoraRank !== undefined ? { maxLoraRank: opts.maxLoraRank } : {}),
    ...(opts.kvCacheTokens !== undefined ? { kvCacheTokens: opts.kvCacheTokens } : {}),
    ...(opts.maxBatchTokens !== undefined ? { maxBatchTokens: opts.maxBatchTokens } : {}),
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
  });
  const tokenizer = engine.tokenizer;
  if (!tokenizer) {
    await engine.close();
    throw new EngineError('TOKENIZER', `${opts.model} has no tokenizer.json: the worker serves text and needs one`);
  }
  const metrics = new WorkerMetrics({ defaultMetrics: opts.defaultMetrics ?? false });
  const source = opts.adapterSource ?? (opts.adapterDir ? new LocalDirSource(opts.adapterDir) : new NoAdapters());
  let scheduler: Scheduler | undefined;
  const adapters = new AdapterManager(engine, source, { ...metrics.adapterHooks(), changed: () => scheduler?.wake() });
  scheduler = new Scheduler(engine, adapters, tokenizer, { maxBatchTokens: engine.options.maxBatchTokens, ...(opts.maxRunning !== undefined ? { maxRunning: opts.maxRunning } : {}) }, metrics.schedulerHooks());
  const sched = scheduler;
  metrics.bindGauges({
    scheduler: () => sched,
    kv: () => ({ free: engine.blocks.freeBlocks, total: engine.blocks.numBlocks }),
    residentAdapters: () => adapters.resident().length,
    slots: engine.options.maxAdapters,
  });
  const structured = new StructuredOutput({ modelDir: opts.model, vocab: engine.config.vocab, stopTokenIds: [...engine.eosTokenIds] });
  const ctx: WorkerContext = { engine, scheduler: sched, adapters, metrics, structured, modelId: opts.servedModelName ?? opts.model, modelPath: opts.model, startedAt: Math.floor(Date.now() / 1000) };
  let closing: Promise<void> | undefined;
  return {
    ...ctx,
    app: createApp(ctx),
    shutdown() {
      closing ??= (async () => {
        await sched.drain();
        sched.stop();
        await engine.close();
      })();
      return closing;
    },
  };
}
