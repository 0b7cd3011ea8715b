// Builds a worker: engine + adapter manager + scheduler + metrics + Hono app. The listener lives in
// serve.ts / cli.ts, so tests can drive `worker.app.request()` without a socket.
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, EngineError } from '@loraplex/engine';
import type { Hono } from 'hono';
import { AdapterManager } from './adapters/adapter-manager.js';
import { RescanningSource } from './adapters/rescanning-source.js';
import { DescriptorRegistry } from './adapters/descriptors.js';
import { DiskCache } from './adapters/disk-cache.js';
import { Heartbeat } from './adapters/heartbeat.js';
import { HubSource, WithHub } from './adapters/hub-source.js';
import { makeS3Client, s3SettingsFromEnv, S3Source } from './adapters/s3-source.js';
import {
  LocalDirSource,
  localAdapterAt,
  NamedAdapters,
  NoAdapters,
  unsupportedAdapters,
  type AdapterSource,
} from './adapters/source.js';
import { AdapterTiers } from './adapters/tiers.js';
import { combineHooks, WorkerMetrics } from './metrics.js';
import { ReplayCache } from '@loraplex/protocol';
import { Scheduler } from './scheduler/scheduler.js';
import { SequenceTracing } from './sequence-tracing.js';
import { StructuredOutput } from './structured/structured-output.js';
import { createApp } from './server/app.js';
import type { WorkerEnv } from './server/types.js';
import { Tracing } from '@loraplex/telemetry';
import type { WorkerContext } from './worker-context.js';

export interface WorkerOptions {
  /** Hugging Face model directory. */
  model: string;
  /** The base model's id in `model` fields; default the model path as given (as vLLM does). */
  servedModelName?: string;
  /** Directory of PEFT adapters, one subdirectory each, named after it. */
  adapterDir?: string;
  /** Adapters in S3: s3://bucket/prefix/ (settings from LORAPLEX_S3_* and the AWS SDK chain). */
  adapterS3?: string;
  /** Seconds between re-scans of the adapter directory / S3 prefix. Default 10; 0 = scan once. */
  adapterRefreshInterval?: number;
  /**
   * LoRAX adapter_source "hub": fetch the adapter_id repository from the Hugging Face Hub when a
   * request asks for it (off by default: a worker downloads nothing it was not told to).
   */
  allowHubAdapters?: boolean;
  /** The Hub's address for allowHubAdapters. Default HF_ENDPOINT, else https://huggingface.co (HF_TOKEN is sent when set). */
  hubEndpoint?: string;
  /** Adapters served under a name of the operator's choice (vLLM's --lora-modules); any local path. */
  loraModules?: Array<{ name: string; path: string }>;
  /**
   * vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING: POST /v1/load_lora_adapter and /v1/unload_lora_adapter on a
   * standalone worker (never with a worker secret: the platform registers adapters by signed descriptors).
   * A loaded lora_path must lie inside adapterDir unless allowLoraPathsOutsideAdapterDir.
   */
  allowRuntimeLoraUpdating?: boolean;
  allowLoraPathsOutsideAdapterDir?: boolean;
  /** Another adapter source (tests); overrides adapterDir and adapterS3. */
  adapterSource?: AdapterSource;
  /** Disk tier for remote adapters. Default <tmpdir>/loraplex-adapter-cache. */
  adapterCacheDir?: string;
  /** Bytes the disk tier may hold. Default 20 GiB. */
  diskCacheBytes?: number;
  /** Adapters held in host memory. Default 64. */
  hostCacheAdapters?: number;
  /** Bytes of adapter files held in host memory. Default 8 GiB. */
  hostCacheBytes?: number;
  backend?: 'cpu' | 'cuda' | 'auto';
  maxAdapters?: number;
  maxLoraRank?: number;
  kvCacheTokens?: number;
  maxBatchTokens?: number;
  threads?: number;
  /** Shared secret of signed adapter descriptors and heartbeats. Default LORAPLEX_WORKER_SECRET. */
  workerSecret?: string;
  /**
   * A standalone worker's API key: callers send `Authorization: Bearer <key>` (vLLM's --api-key).
   * Default LORAPLEX_API_KEY, then VLLM_API_KEY. The platform's signed requests are accepted as well.
   */
  apiKey?: string;
  /** The API to send heartbeats to (contract §2); none when unset. */
  apiUrl?: string;
  /** How the API reaches this worker. Default http://<host>:<port> (set by serve). */
  advertiseUrl?: string;
  workerId?: string;
  /** Seconds between heartbeats. Default 2. */
  heartbeatInterval?: number;
  /** Most sequences in the running batch. Default 256. */
  maxRunning?: number;
  /** Node process metrics in /metrics (off in tests with several workers). */
  defaultMetrics?: boolean;
  /** OpenTelemetry traces; default from the OTEL_* variables (off unless they name an exporter). */
  tracing?: Tracing;
}

