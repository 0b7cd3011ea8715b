// While Postgres is unreachable the API keeps serving keys and adapters it verified recently (a
// short-lived memory), never a key it saw revoked, and nothing it has not seen; when Postgres is
// back, every request is checked against it again. Postgres "restarts" here by cutting a TCP proxy
// between the API and the real server.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { ManualClock } from '@loraplex/common';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { defaultConfig } from '../src/config.js';
import { openDatabase, type OpenDatabase } from '../src/db/client.js';
import { writeZip } from './helpers/archive.js';
import {
  ADMIN_KEY,
  BASE_MODEL,
  call,
  FIXTURES,
  PG_ADMIN_URL,
  RecordingRouting,
  seedBaseModel,
  tempDirStore,
  tenantWithKey,
} from './helpers/setup.js';
import { createValidation } from '../src/wiring.js';

class CuttableProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((res) => this.server!.listen(this.port, '127.0.0.1', () => res()));
    this.port = (this.server!.address() as net.AddressInfo).port;
  }

  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((res) => this.server!.close(() => res()));
  }
}

describe('Postgres outage (real server behind a proxy)', () => {
  const dbName = `lpx_test_${randomBytes(6).toString('hex')}`;
  const proxy = new CuttableProxy({
    host: new URL(PG_ADMIN_URL).hostname,
    port: Number(new URL(PG_ADMIN_URL).port || 5432),
  });
  let database: OpenDatabase;
  let store: Awaited<ReturnType<typeof tempDirStore>>;
  let app: ReturnType<typeof createApp>['app'];
  const clock = new ManualClock();

  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    await proxy.up();
    const url = new URL(PG_ADMIN_URL);
    url.port = String(proxy.port);
    url.pathname = `/${dbName}`;
    database = await openDatabase({ databaseUrl: url.toString() });
    store = await tempDirStore();
    await seedBaseModel(database.db);
    const config = defaultConfig({ adminKey: ADMIN_KEY, workerSecret: 'w' });
    ({ app } = createApp({
      db: database.db,
      store: store.store,
      config,
      validation: createValidation(),
      routing: new RecordingRouting(database.db),
      cacheTtlMs: 1500,
      clock,
    }));
  });
  afterAll(async () => {
    await database?.close();
    await proxy.down().catch(() => undefined);
    await store?.cleanup();
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  });

  it('serves recently verified keys and adapters, refuses revoked and unknown ones, and recovers', async () => {
    const t = await tenantWithKey(app, 'outage-co');
    const revoked = await tenantWithKey(app, 'revoked-co');
    const unseen = await call(app, 'POST', '/v1/keys', { key: ADMIN_KEY, json: { tenant_id: t.tenantId } });
    const dir = join(FIXTURES, 'adapters', 'lora_qv_r4');
    const zip = writeZip(
      await Promise.all(
        ['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({
          name,
          data: await readFile(join(dir, name)),
        })),
      ),
    );
    expect(
      (
        await call(app, 'POST', '/v1/adapters?name=bot', {
          key: t.key,
          body: zip,
          headers: { 'content-type': 'application/zip' },
        })
      ).status,
    ).toBe(201);
    const infer = (key: string) => call(app, 'POST', '/v1/completions', { key, json: { model: 'bot', prompt: 'x' } });
    expect((await infer(t.key)).status).toBe(200);
    expect((await infer(revoked.key)).status).toBe(404); // verified, but the adapter is not theirs
    expect((await call(app, 'DELETE', `/v1/keys/${revoked.keyId}`, { key: ADMIN_KEY })).status).toBe(200);
    expect((await infer(revoked.key)).status).toBe(401);

    await proxy.down();
    const during = await infer(t.key);
    expect(during.status, JSON.stringify(during.body)).toBe(200); // key and adapter from memory
    for (const key of [revoked.key, unseen.body.key]) {
      const r = await infer(key);
      expect(r.status).toBe(503); // revoked or never seen: never served from memory
      expect(r.body.error.type).toBe('overloaded_error');
      expect(r.headers.get('retry-after')).toBeTruthy();
    }
    // What needs the database and is not cached answers 503, not a crash.
    expect((await call(app, 'GET', '/v1/adapters', { key: t.key })).status).toBe(503);
    // The memory is short-lived.
    clock.advance(1600);
    expect((await infer(t.key)).status).toBe(503);

    await proxy.up();
    expect((await infer(t.key)).status).toBe(200);
    expect((await infer(revoked.key)).status).toBe(401);
    expect((await infer(unseen.body.key)).status).toBe(200);
  });
});
