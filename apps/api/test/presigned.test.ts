// Presigned multipart uploads: real PUTs of the parts (to s3rver through presigned UploadPart URLs,
// or to the API's own part URLs on the embedded store), completion with validation, failures and
// aborts leaving no object behind, and tenant isolation of upload sessions.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adapters, uploadSessions } from '../src/db/schema.js';
import type { ObjectStore } from '../src/storage/object-store.js';
import { DirStore } from '../src/storage/dir-store.js';
import { S3Store } from '../src/storage/s3-store.js';
import { writeZip } from './helpers/archive.js';
import {
  BACKENDS,
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
import { startS3, type TestS3 } from './helpers/s3.js';

const PART = 16 * 1024;

async function fixture(name: string): Promise<Record<string, Buffer>> {
  const dir = join(FIXTURES, 'adapters', name);
  return {
    'adapter_config.json': await readFile(join(dir, 'adapter_config.json')),
    'adapter_model.safetensors': await readFile(join(dir, 'adapter_model.safetensors')),
  };
}

async function text(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

const combos = BACKENDS.flatMap((backend) => (['s3', 'dir'] as const).map((store) => ({ backend, store })));

describe.each(combos)('presigned uploads ($backend, $store store)', ({ backend, store: storeKind }) => {
  let tdb: TestDb;
  let s3: TestS3 | undefined;
  let store: ObjectStore;
  let cleanup: () => Promise<void> = async () => undefined;
  let t: TestApp;
  let a: { tenantId: string; key: string };
  let b: { tenantId: string; key: string };

  beforeAll(async () => {
    tdb = await openTestDb(backend);
    if (storeKind === 's3') {
      s3 = await startS3();
      store = S3Store.fromConfig(s3.config);
    } else {
      const d = await tempDirStore();
      store = d.store;
      cleanup = d.cleanup;
    }
    await seedBaseModel(tdb.db);
    t = makeTestApp(tdb.db, store, { upload: { maxUploadBytes: 10_000_000, maxFiles: 8, partSize: PART, ttlS: 600 } });
    a = await tenantWithKey(t.app, 'up-a');
    b = await tenantWithKey(t.app, 'up-b');
  });
  afterAll(async () => {
    await tdb?.close();
    await s3?.close();
    await cleanup();
  });

  /** PUTs a part: over the network to S3, through the app for the embedded store's URLs. */
  async function putPart(url: string, data: Buffer): Promise<Response> {
    const body = new Uint8Array(data);
    if (storeKind === 's3') return fetch(url, { method: 'PUT', body });
    return t.app.request(url, { method: 'PUT', body });
  }

  async function uploadAll(
    key: string,
    name: string,
    files: Record<string, Buffer>,
  ): Promise<{
    uploadId: string;
    complete: { files: Array<{ name: string; parts: Array<{ part_number: number; etag: string }> }> };
  }> {
    const start = await call(t.app, 'POST', '/v1/adapters/uploads', {
      key,
      json: { name, files: Object.entries(files).map(([n, d]) => ({ name: n, size: d.length })) },
    });
    expect(start.status, JSON.stringify(start.body)).toBe(201);
    expect(start.body.upload_id).toMatch(/^up_/);
    const complete = { files: [] as Array<{ name: string; parts: Array<{ part_number: number; etag: string }> }> };
    for (const f of start.body.files as Array<{
      name: string;
      part_size: number;
      parts: Array<{ part_number: number; url: string }>;
    }>) {
      const data = files[f.name]!;
      expect(f.parts.length).toBe(Math.max(1, Math.ceil(data.length / f.part_size)));
      const parts = [];
      for (const p of f.parts) {
        const res = await putPart(p.url, data.subarray((p.part_number - 1) * f.part_size, p.part_number * f.part_size));
        expect(res.status, await res.clone().text()).toBe(200);
        parts.push({ part_number: p.part_number, etag: res.headers.get('etag')! });
      }
      complete.files.push({ name: f.name, parts });
    }
    return { uploadId: start.body.upload_id, complete };
  }

  it('uploads a multi-part adapter, validates it and serves it by ref', async () => {
    const files = await fixture('lora_all_r8');
    expect(files['adapter_model.safetensors']!.length).toBeGreaterThan(3 * PART);
    const { uploadId, complete } = await uploadAll(a.key, 'big-one', files);
    const done = await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, { key: a.key, json: complete });
    expect(done.status, JSON.stringify(done.body)).toBe(201);
    expect(done.body).toMatchObject({ name: 'big-one', version: 1, status: 'ready', rank: 8 });
    const [row] = await tdb.db.select().from(adapters).where(eq(adapters.id, done.body.id));
    const stored = await text(await store.get(`${row!.storageKey}adapter_model.safetensors`));
    expect(stored.equals(files['adapter_model.safetensors']!)).toBe(true);
    expect((await tdb.db.select().from(uploadSessions)).filter((s) => s.id === uploadId)).toEqual([]);
    expect((await call(t.app, 'GET', '/v1/adapters/big-one@1', { key: a.key })).body.status).toBe('ready');
    // The session is gone: completing again is a 404.
    expect(
      (await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, { key: a.key, json: complete })).status,
    ).toBe(404);
  });

  it('an invalid adapter fails completion with 422, its objects removed and the reason recorded', async () => {
    const files = await fixture('lora_qv_r4');
    files['adapter_config.json'] = Buffer.from(
      JSON.stringify({ peft_type: 'LORA', r: 4096, lora_alpha: 8, target_modules: ['q_proj'] }),
    );
    const { uploadId, complete } = await uploadAll(a.key, 'too-wide', files);
    const done = await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, { key: a.key, json: complete });
    expect(done.status).toBe(422);
    expect(done.body.error).toMatchObject({ type: 'invalid_request_error', code: 'adapter_invalid' });
    const got = await call(t.app, 'GET', '/v1/adapters/too-wide@1', { key: a.key });
    expect(got.body).toMatchObject({ status: 'failed' });
    expect(got.body.failure_reason).toMatch(/rank 4096/);
    expect(await store.list(`adapters/${a.tenantId}/${got.body.id}/`)).toEqual([]);
    // Inference-style resolution never picks a failed adapter.
    expect(
      (await call(t.app, 'GET', '/v1/adapters', { key: a.key })).body.data.find(
        (x: { id: string }) => x.id === got.body.id,
      ).status,
    ).toBe('failed');
  });

  it('a wrong ETag or a missing part is a 400', async () => {
    const files = await fixture('lora_qv_r4');
    const { uploadId, complete } = await uploadAll(a.key, 'bad-etag', files);
    // s3rver takes any ETag on completion (S3 does not); the embedded store checks them.
    if (storeKind === 'dir') {
      complete.files[1]!.parts[0]!.etag = '"00000000000000000000000000000000"';
      const done = await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, {
        key: a.key,
        json: complete,
      });
      expect(done.status).toBe(400);
      expect(done.body.error.code).toBe('invalid_part');
      const row = (await call(t.app, 'GET', '/v1/adapters/bad-etag@1', { key: a.key })).body;
      expect(row.status).toBe('failed');
      expect(await store.list(`adapters/${a.tenantId}/${row.id}/`)).toEqual([]);
    }
    const missing = await uploadAll(a.key, 'missing-part', await fixture('lora_all_r8'));
    missing.complete.files[1]!.parts.pop();
    const r = await call(t.app, 'POST', `/v1/adapters/uploads/${missing.uploadId}/complete`, {
      key: a.key,
      json: missing.complete,
    });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_part');
  });

  it('abort removes the parts, the session and the adapter row', async () => {
    const files = await fixture('lora_qv_r4');
    const { uploadId } = await uploadAll(a.key, 'aborted', files);
    const [session] = await tdb.db.select().from(uploadSessions).where(eq(uploadSessions.id, uploadId));
    // Tenant B can neither complete nor abort A's upload.
    expect((await call(t.app, 'DELETE', `/v1/adapters/uploads/${uploadId}`, { key: b.key })).status).toBe(404);
    expect(
      (
        await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, {
          key: b.key,
          json: { files: [{ name: 'adapter_config.json', parts: [{ part_number: 1, etag: 'x' }] }] },
        })
      ).status,
    ).toBe(404);
    const del = await call(t.app, 'DELETE', `/v1/adapters/uploads/${uploadId}`, { key: a.key });
    expect(del.body).toEqual({ id: uploadId, object: 'upload', deleted: true });
    expect(await tdb.db.select().from(adapters).where(eq(adapters.id, session!.adapterId))).toEqual([]);
    expect(await store.list(`adapters/${a.tenantId}/${session!.adapterId}/`)).toEqual([]);
  });

  it('refuses bad declarations: unknown files, missing weights, oversize, unknown fields', async () => {
    const j = (json: unknown) => call(t.app, 'POST', '/v1/adapters/uploads', { key: a.key, json });
    expect(
      (
        await j({
          name: 'x',
          files: [
            { name: 'adapter_config.json', size: 10 },
            { name: 'evil.sh', size: 1 },
          ],
        })
      ).body.error.code,
    ).toBe('unexpected_file');
    expect((await j({ name: 'x', files: [{ name: 'adapter_config.json', size: 10 }] })).body.error.code).toBe(
      'missing_file',
    );
    expect(
      (
        await j({
          name: 'x',
          files: [
            { name: 'adapter_config.json', size: 10 },
            { name: 'adapter_model.safetensors', size: 20_000_000 },
          ],
        })
      ).status,
    ).toBe(413);
    expect((await j({ name: 'x', files: [{ name: 'adapter_config.json', size: 10 }], extra: 1 })).status).toBe(400);
  });

  it('one-request uploads store on this store; inference gets its storage; delete removes the objects', async () => {
    const files = await fixture('lora_qv_r4');
    const zip = writeZip(Object.entries(files).map(([name, data]) => ({ name, data })));
    const up = await call(t.app, 'POST', '/v1/adapters?name=one-shot', {
      key: a.key,
      body: zip,
      headers: { 'content-type': 'application/zip' },
    });
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    const prefix = `adapters/${a.tenantId}/${up.body.id}/`;
    expect(await store.list(prefix)).toEqual([`${prefix}adapter_config.json`, `${prefix}adapter_model.safetensors`]);
    expect(
      (await text(await store.get(`${prefix}adapter_model.safetensors`))).equals(files['adapter_model.safetensors']!),
    ).toBe(true);
    expect(
      (await call(t.app, 'POST', '/v1/completions', { key: a.key, json: { model: 'one-shot', prompt: 'x' } })).status,
    ).toBe(200);
    const storage = t.routing.forwarded.at(-1)!.adapter!.storage;
    expect(storage).toEqual(
      storeKind === 's3'
        ? { kind: 's3', bucket: 'loraplex', prefix }
        : { kind: 'dir', path: join((store as DirStore).root, prefix.slice(0, -1)) },
    );
    expect((await call(t.app, 'DELETE', '/v1/adapters/one-shot', { key: a.key })).status).toBe(200);
    expect(await store.list(prefix)).toEqual([]);
  });

  it('expired uploads are refused and swept away with their parts', async () => {
    const files = await fixture('lora_qv_r4');
    const { uploadId, complete } = await uploadAll(a.key, 'expiring', files);
    const [session] = await tdb.db.select().from(uploadSessions).where(eq(uploadSessions.id, uploadId));
    await tdb.db
      .update(uploadSessions)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(uploadSessions.id, uploadId));
    const second = await uploadAll(a.key, 'expiring-2', files);
    await tdb.db
      .update(uploadSessions)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(uploadSessions.id, second.uploadId));
    expect(
      (await call(t.app, 'POST', `/v1/adapters/uploads/${uploadId}/complete`, { key: a.key, json: complete })).status,
    ).toBe(404);
    expect(await store.list(`adapters/${a.tenantId}/${session!.adapterId}/`)).toEqual([]);
    if (store instanceof DirStore) {
      // The embedded store keeps parts under .uploads/<upload id> until completion: gone.
      for (const f of session!.files) await expect(stat(join(store.root, '.uploads', f.uploadId))).rejects.toThrow();
    }
    expect(await t.services.uploads.sweepExpired()).toBe(1);
    expect(await tdb.db.select().from(uploadSessions).where(eq(uploadSessions.id, second.uploadId))).toEqual([]);
    expect((await call(t.app, 'GET', '/v1/adapters/expiring-2@1', { key: a.key })).status).toBe(404);
  });

  if (storeKind === 'dir') {
    it('embedded part URLs are signed and size-limited', async () => {
      const start = await call(t.app, 'POST', '/v1/adapters/uploads', {
        key: a.key,
        json: {
          name: 'signed',
          files: [
            { name: 'adapter_config.json', size: 10 },
            { name: 'adapter_model.safetensors', size: 10 },
          ],
        },
      });
      const url = start.body.files[0].parts[0].url as string;
      expect(url).toMatch(/^http:\/\/localhost\/v1\/uploads\/parts\//);
      const tampered = url.replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
      expect((await t.app.request(tampered, { method: 'PUT', body: 'x' })).status).toBe(403);
      expect((await t.app.request(url, { method: 'PUT', body: new Uint8Array(PART + 1) })).status).toBe(413);
      expect((await t.app.request(url, { method: 'PUT', body: 'ok' })).status).toBe(200);
    });
  }
});
