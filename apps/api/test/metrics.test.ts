// The API's /metrics (issue 12): platform admin key only; requests counted by route, status and
// tenant, with the tenant label bounded (the first LORAPLEX_METRICS_MAX_TENANTS tenants keep their
// id, later ones are 'other'); the router's failed worker attempts counted by reason.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiMetrics, TenantLabels } from '../src/metrics.js';
import type { WorkerRegistry, WorkerRecord } from '../src/worker-proxy/registry.js';
import { Router, type UpstreamError } from '../src/worker-proxy/router.js';
import type { WorkerResponse } from '../src/worker-proxy/worker-http.js';
import {
  ADMIN_KEY,
  call,
  makeTestApp,
  openTestDb,
  seedBaseModel,
  tempDirStore,
  tenantWithKey,
  type TestApp,
  type TestDb,
} from './helpers/setup.js';

let db: TestDb;
let store: Awaited<ReturnType<typeof tempDirStore>>;
let t: TestApp;

beforeAll(async () => {
  db = await openTestDb('postgres');
  store = await tempDirStore();
  t = makeTestApp(db.db, store.store, { metricsMaxTenants: 2 });
  await seedBaseModel(db.db);
});

afterAll(async () => {
  await db?.close();
  await store?.cleanup();
});

/** Value of a sample whose labels include every one of `labels`. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.lastIndexOf('}'));
    if (Object.entries(labels).every(([k, v]) => inside.includes(`${k}="${v}"`)))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

const scrape = async (): Promise<string> => {
  const r = await call(t.app, 'GET', '/metrics', { key: ADMIN_KEY });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toContain('text/plain');
  return r.body as string;
};

describe('API /metrics', () => {
  it('needs the platform admin key: 401 without a key or with a wrong one, 403 for a tenant key', async () => {
    expect((await call(t.app, 'GET', '/metrics')).status).toBe(401);
    expect((await call(t.app, 'GET', '/metrics', { key: 'lpx_nope_nope' })).status).toBe(401);
    const { key } = await tenantWithKey(t.app, 'metrics-auth', ['inference', 'admin']);
    const r = await call(t.app, 'GET', '/metrics', { key });
    expect(r.status).toBe(403);
    expect(r.body.error).toMatchObject({ code: 'insufficient_scope' });
  });

  it('counts inference requests by tenant, status and route; tenants past the cap are "other"', async () => {
    const tenants = await Promise.all(['m-a', 'm-b', 'm-c'].map((n) => tenantWithKey(t.app, n)));
    const body = { model: 'tiny-llama', prompt: 'hi', max_tokens: 2 };
    const before = await scrape();
    // Tenant a: two requests, b and c one each.
    for (const [i, n] of [
      [0, 2],
      [1, 1],
      [2, 1],
    ] as const) {
      for (let k = 0; k < n; k++)
        expect((await call(t.app, 'POST', '/v1/completions', { key: tenants[i]!.key, json: body })).status).toBe(200);
    }
    // A bad request by tenant a: its own status series.
    expect(
      (await call(t.app, 'POST', '/v1/completions', { key: tenants[0]!.key, json: { prompt: 'no model' } })).status,
    ).toBe(400);
    // Refused by the authentication middleware: still the route's series, tenant 'none'.
    expect((await call(t.app, 'POST', '/v1/completions', { json: body })).status).toBe(401);
    const m = await scrape();
    const delta = (labels: Record<string, string>): number =>
      sample(m, 'loraplex_api_requests_total', labels) - sample(before, 'loraplex_api_requests_total', labels);
    const route = '/v1/completions';
    // The cap is 2 and the first test's tenant (its 403) took one place: a takes the second, b and c are 'other'.
    expect(delta({ route, status: '200', tenant: tenants[0]!.tenantId })).toBe(2);
    expect(delta({ route, status: '400', tenant: tenants[0]!.tenantId })).toBe(1);
    expect(delta({ route, status: '200', tenant: 'other' })).toBe(2);
    expect(delta({ route, status: '401', tenant: 'none' })).toBe(1);
    expect(m).not.toContain(tenants[1]!.tenantId);
    expect(m).not.toContain(tenants[2]!.tenantId);
    // Tenants created by the admin; unauthenticated requests are 'none'.
    expect(
      sample(m, 'loraplex_api_requests_total', {
        route: '/v1/tenants',
        method: 'POST',
        status: '201',
        tenant: 'admin',
      }),
    ).toBeGreaterThanOrEqual(4);
    expect(
      sample(m, 'loraplex_api_requests_total', { route: '/metrics', status: '401', tenant: 'none' }),
    ).toBeGreaterThanOrEqual(1);
    expect(sample(m, 'loraplex_api_request_duration_seconds_count', { route, tenant: tenants[0]!.tenantId })).toBe(3);
    // Tenant labels stay bounded: at most the cap, plus other / admin / none.
    const labels = new Set([...m.matchAll(/tenant="([^"]*)"/g)].map((x) => x[1]));
    expect([...labels].filter((l) => !['other', 'admin', 'none'].includes(l!)).length).toBeLessThanOrEqual(2);
    // Unknown paths are one 'unmatched' route, not one series each.
    await call(t.app, 'GET', '/no/such/path/1');
    await call(t.app, 'GET', '/no/such/path/2');
    const after = await scrape();
    expect(after).not.toContain('/no/such/path');
    expect(sample(after, 'loraplex_api_requests_total', { route: 'unmatched', status: '404' })).toBe(2);
  });
});

describe('TenantLabels', () => {
  it("keeps the first N tenants' ids and counts the rest as other, stably", () => {
    const l = new TenantLabels(2);
    expect(['t1', 't2', 't3', 't1', 't4', 't2'].map((x) => l.label(x))).toEqual([
      't1',
      't2',
      'other',
      't1',
      'other',
      't2',
    ]);
    expect(new TenantLabels(0).label('t1')).toBe('other');
  });
});

describe('upstream errors', () => {
  it('counts failed worker attempts by reason', async () => {
    const worker = (id: string): WorkerRecord => ({
      id,
      url: `http://${id}.invalid`,
      baseModel: 'm',
      capacity: { maxAdapters: 1 } as never,
      load: {} as never,
      residentAdapters: [],
      slotAdapters: [],
      draining: false,
      seenAtMs: 0,
    });
    const registry = {
      healthy: () => [worker('w1'), worker('w2'), worker('w3')],
      reportFailure: () => undefined,
    } as unknown as WorkerRegistry;
    const response = (status: number, text: () => Promise<string>): WorkerResponse => ({
      status,
      headers: { 'content-type': 'application/json' },
      text,
      reader: () => {
        throw new Error('unused');
      },
      discard: () => undefined,
    });
    const metrics = new ApiMetrics();
    const seen: Array<[UpstreamError, string]> = [];
    const router = new Router(registry, {
      secret: 's',
      maxAttempts: 3,
      onUpstreamError: (reason, id) => {
        seen.push([reason, id]);
        metrics.upstreamError(reason);
      },
      post: async (url) => {
        if (url.startsWith('http://w1')) throw new Error('ECONNREFUSED');
        if (url.startsWith('http://w2')) return response(503, async () => '');
        return response(200, async () => {
          throw new Error('torn');
        });
      },
    });
    const res = await router.forward({ path: '/v1/completions', body: { model: 'm', prompt: 'x' }, baseModel: 'm' });
    expect(res.status).toBe(503);
    expect(seen.map(([r]) => r).sort()).toEqual(['failed', 'refused', 'unreachable']);
    const m = await metrics.registry.metrics();
    for (const reason of ['unreachable', 'refused', 'failed'])
      expect(sample(m, 'loraplex_api_upstream_errors_total', { reason })).toBe(1);
  });
});
