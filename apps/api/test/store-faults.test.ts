// The object store failing (issue 11): S3 (s3rver behind a proxy that can cut the network) cut
// in the middle of an upload gives 503 object_store_unavailable (not "database unreachable"), and
// whatever the failed upload left in the bucket is removed by the orphan sweeper once it is older
// than the grace period (time driven by an injected clock), while committed adapters stay.
// Deleting an adapter with an open presigned upload aborts that multipart upload: its parts are
// gone (embedded store: from disk; S3: AbortMultipartUpload sent), and a store failure makes the
// delete fail with 503 rather than forget the parts.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { uploadSessions } from '../src/db/schema.js';
import { S3Store } from '../src/storage/s3-store.js';
import { OrphanSweeper } from '../src/uploads/sweeper.js';
import { writeZip } from './helpers/archive.js';
import { startCutProxy, type CutProxy } from './helpers/cut-proxy.js';
import { startS3, type TestS3 } from './helpers/s3.js';
import {
  call,
  FIXTURES,
  makeTestApp,
  openTestDb,
  seedBaseModel,
  tempDirStore,
  tenantWithKey,
  type TestApp,
  type TestDb,
} from './helpers/setup.js';

const GRACE_MS = 60_000;

async function adapterZip(name: string): Promise<Buffer> {
  const dir = join(FIXTURES, 'adapters', name);
  return writeZip(
    await Promise.all(
      ['adapter_config.json', 'adapter_model.safetensors'].map(async (n) => ({
        name: n,
        data: await readFile(join(dir, n)),
      })),
    ),
  );
}

let tdb: TestDb;
beforeAll(async () => {
  tdb = await openTestDb('pglite');
  await seedBaseModel(tdb.db);
});
afterAll(async () => {
  await tdb?.close();
});

