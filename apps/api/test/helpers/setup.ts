// Test setup: a fresh database per test file on the real Postgres server or on PGlite, the app built
// on it, and the ports of the routing module (merged later) as plain recording implementations.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { createApp } from '../../src/app.js';
import { defaultConfig, type ApiConfig } from '../../src/config.js';
import { openDatabase, type Db } from '../../src/db/client.js';
import { baseModels } from '../../src/db/schema.js';
import type { BaseModelRecord, ForwardRequest, RoutingPorts, UsageEvent } from '../../src/ports.js';
import type { ObjectStore } from '../../src/storage/object-store.js';
import { DirStore } from '../../src/storage/dir-store.js';
import { createValidation } from '../../src/wiring.js';

export const PG_ADMIN_URL = process.env.LORAPLEX_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const BACKENDS = ['postgres', 'pglite'] as const;
export type Backend = (typeof BACKENDS)[number];

export const FIXTURES = resolve(import.meta.dirname, '../../../../packages/engine/test/fixtures/hf-tiny/llama');
export const FIXTURE_ADAPTERS = ['lora_all_r8', 'lora_qv_r4', 'lora_qkvo_r16_rslora'] as const;
export const BASE_MODEL = 'tiny-llama';
export const ADMIN_KEY = 'test-platform-admin-key';

export interface TestDb {
  db: Db;
  databaseUrl?: string;
  close(): Promise<void>;
}

export async function openTestDb(backend: Backend): Promise<TestDb> {
  if (backend === 'pglite') {
    const dir = await mkdtemp(join(tmpdir(), 'lpx-pglite-'));
    const o = await openDatabase({ dataDir: dir });
    return {
      db: o.db,
      close: async () => {
        await o.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `lpx_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const o = await openDatabase({ databaseUrl: url.toString() });
  return {
    db: o.db,
    databaseUrl: url.toString(),
    close: async () => {
      await o.close();
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** Registers the fixture base model as a worker heartbeat would (the base_models row). */
export async function seedBaseModel(db: Db, id = BASE_MODEL, maxLoraRank = 64): Promise<void> {
  const config = JSON.parse(await readFile(join(FIXTURES, 'base/config.json'), 'utf8')) as Record<string, unknown>;
  await db.insert(baseModels).values({ id, config, maxLoraRank }).onConflictDoNothing();
}

/** The routing module's ports as recorders: base models from the base_models table, forwards and usage kept for assertions. */
export class RecordingRouting implements RoutingPorts {
  readonly forwarded: ForwardRequest[] = [];
  readonly usageEvents: UsageEvent[] = [];
  readonly heartbeats: unknown[] = [];
  readonly active = new Map<string, number>();
  maxConcurrent = Infinity;
  private lastBaseModels: BaseModelRecord[] | undefined;

  constructor(private readonly db: Db) {}

  registry = {
    heartbeat: async (body: unknown): Promise<unknown> => {
      if (typeof body !== 'object' || body === null)
        throw Object.assign(new Error('invalid heartbeat'), { status: 400 });
      this.heartbeats.push(body);
      return { persisted: true };
    },
    // As the real registry: read from Postgres, the last answer kept while Postgres is down.
    baseModels: async (): Promise<BaseModelRecord[]> => {
      try {
        const rows = await this.db.select().from(baseModels).orderBy(baseModels.id);
        this.lastBaseModels = rows.map((r) => ({ id: r.id, config: r.config, maxLoraRank: r.maxLoraRank }));
      } catch (e) {
        if (!this.lastBaseModels) throw e;
      }
      return this.lastBaseModels;
    },
  };

  router = {
    forward: async (req: ForwardRequest): Promise<Response> => {
      this.forwarded.push(req);
      // What a worker would get: the body the inference route prepared (adapter field rewritten), else the client's.
      const body = JSON.stringify({ echoed: req.prepared ? (JSON.parse(req.prepared.json) as unknown) : req.body });
      const out = new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
      req.onUsage?.({ promptTokens: 3, completionTokens: 5, latencyMs: 12, status: 200 });
      return out;
    },
  };

  usage = {
    record: (e: UsageEvent): void => void this.usageEvents.push(e),
    flush: async (): Promise<void> => undefined,
    close: async (): Promise<void> => undefined,
  };

  limits = {
    acquire: (tenantId: string): (() => void) | { retryAfterS: number } => {
      const n = this.active.get(tenantId) ?? 0;
      if (n >= this.maxConcurrent) return { retryAfterS: 1 };
      this.active.set(tenantId, n + 1);
      return () => this.active.set(tenantId, (this.active.get(tenantId) ?? 1) - 1);
    },
    addTokens: (): void => undefined,
  };
}

export interface TestApp {
  app: ReturnType<typeof createApp>['app'];
  services: ReturnType<typeof createApp>['services'];
  routing: RecordingRouting;
  config: ApiConfig;
}

export function makeTestApp(db: Db, store: ObjectStore, over: Partial<ApiConfig> = {}): TestApp {
  const config = defaultConfig({ adminKey: ADMIN_KEY, workerSecret: 'test-worker-secret', ...over });
  const routing = new RecordingRouting(db);
  const { app, services } = createApp({ db, store, config, validation: createValidation(), routing });
  return { app, services, routing, config };
}

export async function tempDirStore(): Promise<{ store: DirStore; dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'lpx-store-'));
  return {
    store: new DirStore(dir, 'test-part-secret'),
    dir,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A request through app.request with a key and a JSON body. */
export async function call(
  app: TestApp['app'],
  method: string,
  path: string,
  opts: { key?: string; json?: unknown; body?: BodyInit | Buffer; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  let body: BodyInit | undefined = Buffer.isBuffer(opts.body) ? new Uint8Array(opts.body) : opts.body;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const res = await app.request(path, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** A tenant with one key of the given scopes, created through the API as the platform admin. */
export async function tenantWithKey(
  app: TestApp['app'],
  name: string,
  scopes?: string[],
): Promise<{ tenantId: string; key: string; keyId: string }> {
  const t = await call(app, 'POST', '/v1/tenants', { key: ADMIN_KEY, json: { name } });
  if (t.status !== 201) throw new Error(`create tenant: ${t.status} ${JSON.stringify(t.body)}`);
  const k = await call(app, 'POST', '/v1/keys', {
    key: ADMIN_KEY,
    json: { tenant_id: t.body.id, ...(scopes ? { scopes } : {}) },
  });
  if (k.status !== 201) throw new Error(`create key: ${k.status} ${JSON.stringify(k.body)}`);
  return { tenantId: t.body.id, key: k.body.key, keyId: k.body.id };
}
