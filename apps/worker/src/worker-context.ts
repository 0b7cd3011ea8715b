// What the HTTP routes see of a worker.
import type { Engine } from '@loraplex/engine';
import type { WorkerAdapterOrigin } from './adapters/request-source.js';
import type { HubSource } from './adapters/hub-source.js';
import type { AdapterManager } from './adapters/adapter-manager.js';
import type { DescriptorRegistry } from './adapters/descriptors.js';
import type { WorkerMetrics } from './metrics.js';
import type { CallerAuth } from './server/auth.js';
import type { Scheduler } from './scheduler/scheduler.js';
import type { StructuredOutput } from './structured/structured-output.js';
import type { Tracing } from '@loraplex/telemetry';
import type { NamedAdapters, UnsupportedAdapter } from './adapters/source.js';

export interface WorkerContext {
  engine: Engine;
  scheduler: Scheduler;
  /** JSON mode: grammar compilation (cached) and per-sequence grammar states. */
  structured: StructuredOutput;
  adapters: AdapterManager;
  /** Adapters registered by signed descriptors from the API. */
  descriptors: DescriptorRegistry;
  /** Shared secret of signed descriptors and heartbeats (--worker-secret / LORAPLEX_WORKER_SECRET). */
  workerSecret: string | undefined;
  /** Who may call this worker: the platform's signature and/or a standalone API key. */
  auth: CallerAuth;
  metrics: WorkerMetrics;
  /** OpenTelemetry traces (disabled unless OTEL_* asks for an exporter). */
  tracing: Tracing;
  /** The base model's id in `model` fields and /v1/models (--served-model-name, else the --model path as given). */
  modelId: string;
  /** The base model directory (reported as `root`). */
  modelPath: string;
  /** Unix seconds when the worker started (`created` of model cards). */
  startedAt: number;
  /** Where adapters come from (--adapter-dir = local, --adapter-s3 = s3): what LoRAX's adapter_source may name. */
  adapterOrigin: WorkerAdapterOrigin;
  /** Set when started with --allow-hub-adapters: adapter_source "hub" fetches from the Hugging Face Hub. */
  hub?: HubSource | undefined;
  /** Most sequences in the running batch (LoRAX /info's max_concurrent_requests). */
  maxRunning: number;
  /** --lora-modules and runtime-loaded adapters, in front of the listed ones. */
  namedAdapters?: NamedAdapters;
  /** vLLM's runtime LoRA updating (off in platform mode: with a worker secret). */
  runtimeLoraUpdating?: { allowed: boolean; adapterDir: string | undefined; anyPath: boolean };
  /** Entries of the adapter directory that are not served (NeMo adapters), with the reason. */
  unsupportedAdapters?: () => Promise<UnsupportedAdapter[]>;
}
