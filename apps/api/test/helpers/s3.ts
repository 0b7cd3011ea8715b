// A real S3 server for the tests: s3rver on a random port in a temp directory, with one bucket.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import type { S3Config } from '../../src/config.js';

export interface TestS3 {
  config: S3Config;
  close(): Promise<void>;
}

export async function startS3(bucket = 'loraplex'): Promise<TestS3> {
  const dir = await mkdtemp(join(tmpdir(), 'lpx-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory: dir,
    silent: true,
    configureBuckets: [{ name: bucket }],
  });
  const addr = await server.run();
  // s3rver accepts its well-known credentials; the SDK reads them from the environment, as in production.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  return {
    config: { endpoint: `http://127.0.0.1:${addr.port}`, region: 'us-east-1', bucket, forcePathStyle: true },
    close: async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
