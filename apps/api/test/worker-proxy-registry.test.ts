// WorkerRegistry on PGlite and on the real Postgres server: heartbeats validated and upserted,
// health from heartbeat age / draining / router failures, refresh from other API instances' rows,
// and serving from cache while the Postgres connection is cut (a real TCP proxy), then recovery.
import { ManualClock } from '@loraplex/common';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { baseModels, workers } from '../src/db/schema.js';
import { HeartbeatError } from '../src/worker-proxy/heartbeat-schema.js';
import { WorkerRegistry } from '../src/worker-proxy/registry.js';
import { openPgliteTestDb, openPgTestDb, PG_PORT, type PgTestDb, type TestDb } from './helpers/routing-db.js';
import { startTcpProxy, type TcpProxy } from './helpers/routing-proxy.js';
import { BASE_MODEL, heartbeatFor, MODEL_CONFIG, until } from './helpers/routing-workers.js';

describe.each([
  ['PGlite', openPgliteTestDb],
  ['Postgres', () => openPgTestDb()],
] as const)('WorkerRegistry on %s', (_, open) => {
  let t: TestDb;
  beforeAll(async () => {
    t = await open();
  });
  afterAll(async () => {
    await t.close();
  });
  afterEach(async () => {
    await t.db.delete(workers);
  });

  it('upserts the worker and its base model, and serves it as healthy', async () => {
    const reg = new WorkerRegistry(t.db);
    expect(await reg.heartbeat(heartbeatFor('wk_a', 'http://127.0.0.1:9001/', { resident: ['ad_1'] }))).toEqual({
      persisted: true,
    });
    expect(
      await reg.heartbeat(heartbeatFor('wk_a', 'http://127.0.0.1:9001', { resident: ['ad_1', 'ad_2'], running: 2 })),
    ).toEqual({ persisted: true });
    const rows = await t.db.select().from(workers);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      id: 'wk_a',
      baseModel: BASE_MODEL,
      residentAdapters: ['ad_1', 'ad_2'],
      draining: false,
      load: { running: 2, waiting: 0, kv_free_blocks: 256 },
    });
    const [model] = await t.db.select().from(baseModels).where(eq(baseModels.id, BASE_MODEL));
    expect(model).toMatchObject({ config: MODEL_CONFIG, maxLoraRank: 64 });
    const healthy = reg.healthy(BASE_MODEL);
    expect(healthy.map((w) => [w.id, w.url, w.residentAdapters])).toEqual([
      ['wk_a', 'http://127.0.0.1:9001', ['ad_1', 'ad_2']],
    ]);
    expect(reg.healthy('other-model')).toEqual([]);
    expect(reg.baseModels()).toEqual([{ id: BASE_MODEL, config: MODEL_CONFIG, maxLoraRank: 64 }]);
    await reg.close();
  });

  it("keeps engine slots apart from the host tier, through Postgres to other instances, and reads an old worker's resident_adapters as host tier", async () => {
    const reg = new WorkerRegistry(t.db);
    await reg.heartbeat({
      ...heartbeatFor('wk_new', 'http://127.0.0.1:9002'),
      slot_adapters: ['ad_hot'],
      host_adapters: ['ad_hot', 'ad_warm'],
      resident_adapters: ['ad_hot', 'ad_warm'],
    });
    await reg.heartbeat(heartbeatFor('wk_old', 'http://127.0.0.1:9003', { resident: ['ad_old'] }));
    const residency = (r: WorkerRegistry) =>
      Object.fromEntries(
        r.healthy(BASE_MODEL).map((w) => [w.id, { slot: w.slotAdapters, resident: w.residentAdapters }]),
      );
    const want = {
      wk_new: { slot: ['ad_hot'], resident: ['ad_hot', 'ad_warm'] },
      wk_old: { slot: [], resident: ['ad_old'] },
    };
    expect(residency(reg)).toEqual(want);
    const other = new WorkerRegistry(t.db);
    expect(await other.refresh()).toBe(true);
    expect(residency(other)).toEqual(want);
    await Promise.all([reg.close(), other.close()]);
  });

  it('refuses malformed heartbeats with a 400 HeartbeatError and writes nothing', async () => {
    const reg = new WorkerRegistry(t.db);
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...heartbeatFor('wk_b', 'http://x:1'), url: 'file:///etc/passwd' }, /url/],
      [{ ...heartbeatFor('wk_b', 'http://x:1'), id: '' }, /id/],
      [{ ...heartbeatFor('wk_b', 'http://x:1'), capacity: { adapter_slots: -1 } }, /capacity/],
      [{ ...heartbeatFor('wk_b', 'http://x:1'), resident_adapters: 'ad_1' }, /resident_adapters/],
      [{ ...heartbeatFor('wk_b', 'http://x:1'), slot_adapters: [''] }, /slot_adapters/],
      [{ ...heartbeatFor('wk_b', 'http://x:1'), draining: 'no' }, /draining/],
    ];
    for (const [body, msg] of bad) {
      const err = await reg.heartbeat(body).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HeartbeatError);
      expect((err as HeartbeatError).status).toBe(400);
      expect((err as Error).message).toMatch(msg);
    }
    await expect(reg.heartbeat(null)).rejects.toBeInstanceOf(HeartbeatError);
    expect(await t.db.select().from(workers)).toEqual([]);
    expect(reg.healthy(BASE_MODEL)).toEqual([]);
  });

  it('leaves out draining workers, stale workers, and workers the router failed to reach until they heartbeat again', async () => {
    const clock = new ManualClock(1_000);
    const reg = new WorkerRegistry(t.db, { staleAfterMs: 300, clock });
    await reg.heartbeat(heartbeatFor('wk_1', 'http://127.0.0.1:9001'));
    await reg.heartbeat(heartbeatFor('wk_2', 'http://127.0.0.1:9002', { draining: true }));
    expect(reg.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_1']);
    reg.reportFailure('wk_1');
    expect(reg.healthy(BASE_MODEL)).toEqual([]);
    clock.advance(2);
    await reg.heartbeat(heartbeatFor('wk_1', 'http://127.0.0.1:9001'));
    expect(reg.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_1']);
    clock.advance(299);
    expect(reg.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_1']);
    clock.advance(1);
    expect(reg.healthy(BASE_MODEL)).toEqual([]);
    await reg.close();
  });

  it('learns workers that heartbeat to another API instance through the database', async () => {
    const other = new WorkerRegistry(t.db);
    const clock = new ManualClock();
    const reg = new WorkerRegistry(t.db, { refreshMs: 20, clock });
    expect(reg.healthy(BASE_MODEL)).toEqual([]);
    await other.heartbeat(heartbeatFor('wk_elsewhere', 'http://127.0.0.1:9009'));
    // Reads start a background refresh once refreshMs has passed on the registry's clock.
    await until(
      () => {
        clock.advance(20);
        return reg.healthy(BASE_MODEL).length === 1;
      },
      5000,
      'refresh',
    );
    expect(reg.healthy(BASE_MODEL)[0]!.id).toBe('wk_elsewhere');
    // A background refresh still in flight may predate the row below: let it end first.
    await reg.refresh();
    // An old row is stale on arrival: its age is measured by Postgres, not by the API's clock.
    await t.db.insert(workers).values({ ...rowOf('wk_old'), lastHeartbeat: new Date(Date.now() - 60_000) });
    expect(await reg.refresh()).toBe(true);
    expect(reg.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_elsewhere']);
    await Promise.all([reg.close(), other.close()]);
  });
});

function rowOf(id: string) {
  const hb = heartbeatFor(id, 'http://127.0.0.1:9999') as { capacity: never; load: never };
  return {
    id,
    url: 'http://127.0.0.1:9999',
    baseModel: BASE_MODEL,
    capacity: hb.capacity,
    load: hb.load,
    residentAdapters: [],
    slotAdapters: [],
    draining: false,
  };
}

describe('WorkerRegistry while the Postgres connection is cut', () => {
  let t: PgTestDb;
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await startTcpProxy(PG_PORT);
    t = await openPgTestDb({ port: proxy.port });
  });
  afterAll(async () => {
    await t.close();
    await proxy.close();
  });

  it('keeps serving its cache and accepting heartbeats, then persists and refreshes again once it is back', async () => {
    // The clock stands still: no background refresh starts, and no heartbeat goes stale.
    const reg = new WorkerRegistry(t.db, {
      refreshMs: 20,
      queryTimeoutMs: 1000,
      staleAfterMs: 5000,
      clock: new ManualClock(),
    });
    await reg.heartbeat(heartbeatFor('wk_1', 'http://127.0.0.1:9001'));
    expect(await reg.refresh()).toBe(true);

    proxy.cut();
    expect(await reg.refresh()).toBe(false);
    expect(reg.lastRefreshError).toBeInstanceOf(Error);
    expect(reg.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_1']);
    expect(reg.baseModels().map((m) => m.id)).toEqual([BASE_MODEL]);
    // A heartbeat during the outage cannot be written but still counts for this instance.
    expect(await reg.heartbeat(heartbeatFor('wk_2', 'http://127.0.0.1:9002'))).toEqual({ persisted: false });
    expect(
      reg
        .healthy(BASE_MODEL)
        .map((w) => w.id)
        .sort(),
    ).toEqual(['wk_1', 'wk_2']);

    proxy.restore();
    // A worker registered by another instance (directly, not through the proxy) shows up again.
    const direct = await openDirect(t);
    await direct.db.insert(workers).values({ ...rowOf('wk_3'), lastHeartbeat: new Date() });
    await until(
      async () => (await reg.refresh()) && reg.healthy(BASE_MODEL).some((w) => w.id === 'wk_3'),
      10_000,
      'recovery',
    );
    expect(reg.lastRefreshError).toBeNull();
    expect(await reg.heartbeat(heartbeatFor('wk_2', 'http://127.0.0.1:9002'))).toEqual({ persisted: true });
    expect((await direct.db.select().from(workers)).map((w) => w.id).sort()).toEqual(['wk_1', 'wk_2', 'wk_3']);
    await direct.pool.end();
    await reg.close();
  });
});

async function openDirect(t: PgTestDb) {
  const pg = (await import('pg')).default;
  const { drizzle } = await import('drizzle-orm/node-postgres');
  const schema = await import('../src/db/schema.js');
  const pool = new pg.Pool({ connectionString: t.url() });
  return { pool, db: drizzle(pool, { schema }) };
}
