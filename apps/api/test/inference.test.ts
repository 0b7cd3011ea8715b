// Inference routes as far as the API owns them: auth and scope, tenant-scoped adapter resolution,
// the body handed to the routing port (adapter field = adapter id, descriptor storage), limits held
// for the response, usage recorded; /v1/models, /v1/usage, the heartbeat route, OpenAPI and docs.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageEvents } from '../src/db/schema.js';
import { writeZip } from './helpers/archive.js';
import {
  BACKENDS,
  BASE_MODEL,
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

describe.each(BACKENDS)('inference, models, usage (%s)', (backend) => {
  let tdb: TestDb;
  let t: TestApp;
  let store: Awaited<ReturnType<typeof tempDirStore>>;
  let a: { tenantId: string; key: string };
  let b: { tenantId: string; key: string };
  let adapter: { id: string; name: string };

  beforeAll(async () => {
    tdb = await openTestDb(backend);
    store = await tempDirStore();
    await seedBaseModel(tdb.db);
    t = makeTestApp(tdb.db, store.store);
    a = await tenantWithKey(t.app, 'inf-a');
    b = await tenantWithKey(t.app, 'inf-b');
    const dir = join(FIXTURES, 'adapters', 'lora_qv_r4');
    const zip = writeZip(
      await Promise.all(
        ['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({
          name,
          data: await readFile(join(dir, name)),
        })),
      ),
    );
    const up = await call(t.app, 'POST', '/v1/adapters?name=support-bot', {
      key: a.key,
      body: zip,
      headers: { 'content-type': 'application/zip' },
    });
    expect(up.status).toBe(201);
    adapter = up.body;
  });
  afterAll(async () => {
    await tdb?.close();
    await store?.cleanup();
  });

  it('forwards an adapter request with the adapter id and its storage, and records usage', async () => {
    const before = t.routing.forwarded.length;
    for (const model of ['support-bot', 'support-bot@1', adapter.id]) {
      const r = await call(t.app, 'POST', '/v1/chat/completions', {
        key: a.key,
        json: { model, messages: [{ role: 'user', content: 'hi' }] },
      });
      expect(r.status).toBe(200);
      expect(r.body.echoed.model).toBe(adapter.id);
    }
    const f = t.routing.forwarded[before]!;
    expect(f).toMatchObject({ path: '/v1/chat/completions', baseModel: BASE_MODEL });
    expect(f.adapter).toMatchObject({
      id: adapter.id,
      baseModel: BASE_MODEL,
      rank: 4,
      storage: { kind: 'dir', path: join(store.dir, 'adapters', a.tenantId, adapter.id) },
    });
    expect(f.adapter!.files.map((x) => x.name)).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const ev = t.routing.usageEvents.at(-1)!;
    expect(ev).toMatchObject({
      tenantId: a.tenantId,
      adapterId: adapter.id,
      adapterRef: 'support-bot@1',
      baseModel: BASE_MODEL,
      route: '/v1/chat/completions',
      promptTokens: 3,
      completionTokens: 5,
    });
    expect(t.routing.active.get(a.tenantId)).toBe(0); // the limit slot was released
  });

  it('LoRAX routes: parameters.adapter_id is rewritten; other adapter sources are refused', async () => {
    // "local" (or null) = the tenant's uploaded adapters; hub, s3 and pbase are never fetched by the API.
    const r = await call(t.app, 'POST', '/generate', {
      key: a.key,
      json: { inputs: 'hi', parameters: { adapter_id: 'support-bot', adapter_source: 'local', max_new_tokens: 2 } },
    });
    expect(r.status).toBe(200);
    expect(r.body.echoed.parameters).toEqual({ adapter_id: adapter.id, max_new_tokens: 2 });
    const base = await call(t.app, 'POST', '/generate_stream', { key: a.key, json: { inputs: 'hi' } });
    expect(base.status).toBe(200);
    expect(t.routing.forwarded.at(-1)).toMatchObject({ baseModel: BASE_MODEL, path: '/generate_stream' });
    expect(t.routing.forwarded.at(-1)!.adapter).toBeUndefined();
    for (const src of ['s3', 'hub', 'pbase', 'gcs']) {
      const bad = await call(t.app, 'POST', '/generate', {
        key: a.key,
        json: { inputs: 'hi', parameters: { adapter_id: '/etc/passwd', adapter_source: src } },
      });
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('invalid_adapter_source');
      expect(bad.body.error.message).toMatch(
        src === 'gcs'
          ? /must be one of local, hub, s3, pbase/
          : new RegExp(`adapter_source "${src}" is not served by this API.*upload it`),
      );
    }
    // adapter_id null (what lorax-client sends for the base model) and parameters null: the base model.
    const nullId = await call(t.app, 'POST', '/', {
      key: a.key,
      json: { inputs: 'hi', parameters: { adapter_id: null, adapter_source: null }, stream: false },
    });
    expect(nullId.status).toBe(200);
    expect(t.routing.forwarded.at(-1)).toMatchObject({ baseModel: BASE_MODEL, path: '/' });
    expect(t.routing.forwarded.at(-1)!.adapter).toBeUndefined();
    expect(
      (await call(t.app, 'POST', '/generate', { key: a.key, json: { inputs: 'hi', parameters: null } })).status,
    ).toBe(200);
  });

  it("another tenant's adapter is a 404 like a missing one, by name, ref or id, and nothing is forwarded", async () => {
    const before = t.routing.forwarded.length;
    const missing = await call(t.app, 'POST', '/v1/completions', { key: b.key, json: { model: 'nope', prompt: 'x' } });
    expect(missing.status).toBe(404);
    for (const model of ['support-bot', 'support-bot@1', adapter.id]) {
      const r = await call(t.app, 'POST', '/v1/completions', { key: b.key, json: { model, prompt: 'x' } });
      expect(r.status).toBe(404);
      expect(r.body.error.code).toBe(missing.body.error.code);
      expect(JSON.stringify(r.body)).not.toContain(a.tenantId);
      const g = await call(t.app, 'POST', '/generate', {
        key: b.key,
        json: { inputs: 'x', parameters: { adapter_id: model } },
      });
      expect(g.status).toBe(404);
    }
    // A storage path is not a ref either.
    expect(
      (
        await call(t.app, 'POST', '/v1/completions', {
          key: b.key,
          json: { model: `adapters/${a.tenantId}/${adapter.id}/`, prompt: 'x' },
        })
      ).status,
    ).toBe(404);
    expect(t.routing.forwarded.length).toBe(before);
  });

  it('base model requests, auth, scope and limits', async () => {
    const r = await call(t.app, 'POST', '/v1/completions', { key: a.key, json: { model: BASE_MODEL, prompt: 'x' } });
    expect(r.status).toBe(200);
    expect(r.body.echoed.model).toBe(BASE_MODEL);
    expect((await call(t.app, 'POST', '/v1/completions', { json: { model: BASE_MODEL, prompt: 'x' } })).status).toBe(
      401,
    );
    const writer = await call(t.app, 'POST', '/v1/keys', {
      key: 'test-platform-admin-key',
      json: { tenant_id: a.tenantId, scopes: ['adapters:write'] },
    });
    expect(
      (await call(t.app, 'POST', '/v1/completions', { key: writer.body.key, json: { model: BASE_MODEL, prompt: 'x' } }))
        .status,
    ).toBe(403);
    expect((await call(t.app, 'POST', '/v1/completions', { key: a.key, json: { prompt: 'x' } })).status).toBe(400);
    expect(
      (
        await call(t.app, 'POST', '/v1/completions', {
          key: a.key,
          body: '{"model":',
          headers: { 'content-type': 'application/json' },
        })
      ).status,
    ).toBe(400);
    t.routing.maxConcurrent = 0;
    const limited = await call(t.app, 'POST', '/v1/completions', {
      key: a.key,
      json: { model: BASE_MODEL, prompt: 'x' },
    });
    t.routing.maxConcurrent = Infinity;
    expect(limited.status).toBe(429);
    expect(limited.body.error.type).toBe('rate_limit_error');
    expect(limited.headers.get('retry-after')).toBe('1');
  });

  it("GET /v1/models lists base models and only the caller's ready adapters", async () => {
    const ma = await call(t.app, 'GET', '/v1/models', { key: a.key });
    expect(ma.status).toBe(200);
    const ids = ma.body.data.map((m: { id: string }) => m.id);
    expect(ids).toEqual([BASE_MODEL, 'support-bot', 'support-bot@1']);
    expect(ma.body.data[0]).toMatchObject({ object: 'model', owned_by: 'loraplex', parent: null });
    expect(ma.body.data[2]).toMatchObject({ parent: BASE_MODEL, root: adapter.id });
    const mb = await call(t.app, 'GET', '/v1/models', { key: b.key });
    expect(mb.body.data.map((m: { id: string }) => m.id)).toEqual([BASE_MODEL]);
  });

  it("GET /v1/usage sums the tenant's events per adapter, day or hour", async () => {
    const at = (iso: string) => new Date(iso);
    const ev = (tenantId: string, ref: string | null, createdAt: Date, p: number, c: number, ms: number) => ({
      tenantId,
      adapterId: ref ? adapter.id : null,
      adapterRef: ref,
      baseModel: BASE_MODEL,
      route: '/v1/completions',
      status: 200,
      promptTokens: p,
      completionTokens: c,
      latencyMs: ms,
      createdAt,
    });
    await tdb.db
      .insert(usageEvents)
      .values([
        ev(a.tenantId, 'support-bot@1', at('2030-01-01T10:15:00Z'), 10, 20, 100),
        ev(a.tenantId, 'support-bot@1', at('2030-01-01T10:45:00Z'), 1, 2, 300),
        ev(a.tenantId, 'support-bot@1', at('2030-01-02T08:00:00Z'), 5, 5, 50),
        ev(a.tenantId, null, at('2030-01-01T11:00:00Z'), 7, 7, 70),
        ev(b.tenantId, null, at('2030-01-01T10:00:00Z'), 1000, 1000, 1),
      ]);
    const q = (g: string) =>
      call(t.app, 'GET', `/v1/usage?start=2030-01-01T00:00:00Z&end=2030-01-03T00:00:00Z&group_by=${g}`, { key: a.key });
    const byAdapter = (await q('adapter')).body.data;
    expect(byAdapter).toEqual([
      {
        adapter: 'support-bot@1',
        base_model: BASE_MODEL,
        period_start: '2030-01-01T00:00:00.000Z',
        requests: 3,
        prompt_tokens: 16,
        completion_tokens: 27,
        avg_latency_ms: 150,
      },
      {
        adapter: null,
        base_model: BASE_MODEL,
        period_start: '2030-01-01T00:00:00.000Z',
        requests: 1,
        prompt_tokens: 7,
        completion_tokens: 7,
        avg_latency_ms: 70,
      },
    ]);
    const byDay = (await q('day')).body.data;
    expect(
      byDay.map((r: { period_start: string; adapter: string | null; requests: number }) => [
        r.period_start,
        r.adapter,
        r.requests,
      ]),
    ).toEqual([
      ['2030-01-01T00:00:00.000Z', 'support-bot@1', 2],
      ['2030-01-01T00:00:00.000Z', null, 1],
      ['2030-01-02T00:00:00.000Z', 'support-bot@1', 1],
    ]);
    const byHour = (await q('hour')).body.data;
    expect(byHour.map((r: { period_start: string; requests: number }) => [r.period_start, r.requests])).toEqual([
      ['2030-01-01T10:00:00.000Z', 2],
      ['2030-01-01T11:00:00.000Z', 1],
      ['2030-01-02T08:00:00.000Z', 1],
    ]);
    expect((await call(t.app, 'GET', '/v1/usage?group_by=week', { key: a.key })).status).toBe(400);
    expect((await call(t.app, 'GET', '/v1/usage?start=yesterday', { key: a.key })).status).toBe(400);
  });

  it('heartbeats need the worker secret and reach the registry port', async () => {
    const body = { id: 'wk_1', url: 'http://127.0.0.1:9', base_model: BASE_MODEL };
    expect((await call(t.app, 'POST', '/internal/workers/heartbeat', { json: body })).status).toBe(401);
    expect(
      (
        await call(t.app, 'POST', '/internal/workers/heartbeat', {
          json: body,
          headers: { authorization: 'Bearer wrong' },
        })
      ).status,
    ).toBe(401);
    const ok = await call(t.app, 'POST', '/internal/workers/heartbeat', {
      json: body,
      headers: { authorization: 'Bearer test-worker-secret' },
    });
    expect(ok.body).toEqual({ ok: true });
    expect(t.routing.heartbeats.at(-1)).toEqual(body);
    expect(
      (
        await call(t.app, 'POST', '/internal/workers/heartbeat', {
          body: '{',
          headers: { authorization: 'Bearer test-worker-secret', 'content-type': 'application/json' },
        })
      ).status,
    ).toBe(400);
  });

  it('serves the OpenAPI document and Swagger UI', async () => {
    const doc = await call(t.app, 'GET', '/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe('3.1.0');
    const paths = Object.keys(doc.body.paths);
    for (const p of [
      '/v1/tenants',
      '/v1/keys',
      '/v1/keys/{id}',
      '/v1/adapters',
      '/v1/adapters/{ref}',
      '/v1/adapters/uploads',
      '/v1/adapters/uploads/{id}/complete',
      '/v1/completions',
      '/v1/chat/completions',
      '/generate',
      '/generate_stream',
      '/',
      '/tokenize',
      '/info',
      '/v1/models',
      '/v1/usage',
    ]) {
      expect(paths).toContain(p);
    }
    expect(doc.body.paths['/v1/adapters'].post.requestBody.content).toHaveProperty('multipart/form-data');
    expect(doc.body.components.schemas).toHaveProperty('Adapter');
    for (const name of ['LoraxGenerateResponse', 'LoraxStreamEvent', 'LoraxTokenizeResponse', 'LoraxInfo'])
      expect(doc.body.components.schemas).toHaveProperty(name);
    expect(doc.body.paths['/'].post.responses['200'].content).toHaveProperty('text/event-stream');
    const ui = await t.app.request('/docs');
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('/openapi.json');
    const health = await call(t.app, 'GET', '/health');
    expect(health.body).toEqual({ status: 'ok' });
    const nf = await call(t.app, 'GET', '/v2/nothing');
    expect(nf.status).toBe(404);
    expect(nf.body.error.type).toBe('not_found_error');
  });
});
