// Tenants and API keys: created by the admin, shown once, stored as a hash, listed by prefix,
// revoked at once on every replica; scopes enforced.
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../src/auth/keys.js';
import { apiKeys } from '../src/db/schema.js';
import { createKey } from '../src/routes/keys.js';
import {
  ADMIN_KEY,
  BACKENDS,
  call,
  makeTestApp,
  openTestDb,
  tempDirStore,
  tenantWithKey,
  type TestApp,
  type TestDb,
} from './helpers/setup.js';

describe.each(BACKENDS)('tenants and keys (%s)', (backend) => {
  let tdb: TestDb;
  let t: TestApp;
  let replica: TestApp;
  let store: Awaited<ReturnType<typeof tempDirStore>>;

  beforeAll(async () => {
    tdb = await openTestDb(backend);
    store = await tempDirStore();
    t = makeTestApp(tdb.db, store.store);
    // A second API instance on the same database: another replica.
    replica = makeTestApp(tdb.db, store.store);
  });
  afterAll(async () => {
    await tdb?.close();
    await store?.cleanup();
  });

  it('refuses requests without a valid key', async () => {
    expect((await call(t.app, 'GET', '/v1/tenants')).status).toBe(401);
    const bad = await call(t.app, 'GET', '/v1/tenants', { key: 'lpx_00000000_00000000000000000000000000000000' });
    expect(bad.status).toBe(401);
    expect(bad.body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
    expect((await call(t.app, 'GET', '/v1/tenants', { key: 'not a key at all' })).status).toBe(401);
  });

  it('creates and lists tenants (platform admin only), 409 on a duplicate name', async () => {
    const r = await call(t.app, 'POST', '/v1/tenants', { key: ADMIN_KEY, json: { name: 'acme' } });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ object: 'tenant', name: 'acme' });
    expect(r.body.id).toMatch(/^tn_[0-9a-f]{16}$/);
    const dup = await call(t.app, 'POST', '/v1/tenants', { key: ADMIN_KEY, json: { name: 'acme' } });
    expect(dup.status).toBe(409);
    expect(dup.body.error.type).toBe('conflict_error');
    const list = await call(t.app, 'GET', '/v1/tenants', { key: ADMIN_KEY });
    expect(list.body.object).toBe('list');
    expect(list.body.data.map((x: { name: string }) => x.name)).toContain('acme');
  });

  it('shows a key once, stores only its sha256, lists its prefix', async () => {
    const tenant = await call(t.app, 'POST', '/v1/tenants', { key: ADMIN_KEY, json: { name: 'keys-co' } });
    const created = await call(t.app, 'POST', '/v1/keys', {
      key: ADMIN_KEY,
      json: { tenant_id: tenant.body.id, name: 'ci' },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      object: 'api_key',
      name: 'ci',
      scopes: ['inference', 'adapters:write'],
      tenant_id: tenant.body.id,
    });
    expect(created.body.key).toMatch(/^lpx_[0-9a-f]{8}_[0-9a-f]{32}$/);
    expect(created.body.key.slice(4, 12)).toBe(created.body.prefix);

    const [row] = await tdb.db.select().from(apiKeys).where(eq(apiKeys.id, created.body.id));
    expect(row!.hash).toBe(hashKey(created.body.key));
    expect(JSON.stringify(row)).not.toContain(created.body.key.slice(13));

    const list = await call(t.app, 'GET', `/v1/keys?tenant_id=${tenant.body.id}`, { key: ADMIN_KEY });
    expect(list.status).toBe(200);
    const listed = list.body.data.find((k: { id: string }) => k.id === created.body.id);
    expect(listed).toMatchObject({ prefix: created.body.prefix, revoked_at: null });
    expect(listed.key).toBeUndefined();
    expect(JSON.stringify(list.body)).not.toContain(created.body.key);
  });

  it('the platform admin must name the tenant; unknown fields and malformed JSON are 400', async () => {
    const r = await call(t.app, 'POST', '/v1/keys', { key: ADMIN_KEY, json: {} });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('tenant_id_required');
    const unknown = await call(t.app, 'POST', '/v1/tenants', { key: ADMIN_KEY, json: { name: 'x', plan: 'gold' } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.type).toBe('invalid_request_error');
    const malformed = await call(t.app, 'POST', '/v1/tenants', {
      key: ADMIN_KEY,
      body: '{"name": ',
      headers: { 'content-type': 'application/json' },
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.type).toBe('invalid_request_error');
    const badScope = await call(t.app, 'POST', '/v1/keys', {
      key: ADMIN_KEY,
      json: { tenant_id: 'tn_x', scopes: ['root'] },
    });
    expect(badScope.status).toBe(400);
    expect(
      (await call(t.app, 'POST', '/v1/keys', { key: ADMIN_KEY, json: { tenant_id: 'tn_0000000000000000' } })).status,
    ).toBe(404);
  });

  it('revocation is refused at once, on this instance and on another replica', async () => {
    const a = await tenantWithKey(t.app, 'revoke-co');
    expect((await call(t.app, 'GET', '/v1/adapters', { key: a.key })).status).toBe(200);
    expect((await call(replica.app, 'GET', '/v1/adapters', { key: a.key })).status).toBe(200);
    const del = await call(t.app, 'DELETE', `/v1/keys/${a.keyId}`, { key: ADMIN_KEY });
    expect(del.body).toEqual({ id: a.keyId, object: 'api_key', revoked: true });
    const here = await call(t.app, 'GET', '/v1/adapters', { key: a.key });
    expect(here.status).toBe(401);
    expect(here.body.error.message).toMatch(/revoked/);
    expect((await call(replica.app, 'GET', '/v1/adapters', { key: a.key })).status).toBe(401);
    const list = await call(t.app, 'GET', `/v1/keys?tenant_id=${a.tenantId}`, { key: ADMIN_KEY });
    expect(list.body.data[0].revoked_at).not.toBeNull();
  });

  it('scopes: inference-only keys cannot upload or manage keys; tenant admins manage only their own keys', async () => {
    const inf = await tenantWithKey(t.app, 'scoped-co', ['inference']);
    const up = await call(t.app, 'POST', '/v1/adapters?name=x', {
      key: inf.key,
      body: 'x',
      headers: { 'content-type': 'application/zip' },
    });
    expect(up.status).toBe(403);
    expect(up.body.error).toMatchObject({ type: 'permission_error', code: 'insufficient_scope' });
    expect(
      (await call(t.app, 'POST', '/v1/adapters/uploads', { key: inf.key, json: { name: 'x', files: [] } })).status,
    ).toBe(403);
    expect((await call(t.app, 'GET', '/v1/keys', { key: inf.key })).status).toBe(403);
    expect((await call(t.app, 'GET', '/v1/tenants', { key: inf.key })).status).toBe(403);
    expect((await call(t.app, 'GET', '/v1/adapters', { key: inf.key })).status).toBe(200);

    const other = await tenantWithKey(t.app, 'other-co');
    const tadmin = await call(t.app, 'POST', '/v1/keys', {
      key: ADMIN_KEY,
      json: { tenant_id: inf.tenantId, scopes: ['admin'] },
    });
    const k = tadmin.body.key as string;
    const mine = await call(t.app, 'POST', '/v1/keys', { key: k, json: { scopes: ['inference'] } });
    expect(mine.status).toBe(201);
    expect(mine.body.tenant_id).toBe(inf.tenantId);
    expect((await call(t.app, 'POST', '/v1/keys', { key: k, json: { tenant_id: other.tenantId } })).status).toBe(404);
    const listed = await call(t.app, 'GET', '/v1/keys', { key: k });
    expect(listed.body.data.every((x: { tenant_id: string }) => x.tenant_id === inf.tenantId)).toBe(true);
    expect((await call(t.app, 'DELETE', `/v1/keys/${other.keyId}`, { key: k })).status).toBe(404);
    expect((await call(t.app, 'GET', '/v1/adapters', { key: other.key })).status).toBe(200);
    // A tenant admin key is not the platform admin.
    expect((await call(t.app, 'POST', '/v1/tenants', { key: k, json: { name: 'nope' } })).status).toBe(403);
  });

  it('a platform admin key created like `keys create --admin` works and can be revoked', async () => {
    const { key, row } = await createKey(tdb.db, null, ['admin'], 'cli');
    expect((await call(t.app, 'GET', '/v1/tenants', { key })).status).toBe(200);
    expect((await call(t.app, 'DELETE', `/v1/keys/${row.id}`, { key: ADMIN_KEY })).status).toBe(200);
    expect((await call(replica.app, 'GET', '/v1/tenants', { key })).status).toBe(401);
  });
});
