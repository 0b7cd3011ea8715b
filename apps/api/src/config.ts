// The API's configuration, from the environment (loraplex-api serve) or from startStack options.
// Every setting is read here, with a clear error naming the variable when a value is wrong.
import { resolve } from 'node:path';

export interface S3Config {
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle: boolean;
}

export interface LimitsConfig {
  /** Requests a tenant may have in flight (0 = unlimited). */
  maxConcurrent: number;
  /** Prompt + completion tokens per tenant per minute (0 = unlimited). */
  tokensPerMinute: number;
}

export interface UploadConfig {
  /** Largest upload body (archive, form or one presigned file), and largest adapter, in bytes. */
  maxUploadBytes: number;
  /** Most files an archive may hold. */
  maxFiles: number;
  /** Part size of presigned multipart uploads (S3 needs >= 5 MiB except the last part). */
  partSize: number;
  /** How long presigned part URLs and upload sessions live. */
  ttlS: number;
}

export interface WorkerTimeoutsConfig {
  /** Opening a connection to a worker. */
  connectMs: number;
  /** From the request sent to the worker's response head (bounds a non-streamed generation). */
  firstByteMs: number;
  /** Longest silence of a worker's answer while the API waits for the next bytes. */
  idleMs: number;
}

export interface SweepConfig {
  /** Objects under an adapter prefix with no committed (ready) adapter are removed once this old. */
  orphanGraceS: number;
  /** How often the sweeper runs (it also runs at start). */
  intervalS: number;
}

export interface ApiConfig {
  /** Postgres URL; absent: embedded PGlite in <dataDir>/pg. */
  databaseUrl?: string;
  dataDir: string;
  /** Absent: adapter files in <dataDir>/adapters. */
  s3?: S3Config;
  /** The platform admin key (any string); absent: only keys created with `keys create --admin`. */
  adminKey?: string;
  /** Shared with the workers: signs adapter descriptors, authenticates heartbeats. */
  workerSecret?: string;
  port: number;
  host: string;
  /** The URL clients reach this API at (for presigned part URLs on the embedded store); default: the request's origin. */
  publicUrl?: string;
  limits: LimitsConfig;
  upload: UploadConfig;
  descriptorTtlS: number;
  /** On SIGTERM: how long in-flight requests may take before their connections are cut. */
  shutdownTimeoutS: number;
  workerTimeouts: WorkerTimeoutsConfig;
  sweep: SweepConfig;
  /** Tenants with their own series in /metrics; later ones count as 'other' (default 100). */
  metricsMaxTenants?: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function intVar(env: Env, name: string, dflt: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min)
    throw new ConfigError(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function boolVar(env: Env, name: string, dflt: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  if (/^(1|true|yes)$/i.test(raw)) return true;
  if (/^(0|false|no)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

function urlVar(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  try {
    const u = new URL(raw);
    if (!/^(https?|postgres(ql)?):$/.test(u.protocol)) throw new Error('protocol');
  } catch {
    throw new ConfigError(`${name} must be an absolute URL, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

export const MIB = 1024 * 1024;

/** Defaults for everything but storage and secrets. */
export function defaultConfig(over: Partial<ApiConfig> = {}): ApiConfig {
  return {
    dataDir: resolve('loraplex-data'),
    port: 8080,
    host: '127.0.0.1',
    limits: { maxConcurrent: 0, tokensPerMinute: 0 },
    upload: { maxUploadBytes: 2048 * MIB, maxFiles: 16, partSize: 16 * MIB, ttlS: 3600 },
    descriptorTtlS: 300,
    shutdownTimeoutS: 25,
    workerTimeouts: { connectMs: 5_000, firstByteMs: 300_000, idleMs: 60_000 },
    sweep: { orphanGraceS: 7200, intervalS: 600 },
    ...over,
  };
}

export function configFromEnv(env: Env = process.env): ApiConfig {
  const s3Bucket = env.LORAPLEX_S3_BUCKET;
  const s3Endpoint = urlVar(env, 'LORAPLEX_S3_ENDPOINT');
  if (s3Endpoint && !s3Bucket) throw new ConfigError('LORAPLEX_S3_ENDPOINT is set but LORAPLEX_S3_BUCKET is not');
  const s3: S3Config | undefined = s3Bucket
    ? {
        ...(s3Endpoint ? { endpoint: s3Endpoint } : {}),
        region: env.LORAPLEX_S3_REGION || 'us-east-1',
        bucket: s3Bucket,
        forcePathStyle: boolVar(env, 'LORAPLEX_S3_FORCE_PATH_STYLE', s3Endpoint !== undefined),
      }
    : undefined;
  const databaseUrl = urlVar(env, 'DATABASE_URL');
  const publicUrl = urlVar(env, 'LORAPLEX_PUBLIC_URL');
  const partSize = intVar(env, 'LORAPLEX_UPLOAD_PART_SIZE', 16 * MIB, 1);
  if (s3 && partSize < 5 * MIB)
    throw new ConfigError(`LORAPLEX_UPLOAD_PART_SIZE must be >= ${5 * MIB} (5 MiB) with S3, got ${partSize}`);
  return defaultConfig({
    ...(databaseUrl ? { databaseUrl } : {}),
    dataDir: resolve(env.LORAPLEX_DATA_DIR || 'loraplex-data'),
    ...(s3 ? { s3 } : {}),
    ...(env.LORAPLEX_ADMIN_KEY ? { adminKey: env.LORAPLEX_ADMIN_KEY } : {}),
    ...(env.LORAPLEX_WORKER_SECRET ? { workerSecret: env.LORAPLEX_WORKER_SECRET } : {}),
    ...(publicUrl ? { publicUrl: publicUrl.replace(/\/+$/, '') } : {}),
    port: intVar(env, 'PORT', 8080, 0),
    host: env.HOST || '127.0.0.1',
    limits: {
      maxConcurrent: intVar(env, 'LORAPLEX_TENANT_MAX_CONCURRENT', 0, 0),
      tokensPerMinute: intVar(env, 'LORAPLEX_TENANT_TOKENS_PER_MINUTE', 0, 0),
    },
    upload: {
      maxUploadBytes: intVar(env, 'LORAPLEX_MAX_UPLOAD_BYTES', 2048 * MIB, 1),
      maxFiles: intVar(env, 'LORAPLEX_MAX_ARCHIVE_FILES', 16, 1),
      partSize,
      ttlS: intVar(env, 'LORAPLEX_UPLOAD_TTL_S', 3600, 60),
    },
    descriptorTtlS: intVar(env, 'LORAPLEX_DESCRIPTOR_TTL_S', 300, 10),
    shutdownTimeoutS: intVar(env, 'LORAPLEX_SHUTDOWN_TIMEOUT_S', 25, 0),
    workerTimeouts: {
      connectMs: intVar(env, 'LORAPLEX_WORKER_CONNECT_TIMEOUT_MS', 5_000, 1),
      firstByteMs: intVar(env, 'LORAPLEX_WORKER_FIRST_BYTE_TIMEOUT_MS', 300_000, 1),
      idleMs: intVar(env, 'LORAPLEX_WORKER_IDLE_TIMEOUT_MS', 60_000, 1),
    },
    sweep: {
      orphanGraceS: intVar(env, 'LORAPLEX_ORPHAN_GRACE_S', 7200, 0),
      intervalS: intVar(env, 'LORAPLEX_SWEEP_INTERVAL_S', 600, 1),
    },
    metricsMaxTenants: intVar(env, 'LORAPLEX_METRICS_MAX_TENANTS', 100, 0),
  });
}
