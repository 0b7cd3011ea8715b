// Adapter uploads in one streamed request (zip, tar.gz, multipart form) on the embedded store,
// versioning, get/list/delete, tenant isolation, and bad uploads leaving nothing behind.
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adapters } from '../src/db/schema.js';
import { writeTarGz, writeZip, type ArchiveEntry } from './helpers/archive.js';
import {
  BACKENDS,
  BASE_MODEL,
  call,
  FIXTURE_ADAPTERS,
  FIXTURES,
  makeTestApp,
  openTestDb,
  seedBaseModel,
  tempDirStore,
  tenantWithKey,
  type TestApp,
  type TestDb,
} from './helpers/setup.js';

async function fixtureFiles(name: string): Promise<ArchiveEntry[]> {
  const dir = join(FIXTURES, 'adapters', name);
  return Promise.all(
    ['adapter_config.json', 'adapter_model.safetensors'].map(async (f) => ({
      name: f,
      data: await readFile(join(dir, f)),
    })),
  );
}

function form(fields: Record<string, string>, files: ArchiveEntry[]): FormData {
  const fd = new FormData();
  for (const [k, v] of Object.entries(fields)) fd.append(k, v);
  for (const f of files) fd.append(f.name, new Blob([new Uint8Array(f.data)]), f.name);
  return fd;
}

/** Every file the embedded store holds (parts of uploads included). */
async function storedFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(join(d, e.name));
    }
  };
  await walk(dir);
  return out;
}