describe('S3 cut during uploads', () => {
  let s3: TestS3;
  let proxy: CutProxy;
  let bucket: S3Store;
  let t: TestApp;
  let a: { tenantId: string; key: string };
  let clock = 0;
  let sweeper: OrphanSweeper;

  beforeAll(async () => {
    s3 = await startS3();
    proxy = await startCutProxy(Number(new URL(s3.config.endpoint!).port));
    bucket = S3Store.fromConfig(s3.config); // straight to s3rver: what the bucket really holds
    const store = S3Store.fromConfig({ ...s3.config, endpoint: proxy.url });
    t = makeTestApp(tdb.db, store, {
      upload: { maxUploadBytes: 10_000_000, maxFiles: 8, partSize: 5 * 1024 * 1024, ttlS: 600 },
    });
    a = await tenantWithKey(t.app, 's3-cut');
    sweeper = new OrphanSweeper({
      db: tdb.db,
      store,
      uploads: t.services.uploads,
      graceMs: GRACE_MS,
      now: () => Date.now() + clock,
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await s3?.close();
  });
  beforeEach(() => proxy.restore());

  it('answers 503 object_store_unavailable; the sweeper removes what the failed upload left, after the grace period', async () => {
    const kept = await call(t.app, 'POST', '/v1/adapters?name=kept', {
      key: a.key,
      body: await adapterZip('lora_qv_r4'),
      headers: { 'content-type': 'application/zip' },
    });
    expect(kept.status).toBe(201);
    const keptFiles = await bucket.list('adapters/');

    // The network to S3 breaks as the second file of the upload is sent: the first is stored, and
    // the cleanup after the failure cannot reach S3 either.
    proxy.cutOn(/^PUT \S*adapter_model\.safetensors/);
    const r = await call(t.app, 'POST', '/v1/adapters?name=cut', {
      key: a.key,
      body: await adapterZip('lora_all_r8'),
      headers: { 'content-type': 'application/zip' },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(503);
    expect(r.body.error.code).toBe('object_store_unavailable');
    expect(r.body.error.message).toMatch(/object store/);
    expect(r.headers.get('retry-after')).toBe('2');
    const left = (await bucket.list('adapters/')).filter((k) => !keptFiles.includes(k));
    expect(left).toEqual([expect.stringMatching(/adapter_config\.json$/)]);
    expect((await call(t.app, 'GET', '/v1/adapters/cut', { key: a.key })).status).toBe(404);

    // While S3 is still down a sweep fails (and is retried later); once it is back, nothing young is touched.
    await expect(sweeper.sweep()).rejects.toMatchObject({ code: 'object_store_unavailable' });
    proxy.restore();
    expect((await sweeper.sweep()).removed).toEqual([]);
    clock = GRACE_MS + 1000;
    const swept = await sweeper.sweep();
    expect(swept.removed).toEqual([left[0]!.replace(/adapter_config\.json$/, '')]);
    expect(await bucket.list('adapters/')).toEqual(keptFiles);
    expect((await call(t.app, 'GET', '/v1/adapters/kept', { key: a.key })).body.status).toBe('ready');
  });

  it('deleting an adapter aborts its open presigned upload; with S3 down the delete fails and keeps the adapter', async () => {
    const start = await call(t.app, 'POST', '/v1/adapters/uploads', {
      key: a.key,
      json: {
        name: 'open',
        files: [
          { name: 'adapter_config.json', size: 100 },
          { name: 'adapter_model.safetensors', size: 1000 },
        ],
      },
    });
    expect(start.status).toBe(201);
    const part = (start.body.files as Array<{ name: string; parts: Array<{ url: string }> }>).find(
      (f) => f.name === 'adapter_model.safetensors',
    )!.parts[0]!.url;
    expect((await fetch(part, { method: 'PUT', body: new Uint8Array(1000) })).status).toBe(200);

    proxy.cut();
    const failed = await call(t.app, 'DELETE', '/v1/adapters/open', { key: a.key });
    expect(failed.status).toBe(503);
    expect(failed.body.error.code).toBe('object_store_unavailable');
    expect((await call(t.app, 'GET', '/v1/adapters/open', { key: a.key })).body.status).toBe('uploading');

    proxy.restore();
    const seen = proxy.requests.length;
    expect((await call(t.app, 'DELETE', '/v1/adapters/open', { key: a.key })).status).toBe(200);
    const aborts = proxy.requests.slice(seen).filter((l) => /^DELETE \S*uploadId=/.test(l));
    expect(aborts.map((l) => /\/(adapter_[a-z_]+\.[a-z]+)\?/.exec(l)?.[1]).sort()).toEqual([
      'adapter_config.json',
      'adapter_model.safetensors',
    ]);
    expect(await tdb.db.select().from(uploadSessions)).toEqual([]);
  });
});

describe('embedded store', () => {
  it('deleting an adapter with an open presigned upload removes its uploaded parts', async () => {
    const d = await tempDirStore();
    try {
      const t = makeTestApp(tdb.db, d.store, {
        upload: { maxUploadBytes: 10_000_000, maxFiles: 8, partSize: 1024, ttlS: 600 },
      });
      const a = await tenantWithKey(t.app, 'dir-open');
      const start = await call(t.app, 'POST', '/v1/adapters/uploads', {
        key: a.key,
        json: {
          name: 'open',
          files: [
            { name: 'adapter_config.json', size: 100 },
            { name: 'adapter_model.safetensors', size: 3000 },
          ],
        },
      });
      expect(start.status).toBe(201);
      for (const f of start.body.files as Array<{ parts: Array<{ url: string }> }>) {
        const res = await t.app.request(f.parts[0]!.url, { method: 'PUT', body: new Uint8Array(100) });
        expect(res.status).toBe(200);
      }
      const uploads = join(d.dir, '.uploads');
      expect((await readdir(uploads)).length).toBe(2);
      expect((await call(t.app, 'DELETE', '/v1/adapters/open', { key: a.key })).status).toBe(200);
      expect(await readdir(uploads)).toEqual([]);
      expect(await tdb.db.select().from(uploadSessions)).toEqual([]);
    } finally {
      await d.cleanup();
    }
  });
});
