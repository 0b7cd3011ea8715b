// The API's view of the two modules written beside it (contract §5): adapter validation
// (src/adapter-validation/) and the worker side (src/worker-proxy/). Routes take these as parameters so
// the real modules are wired in by app composition; the shapes below are the contract's.
import type { Readable } from 'node:stream';
import type { StoredFile } from './db/schema.js';
import type { AdapterTarget } from './worker-proxy/descriptor.js';
import type { UsageEvent } from './worker-proxy/usage-recorder.js';
import type { ForwardRequest } from './worker-proxy/router.js';

// ---- src/adapter-validation/ ----

export type ArchiveFormat = 'zip' | 'tar' | 'tar.gz';

export interface ArchiveLimits {
  maxFiles: number;
  maxUncompressedBytes: number;
}

export interface ValidatedAdapter {
  rank: number;
  alpha: number;
  targetModules: string[];
  files: StoredFile[];
  sizeBytes: number;
  sha256: string;
}

export interface ValidateOptions {
  modelConfig: Record<string, unknown>;
  maxRank: number;
  maxBytes: number;
}

/** What the validation module throws for a bad upload (400, 413 or 422). */
export interface AdapterValidationErrorLike extends Error {
  code: string;
  status: number;
}

export interface AdapterValidation {
  /** Writes the archive's files into destDir (spooled, never fully buffered); returns their names. */
  extractArchive(input: Readable, format: ArchiveFormat, destDir: string, limits: ArchiveLimits): Promise<string[]>;
  validateAdapterFiles(dir: string, opts: ValidateOptions): Promise<ValidatedAdapter>;
}

export function isAdapterValidationError(e: unknown): e is AdapterValidationErrorLike {
  return (
    e instanceof Error &&
    e.name === 'AdapterValidationError' &&
    typeof (e as { status?: unknown }).status === 'number' &&
    typeof (e as { code?: unknown }).code === 'string'
  );
}

// ---- src/worker-proxy/ ----

// The routing module's own types are the ports' types.
export type { AdapterTarget, DescriptorStorage } from './worker-proxy/descriptor.js';
export type { UsageEvent } from './worker-proxy/usage-recorder.js';
export type { ForwardRequest, Usage } from './worker-proxy/router.js';
export interface BaseModelRecord {
  id: string;
  config: Record<string, unknown>;
  maxLoraRank: number;
}

export interface WorkerRegistryPort {
  /** Validates and records a worker heartbeat; throws an error with `status` 400 for a bad body. */
  heartbeat(body: unknown): Promise<unknown>;
  baseModels(): BaseModelRecord[] | Promise<BaseModelRecord[]>;
  /** Base models with a healthy worker now (GET /ready); a registry without it is not asked. */
  servedBaseModels?(): string[];
}

export interface RouterPort {
  forward(req: ForwardRequest): Promise<Response>;
}

export interface UsageRecorderPort {
  record(event: UsageEvent): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface LimitedPort {
  retryAfterS: number;
}

export interface TenantLimitsPort {
  /** The request's slot: call it when the request ends, with the tokens to charge when they are known. */
  acquire(tenantId: string): ((tokens?: number) => void) | LimitedPort;
  addTokens(tenantId: string, n: number): void;
}

/** Everything the routing module provides, as app composition passes it in. */
export interface RoutingPorts {
  registry: WorkerRegistryPort;
  router: RouterPort;
  usage: UsageRecorderPort;
  limits: TenantLimitsPort;
}
