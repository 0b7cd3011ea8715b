// UsageRecorder: batched writes on PGlite and Postgres, nothing lost on close(), events kept through
// a cut Postgres connection and written once it is back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageEvents } from '../src/db/schema.js';
import { UsageRecorder, type UsageEvent } from '../src/worker-proxy/usage-recorder.js';
import {
  createTenant,
  openPgliteTestDb,
  openPgTestDb,
  PG_PORT,
  type PgTestDb,
  type TestDb,
} from './helpers/routing-db.js';
import { startTcpProxy, type TcpProxy } from './helpers/routing-proxy.js';
import { until } from './helpers/routing-workers.js';

const event = (tenantId: string, i: number): UsageEvent => ({
  tenantId,
  adapterId: i % 2 ? `ad_${i}` : null,
  adapterRef: i % 2 ? `a@${i}` : null,
  baseModel: 'tiny-llama',
  route: '/v1/completions',
  status: 200,
  promptTokens: i,
  completionTokens: 2 * i,
  latencyMs: i + 0.5,
});

describe.each([
  ['PGlite', openPgliteTestDb],
  ['Postgres', () => openPgTestDb()],
] as const)('UsageRecorder on %s', (_, open) => {
  let t: TestDb;
  let tenant: string;
  beforeAll(async () => {
    t = await open();
    tenant = await createTenant(t.db);
  });
  afterAll(async () => {
    await t.close();
  });

  it('writes full batches at once, the rest on its timer, and every field as recorded', async () => {
    await t.db.delete(usageEvents);
    const rec = new UsageRecorder(t.db, { flushMs: 50, maxBatch: 10 });
    const before = new Date(Date.now() - 1000);
    for (let i = 0; i < 25; i++) rec.record(event(tenant, i));
    await until(async () => (await t.db.select().from(usageEvents)).length === 25, 5000, 'timer flush');
    const rows = (await t.db.select().from(usageEvents)).sort((a, b) => a.promptTokens - b.promptTokens);
    rows.forEach((r, i) => {
      expect(r).toMatchObject({ ...event(tenant, i), id: expect.any(Number) });
      expect(r.createdAt.getTime()).toBeGreaterThan(before.getTime());
    });
    expect(rec.pending).toBe(0);
    await rec.close();
  });

  it('close() writes everything still queued, and refuses events afterwards', async () => {
    await t.db.delete(usageEvents);
    const rec = new UsageRecorder(t.db, { flushMs: 60_000, maxBatch: 1000 });
    for (let i = 0; i < 2500; i++) rec.record(event(tenant, i));
    await rec.close();
    expect((await t.db.select().from(usageEvents)).length).toBe(2500);
    expect(() => rec.record(event(tenant, 1))).toThrow(/closed/);
  });

  it('keeps the events of a failed write (a row the database refuses) and reports the error', async () => {
    await t.db.delete(usageEvents);
    const rec = new UsageRecorder(t.db, { flushMs: 60_000, maxBatch: 100, closeTimeoutMs: 200 });
    rec.record(event('tn_does_not_exist', 1)); // violates the tenants foreign key
    await expect(rec.flush()).rejects.toThrow();
    expect(rec.pending).toBe(1);
    expect(rec.lastError).toBeInstanceOf(Error);
    await expect(rec.close()).rejects.toThrow(/1 events unwritten/);
  });
});

describe('UsageRecorder while the Postgres connection is cut', () => {
  let t: PgTestDb;
  let proxy: TcpProxy;
  let tenant: string;
  beforeAll(async () => {
    proxy = await startTcpProxy(PG_PORT);
    t = await openPgTestDb({ port: proxy.port });
    tenant = await createTenant(t.db);
  });
  afterAll(async () => {
    await t.close();
    await proxy.close();
  });

  it('loses nothing: events recorded during the outage are written after it, close() waits for the database', async () => {
    const rec = new UsageRecorder(t.db, { flushMs: 20, maxBatch: 50, closeTimeoutMs: 20_000 });
    for (let i = 0; i < 10; i++) rec.record(event(tenant, i));
    await rec.flush();
    proxy.cut();
    for (let i = 10; i < 130; i++) rec.record(event(tenant, i));
    await expect(rec.flush()).rejects.toThrow();
    expect(rec.pending).toBe(120);
    const closing = rec.close(); // retries while the database is away
    await new Promise((r) => setTimeout(r, 300));
    proxy.restore();
    await closing;
    const rows = await t.db.select().from(usageEvents);
    expect(rows.map((r) => r.promptTokens).sort((a, b) => a - b)).toEqual(Array.from({ length: 130 }, (_, i) => i));
    expect(rec.dropped).toBe(0);
  });
});
