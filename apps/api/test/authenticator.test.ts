// The key cache on an injected clock: a verified key is served from memory while the key store is
// down for cacheTtlMs and no longer, the memory holds at most cacheMaxKeys (least recently verified
// go first), and last_used_at is written at most once per lastUsedWriteMs per key.
import { ManualClock } from '@loraplex/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../src/auth/authenticator.js';
import { generateKey } from '../src/auth/keys.js';
import type { Db } from '../src/db/client.js';
import { apiKeys, tenants } from '../src/db/schema.js';
import { ApiError } from '../src/errors.js';
import { openPgliteTestDb, type TestDb } from './helpers/routing-db.js';

let t: TestDb;
beforeAll(async () => {
  t = await openPgliteTestDb();
  await t.db.insert(tenants).values({ id: 'tn_1', name: 'clocked' });
});
afterAll(async () => {
  await t.close();
});

/** The test database, whose lookups fail while `down`, counting last_used_at writes. */
function withOutage() {
  const state = { down: false, lastUsedWrites: 0 };
  const db = new Proxy(t.db as unknown as Db, {
    get(target, prop, receiver) {
      if (prop === 'select' && state.down)
        return () => {
          throw new Error('connection refused');
        };
      if (prop === 'update') state.lastUsedWrites++;
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  return { db, state };
}

let keyIds = 0;
async function newKey() {
  const k = generateKey();
  const id = `key_${++keyIds}`;
  await t.db.insert(apiKeys).values({ id, tenantId: 'tn_1', prefix: k.prefix, hash: k.hash, scopes: ['inference'] });
  return { ...k, id };
}

const bearer = (key: string): string => `Bearer ${key}`;

describe('Authenticator on an injected clock', () => {
  it('serves a verified key from memory during an outage for cacheTtlMs, then answers 503', async () => {
    const k = await newKey();
    const { db, state } = withOutage();
    const clock = new ManualClock(1_700_000_000_000);
    const auth = new Authenticator(db, { cacheTtlMs: 1500, clock });
    expect((await auth.verify(bearer(k.key))).keyId).toBe(k.id);
    state.down = true;
    clock.advance(1499);
    expect((await auth.verify(bearer(k.key))).keyId).toBe(k.id);
    clock.advance(1);
    const err = await auth.verify(bearer(k.key)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(503);
  });

  it('remembers at most cacheMaxKeys, dropping the least recently verified', async () => {
    const ks = [await newKey(), await newKey(), await newKey()];
    const { db, state } = withOutage();
    const auth = new Authenticator(db, { cacheMaxKeys: 2, clock: new ManualClock(1_700_000_000_000) });
    for (const k of [ks[0]!, ks[1]!, ks[0]!, ks[2]!]) await auth.verify(bearer(k.key)); // ks[1] is the least recent
    state.down = true;
    expect((await auth.verify(bearer(ks[0]!.key))).keyId).toBe(ks[0]!.id);
    expect((await auth.verify(bearer(ks[2]!.key))).keyId).toBe(ks[2]!.id);
    await expect(auth.verify(bearer(ks[1]!.key))).rejects.toMatchObject({ status: 503 });
  });

  it('writes last_used_at at most once per lastUsedWriteMs per key', async () => {
    const k = await newKey();
    const { db, state } = withOutage();
    const clock = new ManualClock(1_700_000_000_000);
    const auth = new Authenticator(db, { lastUsedWriteMs: 60_000, clock });
    await auth.verify(bearer(k.key));
    await auth.verify(bearer(k.key));
    expect(state.lastUsedWrites).toBe(1);
    clock.advance(59_999);
    await auth.verify(bearer(k.key));
    expect(state.lastUsedWrites).toBe(1);
    clock.advance(1);
    await auth.verify(bearer(k.key));
    expect(state.lastUsedWrites).toBe(2);
  });
});
