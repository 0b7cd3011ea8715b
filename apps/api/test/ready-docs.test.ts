// GET /ready (database reachable, a healthy worker), GET /docs (Swagger UI from the API's own
// assets: nothing from a CDN) and GET / (a page for a browser, the usual 404 for JSON clients).
import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GracefulHttp } from '../src/graceful-http.js';
import {
  BASE_MODEL,
  makeTestApp,
  openTestDb,
  seedBaseModel,
  tempDirStore,
  type TestApp,
  type TestDb,
} from './helpers/setup.js';

type Store = Awaited<ReturnType<typeof tempDirStore>>;

describe('GET /ready', () => {
  let db: TestDb;
  let store: Store;
  let t: TestApp;
  let served: string[] = [];

  beforeAll(async () => {
    db = await openTestDb('pglite');
    store = await tempDirStore();
    t = makeTestApp(db.db, store.store);
    Object.assign(t.routing.registry, { servedBaseModels: () => served });
    await seedBaseModel(db.db);
    await seedBaseModel(db.db, 'other-model');
  });
  afterAll(async () => {
    await db?.close();
    await store?.cleanup();
  });

  const ready = async (app = t.app): Promise<{ status: number; body: any }> => {
    const r = await app.request('/ready');
    return { status: r.status, body: await r.json() };
  };

  it('answers 503 with the reason while no worker is healthy', async () => {
    served = [];
    const r = await ready();
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ status: 'not_ready', ready: false, database: 'ok', served_models: [] });
    expect(r.body.reasons).toEqual(['no healthy worker: no worker has sent a recent heartbeat']);
  });

  it('is ready with a healthy worker, and names the known base models without one', async () => {
    served = [BASE_MODEL];
    const r = await ready();
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      status: 'ready',
      ready: true,
      database: 'ok',
      served_models: [BASE_MODEL],
      unserved_models: ['other-model'],
      reasons: [],
    });
  });

  it('needs no API key (a probe)', async () => {
    expect((await t.app.request('/v1/models')).status).toBe(401);
    expect((await t.app.request('/ready')).status).toBe(200);
  });

  it('does not judge workers when the registry cannot tell', async () => {
    const other = makeTestApp(db.db, store.store);
    const r = await ready(other.app);
    expect(r.status).toBe(200);
    expect(r.body.served_models).toBeNull();
  });

  it('answers 503 when the database is unreachable', async () => {
    const gone = await openTestDb('pglite');
    const app = makeTestApp(gone.db, store.store);
    Object.assign(app.routing.registry, { servedBaseModels: () => [BASE_MODEL] });
    await gone.close();
    const r = await ready(app.app);
    expect(r.status).toBe(503);
    expect(r.body.database).toBe('unreachable');
    expect(r.body.reasons[0]).toMatch(/^database unreachable: /);
  });
});

describe('GET /ready while the instance stops', () => {
  it('answers 503 draining with Connection: close once the drain began', async () => {
    const server = Object.assign(new EventEmitter(), {
      close: (done: () => void) => done(),
      closeAllConnections: () => undefined,
    });
    const graceful = new GracefulHttp(() => Response.json({ status: 'ready' }));
    graceful.attach(server as unknown as Server);
    const fetch = graceful.fetch;
    const outgoing = new EventEmitter();
    const env = { incoming: { url: '/ready', socket: {} }, outgoing } as unknown as Parameters<typeof fetch>[1];
    expect((await fetch(new Request('http://api/ready'), env)).status).toBe(200);
    outgoing.emit('close'); // the answer went out
    expect(await graceful.drain(1000)).toBe(true);
    const r = await fetch(new Request('http://api/ready'), env);
    expect(r.status).toBe(503);
    expect(r.headers.get('connection')).toBe('close');
    expect(await r.json()).toEqual({ status: 'draining', ready: false, reasons: ['this instance is shutting down'] });
  });
});

describe('GET /docs and GET /', () => {
  let db: TestDb;
  let store: Store;
  let t: TestApp;

  beforeAll(async () => {
    db = await openTestDb('pglite');
    store = await tempDirStore();
    t = makeTestApp(db.db, store.store);
  });
  afterAll(async () => {
    await db?.close();
    await store?.cleanup();
  });

  it('serves Swagger UI whose assets are all local', async () => {
    const r = await t.app.request('/docs');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await r.text();
    expect(html).toContain("url: '/openapi.json'");
    const refs = [...html.matchAll(/(?:src|href)\s*=\s*"([^"]*)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThanOrEqual(2);
    for (const ref of refs) expect(ref).toMatch(/^\/(?!\/)/);
    expect(html).not.toMatch(/https?:\/\//);

    const types: Record<string, RegExp> = { '.css': /^text\/css/, '.js': /^text\/javascript/ };
    for (const ref of refs) {
      const asset = await t.app.request(ref);
      expect(asset.status, ref).toBe(200);
      expect(asset.headers.get('content-type'), ref).toMatch(types[ref.slice(ref.lastIndexOf('.'))]!);
      expect((await asset.arrayBuffer()).byteLength, ref).toBeGreaterThan(10_000);
    }
  });

  it('serves only the files the page loads', async () => {
    expect((await t.app.request('/docs/swagger-ui-dist/package.json')).status).toBe(404);
    expect((await t.app.request('/docs/swagger-ui-dist/..%2f..%2fpackage.json')).status).toBe(404);
  });

  it('answers a browser at / with a page linking the docs, and JSON clients with the usual 404', async () => {
    const page = await t.app.request('/', { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    for (const href of ['/docs', '/openapi.json', '/console']) expect(html).toContain(`href="${href}"`);
    expect(html).toMatch(/coming/);

    for (const accept of [undefined, 'application/json', '*/*']) {
      const r = await t.app.request('/', accept ? { headers: { accept } } : {});
      expect(r.status, String(accept)).toBe(404);
      expect(await r.json()).toEqual({
        error: { message: 'no route for GET /', type: 'not_found_error', code: 'not_found' },
      });
    }
  });
});