describe.each(BACKENDS)('adapter uploads and routes (%s)', (backend) => {
  let tdb: TestDb;
  let t: TestApp;
  let store: Awaited<ReturnType<typeof tempDirStore>>;
  let a: { tenantId: string; key: string };
  let b: { tenantId: string; key: string };

  beforeAll(async () => {
    tdb = await openTestDb(backend);
    store = await tempDirStore();
    await seedBaseModel(tdb.db);
    t = makeTestApp(tdb.db, store.store, {
      upload: { maxUploadBytes: 400_000, maxFiles: 8, partSize: 64 * 1024, ttlS: 600 },
    });
    a = await tenantWithKey(t.app, 'tenant-a');
    b = await tenantWithKey(t.app, 'tenant-b');
  });
  afterAll(async () => {
    await tdb?.close();
    await store?.cleanup();
  });

  const kinds = [
    {
      kind: 'zip',
      make: async (n: string) => ({
        body: writeZip(await fixtureFiles(n), { deflate: true }),
        type: 'application/zip',
      }),
    },
    {
      kind: 'tar.gz',
      make: async (n: string) => ({ body: writeTarGz(await fixtureFiles(n), { dir: n }), type: 'application/gzip' }),
    },
  ] as const;

  for (const fx of FIXTURE_ADAPTERS) {
    for (const k of kinds) {
      it(`uploads ${fx} as ${k.kind}`, async () => {
        const { body, type } = await k.make(fx);
        const name = `${fx}-${k.kind.replace('.', '')}`;
        const r = await call(t.app, 'POST', `/v1/adapters?name=${name}`, {
          key: a.key,
          body,
          headers: { 'content-type': type },
        });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        const cfg = JSON.parse(await readFile(join(FIXTURES, 'adapters', fx, 'adapter_config.json'), 'utf8'));
        expect(r.body).toMatchObject({
          object: 'adapter',
          name,
          version: 1,
          ref: `${name}@1`,
          base_model: BASE_MODEL,
          status: 'ready',
          rank: cfg.r,
          alpha: cfg.lora_alpha,
          failure_reason: null,
        });
        expect(r.body.id).toMatch(/^ad_[a-z0-9]{16,40}$/);
        expect(r.body.sha256).toMatch(/^[0-9a-f]{64}$/);
        // The files are in the store, byte for byte.
        const weights = await readFile(join(store.dir, 'adapters', a.tenantId, r.body.id, 'adapter_model.safetensors'));
        expect(weights.equals(await readFile(join(FIXTURES, 'adapters', fx, 'adapter_model.safetensors')))).toBe(true);
      });
    }
    it(`uploads ${fx} as a multipart form`, async () => {
      const fd = form({ name: `${fx}-form` }, await fixtureFiles(fx));
      const r = await call(t.app, 'POST', '/v1/adapters', { key: a.key, body: fd });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body).toMatchObject({ name: `${fx}-form`, version: 1, status: 'ready' });
      expect(r.body.size_bytes).toBe((await fixtureFiles(fx)).reduce((n, f) => n + f.data.length, 0));
    });
  }

  it('uploading an existing name creates the next version; refs resolve by name, name@version and id', async () => {
    const files = await fixtureFiles('lora_qv_r4');
    const v1 = await call(t.app, 'POST', '/v1/adapters?name=sql', {
      key: a.key,
      body: writeZip(files),
      headers: { 'content-type': 'application/zip' },
    });
    const v2 = await call(t.app, 'POST', `/v1/adapters?name=sql&base_model=${BASE_MODEL}`, {
      key: a.key,
      body: writeZip(files),
      headers: { 'content-type': 'application/zip' },
    });
    expect([v1.body.version, v2.body.version]).toEqual([1, 2]);
    expect((await call(t.app, 'GET', '/v1/adapters/sql', { key: a.key })).body.id).toBe(v2.body.id);
    expect((await call(t.app, 'GET', '/v1/adapters/sql@1', { key: a.key })).body.id).toBe(v1.body.id);
    expect((await call(t.app, 'GET', `/v1/adapters/${v1.body.id}`, { key: a.key })).body.ref).toBe('sql@1');
    const list = await call(t.app, 'GET', '/v1/adapters', { key: a.key });
    expect(
      list.body.data.filter((x: { name: string }) => x.name === 'sql').map((x: { version: number }) => x.version),
    ).toEqual([1, 2]);
  });

  it('concurrent uploads of one name get distinct versions', async () => {
    const zip = writeZip(await fixtureFiles('lora_qv_r4'));
    const rs = await Promise.all(
      Array.from({ length: 4 }, () =>
        call(t.app, 'POST', '/v1/adapters?name=race', {
          key: a.key,
          body: zip,
          headers: { 'content-type': 'application/zip' },
        }),
      ),
    );
    expect(rs.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    expect(rs.map((r) => r.body.version).sort()).toEqual([1, 2, 3, 4]);
  });

  it("another tenant's adapters are not found by name, name@version or id, and never named in errors", async () => {
    const files = await fixtureFiles('lora_all_r8');
    const up = await call(t.app, 'POST', '/v1/adapters?name=secret-sauce', {
      key: a.key,
      body: writeZip(files),
      headers: { 'content-type': 'application/zip' },
    });
    expect(up.status).toBe(201);
    const missing = await call(t.app, 'GET', '/v1/adapters/does-not-exist', { key: b.key });
    for (const ref of ['secret-sauce', 'secret-sauce@1', up.body.id]) {
      const g = await call(t.app, 'GET', `/v1/adapters/${ref}`, { key: b.key });
      expect(g.status).toBe(404);
      expect(g.body.error.code).toBe(missing.body.error.code);
      expect(g.body.error.message).toBe(missing.body.error.message.replace('does-not-exist', ref));
      const d = await call(t.app, 'DELETE', `/v1/adapters/${ref}`, { key: b.key });
      expect(d.status).toBe(404);
      expect(JSON.stringify(d.body)).not.toContain(a.tenantId);
    }
    const listB = await call(t.app, 'GET', '/v1/adapters', { key: b.key });
    expect(listB.body.data).toEqual([]);
    expect((await call(t.app, 'GET', '/v1/adapters/secret-sauce', { key: a.key })).status).toBe(200);
    // Tenant B's own adapter of the same name is B's, a separate version line.
    const upB = await call(t.app, 'POST', '/v1/adapters?name=secret-sauce', {
      key: b.key,
      body: writeZip(files),
      headers: { 'content-type': 'application/zip' },
    });
    expect(upB.body.version).toBe(1);
    expect((await call(t.app, 'GET', '/v1/adapters/secret-sauce', { key: a.key })).body.id).toBe(up.body.id);
  });

  it('deletes one version or every version, and removes the files', async () => {
    const files = await fixtureFiles('lora_qv_r4');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(
        (
          await call(t.app, 'POST', '/v1/adapters?name=gone', {
            key: a.key,
            body: writeZip(files),
            headers: { 'content-type': 'application/zip' },
          })
        ).body.id,
      );
    const one = await call(t.app, 'DELETE', '/v1/adapters/gone@2', { key: a.key });
    expect(one.body).toEqual({ id: ids[1], object: 'adapter', deleted: true });
    expect((await call(t.app, 'GET', '/v1/adapters/gone@2', { key: a.key })).status).toBe(404);
    expect(await storedFiles(join(store.dir, 'adapters', a.tenantId, ids[1]!))).toEqual([]);
    expect((await call(t.app, 'DELETE', '/v1/adapters/gone', { key: a.key })).status).toBe(200);
    for (const id of ids) {
      expect((await call(t.app, 'GET', `/v1/adapters/${id}`, { key: a.key })).status).toBe(404);
      expect(await storedFiles(join(store.dir, 'adapters', a.tenantId, id))).toEqual([]);
    }
  });

  describe('bad uploads leave no row and no object', () => {
    const snapshot = async (): Promise<{ rows: number; files: string[] }> => ({
      rows: (await tdb.db.select().from(adapters)).length,
      files: await storedFiles(store.dir),
    });

    it('413 when the body passes the size limit (declared or streamed)', async () => {
      const before = await snapshot();
      const big = Buffer.alloc(500_000, 7);
      const r = await call(t.app, 'POST', '/v1/adapters?name=big', {
        key: a.key,
        body: big,
        headers: { 'content-type': 'application/zip' },
      });
      expect(r.status).toBe(413);
      expect(r.body.error).toMatchObject({ type: 'invalid_request_error', code: 'payload_too_large' });
      // No Content-Length: the limit trips while streaming (a valid, incompressible tar.gz, so the
      // archive reader keeps reading until the byte limit stops it).
      const tgz = writeTarGz([{ name: 'adapter_model.safetensors', data: randomBytes(600_000) }]);
      const stream = new ReadableStream<Uint8Array>({
        start(ctrl) {
          for (let i = 0; i < tgz.length; i += 60_000) ctrl.enqueue(new Uint8Array(tgz.subarray(i, i + 60_000)));
          ctrl.close();
        },
      });
      const res = await t.app.request('/v1/adapters?name=big', {
        method: 'POST',
        body: stream,
        headers: { authorization: `Bearer ${a.key}`, 'content-type': 'application/gzip' },
        duplex: 'half',
      } as RequestInit);
      expect(res.status).toBe(413);
      const fd = form({ name: 'bigform' }, [
        { name: 'adapter_config.json', data: Buffer.from('{}') },
        { name: 'adapter_model.safetensors', data: big },
      ]);
      expect((await call(t.app, 'POST', '/v1/adapters', { key: a.key, body: fd })).status).toBe(413);
      expect(await snapshot()).toEqual(before);
    });

    it('422 for an invalid adapter, 400 for a broken archive or a stray form file', async () => {
      const before = await snapshot();
      const files = await fixtureFiles('lora_all_r8');
      const noWeights = await call(t.app, 'POST', '/v1/adapters?name=bad', {
        key: a.key,
        body: writeZip([files[0]!]),
        headers: { 'content-type': 'application/zip' },
      });
      expect(noWeights.status).toBe(422);
      expect(noWeights.body.error).toMatchObject({ type: 'invalid_request_error', code: 'adapter_invalid' });
      const badCfg = await call(t.app, 'POST', '/v1/adapters?name=bad', {
        key: a.key,
        body: writeZip([{ name: 'adapter_config.json', data: Buffer.from('{"r": -1}') }, files[1]!]),
        headers: { 'content-type': 'application/zip' },
      });
      expect(badCfg.status).toBe(422);
      const truncated = Buffer.from(files[1]!.data.subarray(0, 100));
      expect(
        (
          await call(t.app, 'POST', '/v1/adapters?name=bad', {
            key: a.key,
            body: writeZip([files[0]!, { name: 'adapter_model.safetensors', data: truncated }]),
            headers: { 'content-type': 'application/zip' },
          })
        ).status,
      ).toBe(422);
      expect(
        (
          await call(t.app, 'POST', '/v1/adapters?name=bad', {
            key: a.key,
            body: Buffer.from('not a zip'),
            headers: { 'content-type': 'application/zip' },
          })
        ).status,
      ).toBe(400);
      const stray = await call(t.app, 'POST', '/v1/adapters', {
        key: a.key,
        body: form({ name: 'bad' }, [...files, { name: 'run.sh', data: Buffer.from('rm -rf /') }]),
      });
      expect(stray.status).toBe(400);
      expect(stray.body.error.code).toBe('unexpected_file');
      expect(await snapshot()).toEqual(before);
    });

    it('400 for a bad name, a missing name, an unknown base model; 415 for another content type', async () => {
      const zip = writeZip(await fixtureFiles('lora_qv_r4'));
      const z = { 'content-type': 'application/zip' };
      expect(
        (await call(t.app, 'POST', '/v1/adapters?name=../etc', { key: a.key, body: zip, headers: z })).body.error.code,
      ).toBe('invalid_adapter_name');
      expect((await call(t.app, 'POST', '/v1/adapters', { key: a.key, body: zip, headers: z })).body.error.code).toBe(
        'missing_name',
      );
      expect(
        (await call(t.app, 'POST', '/v1/adapters?name=x&base_model=gpt-9', { key: a.key, body: zip, headers: z })).body
          .error.code,
      ).toBe('unknown_base_model');
      expect(
        (
          await call(t.app, 'POST', '/v1/adapters?name=x', {
            key: a.key,
            body: zip,
            headers: { 'content-type': 'text/plain' },
          })
        ).status,
      ).toBe(415);
      expect(
        (await call(t.app, 'POST', '/v1/adapters?name=x&colour=red', { key: a.key, body: zip, headers: z })).status,
      ).toBe(400);
      expect(
        (await call(t.app, 'POST', `/v1/adapters?name=${BASE_MODEL}`, { key: a.key, body: zip, headers: z })).body.error
          .code,
      ).toBe('invalid_adapter_name');
    });
  });
});
