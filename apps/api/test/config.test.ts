// Configuration from the environment: defaults, the embedded fallbacks, and clear errors.
import { describe, expect, it } from 'vitest';
import { ConfigError, configFromEnv } from '../src/config.js';

describe('configFromEnv', () => {
  it('defaults to the embedded stores', () => {
    const c = configFromEnv({ LORAPLEX_DATA_DIR: '/tmp/lpx' });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.s3).toBeUndefined();
    expect(c.dataDir).toBe('/tmp/lpx');
    expect(c.port).toBe(8080);
  });

  it('reads Postgres, S3 (path style by default with an endpoint), secrets and limits', () => {
    const c = configFromEnv({
      DATABASE_URL: 'postgres://u@db:5432/lpx',
      LORAPLEX_S3_ENDPOINT: 'http://minio:9000',
      LORAPLEX_S3_BUCKET: 'adapters',
      LORAPLEX_ADMIN_KEY: 'root',
      LORAPLEX_WORKER_SECRET: 'shh',
      PORT: '9000',
      LORAPLEX_TENANT_MAX_CONCURRENT: '4',
      LORAPLEX_MAX_UPLOAD_BYTES: '1000',
      LORAPLEX_UPLOAD_PART_SIZE: String(8 * 1024 * 1024),
    });
    expect(c.databaseUrl).toBe('postgres://u@db:5432/lpx');
    expect(c.s3).toEqual({
      endpoint: 'http://minio:9000',
      region: 'us-east-1',
      bucket: 'adapters',
      forcePathStyle: true,
    });
    expect(c).toMatchObject({
      adminKey: 'root',
      workerSecret: 'shh',
      port: 9000,
      limits: { maxConcurrent: 4 },
      upload: { maxUploadBytes: 1000 },
    });
    expect(configFromEnv({ LORAPLEX_S3_BUCKET: 'b' }).s3?.forcePathStyle).toBe(false);
  });

  it('reads the shutdown deadline, the worker call timeouts and the sweeper settings', () => {
    expect(configFromEnv({})).toMatchObject({
      shutdownTimeoutS: 25,
      workerTimeouts: { connectMs: 5000, firstByteMs: 300_000, idleMs: 60_000 },
      sweep: { orphanGraceS: 7200, intervalS: 600 },
    });
    const c = configFromEnv({
      LORAPLEX_SHUTDOWN_TIMEOUT_S: '5',
      LORAPLEX_WORKER_CONNECT_TIMEOUT_MS: '100',
      LORAPLEX_WORKER_FIRST_BYTE_TIMEOUT_MS: '200',
      LORAPLEX_WORKER_IDLE_TIMEOUT_MS: '300',
      LORAPLEX_ORPHAN_GRACE_S: '60',
      LORAPLEX_SWEEP_INTERVAL_S: '30',
    });
    expect(c).toMatchObject({
      shutdownTimeoutS: 5,
      workerTimeouts: { connectMs: 100, firstByteMs: 200, idleMs: 300 },
      sweep: { orphanGraceS: 60, intervalS: 30 },
    });
    expect(() => configFromEnv({ LORAPLEX_WORKER_IDLE_TIMEOUT_MS: '0' })).toThrow(
      /LORAPLEX_WORKER_IDLE_TIMEOUT_MS must be an integer >= 1/,
    );
  });

  it('names the variable in its errors', () => {
    expect(() => configFromEnv({ PORT: 'eighty' })).toThrow(/PORT must be an integer/);
    expect(() => configFromEnv({ DATABASE_URL: 'not a url' })).toThrow(/DATABASE_URL must be an absolute URL/);
    expect(() => configFromEnv({ LORAPLEX_S3_ENDPOINT: 'http://x' })).toThrow(/LORAPLEX_S3_BUCKET/);
    expect(() => configFromEnv({ LORAPLEX_S3_BUCKET: 'b', LORAPLEX_S3_FORCE_PATH_STYLE: 'maybe' })).toThrow(
      ConfigError,
    );
    expect(() => configFromEnv({ LORAPLEX_S3_BUCKET: 'b', LORAPLEX_UPLOAD_PART_SIZE: '1024' })).toThrow(/5 MiB/);
  });
});