export interface Worker extends WorkerContext {
  app: Hono<WorkerEnv>;
  /** Registration with the API (when apiUrl is set); started by serve once listening. */
  heartbeat: Heartbeat | undefined;
  /** Stops accepting, lets every accepted request finish, then closes the engine. */
  shutdown(): Promise<void>;
}

/** The worker secret and API key from the options, else the environment (empty strings are unset). */
export function callerCredentials(opts: Pick<WorkerOptions, 'workerSecret' | 'apiKey'>): {
  workerSecret: string | undefined;
  apiKey: string | undefined;
} {
  const env = process.env;
  return {
    workerSecret: opts.workerSecret || env.LORAPLEX_WORKER_SECRET || undefined,
    apiKey: opts.apiKey || env.LORAPLEX_API_KEY || env.VLLM_API_KEY || undefined,
  };
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  const { workerSecret, apiKey } = callerCredentials(opts);
  if (opts.adapterDir !== undefined && opts.adapterS3 !== undefined)
    throw new Error('give --adapter-dir or --adapter-s3, not both');
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
  const metrics = new WorkerMetrics({
    defaultMetrics: opts.defaultMetrics ?? false,
    modelName: opts.servedModelName ?? opts.model,
  });
  const inner =
    opts.adapterSource ??
    (opts.adapterDir
      ? new LocalDirSource(opts.adapterDir)
      : opts.adapterS3
        ? new S3Source(makeS3Client(s3SettingsFromEnv()), opts.adapterS3)
        : new NoAdapters());
  const listed = new RescanningSource(inner, (opts.adapterRefreshInterval ?? 10) * 1000);
  const hub = opts.allowHubAdapters
    ? new HubSource(
        opts.hubEndpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co',
        process.env.HF_TOKEN || undefined,
      )
    : undefined;
  await listed.start();
  const named = new NamedAdapters(listed);
  for (const m of opts.loraModules ?? []) {
    const at = await localAdapterAt(m.name, m.path);
    if (!at) {
      listed.stop();
      await engine.close();
      throw new Error(`--lora-modules ${m.name}=${m.path}: no adapter_config.json in ${m.path}`);
    }
    named.add(at);
  }
  if (opts.allowRuntimeLoraUpdating && workerSecret)
    console.error('[worker] runtime LoRA updating stays off: the worker has a worker secret (platform mode)');
  const adapterDir = opts.adapterSource ? undefined : opts.adapterDir;
  const unsupported = adapterDir ? () => unsupportedAdapters(adapterDir) : () => Promise.resolve([]);
  for (const u of await unsupported())
    console.error(`[worker] adapter ${u.name} (${u.path}) is not served: ${u.reason}`);
  let s3: ReturnType<typeof makeS3Client> | undefined;
  const descriptors = new DescriptorRegistry(
    () => (s3 ??= makeS3Client(s3SettingsFromEnv())),
    hub ? new WithHub(hub, named) : named,
  );
  const hostAdapters = opts.hostCacheAdapters ?? 64;
  const tiers = new AdapterTiers(
    descriptors,
    new DiskCache(
      opts.adapterCacheDir ?? join(tmpdir(), 'loraplex-adapter-cache'),
      opts.diskCacheBytes ?? 20 * 2 ** 30,
    ),
    { maxAdapters: hostAdapters, maxBytes: opts.hostCacheBytes ?? 8 * 2 ** 30 },
  );
  const tracing = opts.tracing ?? Tracing.fromEnv('loraplex-worker');
  // Sequence spans only when tracing is on: no hook at all otherwise.
  const seqTracing = tracing.enabled ? new SequenceTracing() : undefined;
  let scheduler: Scheduler | undefined;
  const adapterHooks = seqTracing
    ? combineHooks(metrics.adapterHooks(), seqTracing.adapterHooks())
    : metrics.adapterHooks();
  const adapters = new AdapterManager(engine, tiers, { ...adapterHooks, changed: () => scheduler?.wake() });
  const schedulerHooks = seqTracing
    ? combineHooks(metrics.schedulerHooks(), seqTracing.schedulerHooks())
    : metrics.schedulerHooks();
  scheduler = new Scheduler(
    engine.scheduler,
    adapters,
    tokenizer,
    opts.maxRunning !== undefined ? { maxRunning: opts.maxRunning } : {},
    schedulerHooks,
  );
  const sched = scheduler;
  metrics.bindGauges({
    scheduler: () => sched,
    kv: () => {
      const kv = engine.kvUsage();
      return { free: kv.freeBlocks, total: kv.totalBlocks };
    },
    residentAdapters: () => adapters.resident().length,
    slots: engine.options.maxAdapters,
    tiers: () => tiers,
  });
  const structured = new StructuredOutput({
    modelDir: opts.model,
    vocab: engine.config.vocab,
    stopTokenIds: [...engine.eosTokenIds],
  });
  const ctx: WorkerContext = {
    engine,
    scheduler: sched,
    adapters,
    descriptors,
    workerSecret,
    auth: { secret: workerSecret, apiKey, replays: new ReplayCache() },
    metrics,
    tracing,
    structured,
    modelId: opts.servedModelName ?? opts.model,
    modelPath: opts.model,
    startedAt: Math.floor(Date.now() / 1000),
    adapterOrigin: opts.adapterSource ? 'other' : opts.adapterDir ? 'local' : opts.adapterS3 ? 's3' : 'none',
    hub,
    maxRunning: opts.maxRunning ?? 256,
    namedAdapters: named,
    runtimeLoraUpdating: {
      allowed: (opts.allowRuntimeLoraUpdating ?? false) && !workerSecret,
      adapterDir,
      anyPath: opts.allowLoraPathsOutsideAdapterDir ?? false,
    },
    unsupportedAdapters: unsupported,
  };
  let heartbeat: Heartbeat | undefined;
  if (opts.apiUrl) {
    if (!workerSecret)
      throw new Error(
        '--api-url needs --worker-secret (or LORAPLEX_WORKER_SECRET): heartbeats are authenticated with it',
      );
    heartbeat = new Heartbeat(ctx, {
      apiUrl: opts.apiUrl,
      ...(opts.advertiseUrl ? { advertiseUrl: opts.advertiseUrl } : {}),
      workerId: opts.workerId ?? `wk_${randomBytes(8).toString('hex')}`,
      intervalS: opts.heartbeatInterval ?? 2,
      secret: workerSecret,
      maxLoraRank: engine.options.maxLoraRank,
      hostAdapters,
      modelConfig: JSON.parse(await readFile(join(opts.model, 'config.json'), 'utf8')) as Record<string, unknown>,
    });
  }
  let closing: Promise<void> | undefined;
  return {
    ...ctx,
    app: createApp(ctx),
    heartbeat,
    shutdown() {
      closing ??= (async () => {
        await heartbeat?.stop();
        await sched.drain();
        sched.stop();
        listed.stop();
        await structured.close(); // the grammar engine thread
        await engine.close();
        if (!opts.tracing) await tracing.shutdown(); // exports what is left; a tracing passed in is its owner's
      })();
      return closing;
    },
  };
}
