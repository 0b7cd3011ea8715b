// Who is calling. Every request looks its key up in Postgres, so a revoked key is refused at once
// on every replica. Only when Postgres cannot be reached does a key verified in the last
// `cacheTtlMs` keep working from memory; a key this process saw revoked or missing never does.
import { Lru, systemClock, type Clock } from '@loraplex/common';
import { eq } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { apiKeys, type Scope } from '../db/schema.js';
import { ApiError, unavailable } from '../errors.js';
import { hashKey, looksLikeKey, sameSecret } from './keys.js';

export interface Principal {
  /** null for the environment's admin key. */
  keyId: string | null;
  /** null: the platform admin. */
  tenantId: string | null;
  scopes: Scope[];
}

export const isPlatformAdmin = (p: Principal): boolean => p.tenantId === null && p.scopes.includes('admin');

export interface AuthenticatorOptions {
  adminKey?: string;
  /** How long a verified key may be served from memory while Postgres is unreachable. */
  cacheTtlMs?: number;
  /** last_used_at is written at most this often per key. */
  lastUsedWriteMs?: number;
  /** Keys remembered (least recently verified go first; default 10,000). */
  cacheMaxKeys?: number;
  /** For the cache's age and last_used_at (default systemClock: last_used_at is a wall-clock time). */
  clock?: Clock;
}

interface Cached {
  principal: Principal;
  verifiedAt: number;
}

export const unauthenticated = (message = 'invalid or missing API key'): ApiError =>
  new ApiError(401, 'invalid_api_key', message);

export class Authenticator {
  /** By key hash. */
  private readonly cache: Lru<string, Cached>;
  /** By key id: when last_used_at was last written. Forgetting one costs at most an extra write. */
  private readonly lastUsedWritten: Lru<string, number>;
  private readonly cacheTtlMs: number;
  private readonly lastUsedWriteMs: number;
  private readonly clock: Clock;

  constructor(
    private readonly db: Db,
    private readonly opts: AuthenticatorOptions = {},
  ) {
    this.cacheTtlMs = opts.cacheTtlMs ?? 60_000;
    this.lastUsedWriteMs = opts.lastUsedWriteMs ?? 60_000;
    this.clock = opts.clock ?? systemClock;
    const maxEntries = opts.cacheMaxKeys ?? 10_000;
    this.cache = new Lru({ maxEntries });
    this.lastUsedWritten = new Lru({ maxEntries });
  }

  /** The principal for an Authorization header value, or a 401 ApiError. */
  async verify(authorization: string | undefined): Promise<Principal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw unauthenticated('missing API key: send Authorization: Bearer <key>');
    const token = m[1]!;
    if (this.opts.adminKey !== undefined && sameSecret(token, this.opts.adminKey))
      return { keyId: null, tenantId: null, scopes: ['admin'] };
    if (!looksLikeKey(token)) throw unauthenticated();
    const hash = hashKey(token);
    let row: { id: string; tenantId: string | null; scopes: Scope[]; revokedAt: Date | null } | undefined;
    try {
      [row] = await this.db
        .select({ id: apiKeys.id, tenantId: apiKeys.tenantId, scopes: apiKeys.scopes, revokedAt: apiKeys.revokedAt })
        .from(apiKeys)
        .where(eq(apiKeys.hash, hash))
        .limit(1);
    } catch (e) {
      const hit = this.cache.peek(hash);
      if (hit && this.clock.now() - hit.verifiedAt < this.cacheTtlMs) return hit.principal;
      console.warn(`[api] key lookup failed and the key is not cached: ${(e as Error).message}`);
      throw unavailable('the key store is unreachable; retry shortly', 2);
    }
    if (!row || row.revokedAt) {
      this.cache.delete(hash);
      throw unauthenticated(row ? 'this API key has been revoked' : undefined);
    }
    const principal: Principal = { keyId: row.id, tenantId: row.tenantId, scopes: row.scopes };
    this.cache.set(hash, { principal, verifiedAt: this.clock.now() });
    this.touch(row.id);
    return principal;
  }

  /** Drops a revoked key from this process's memory at once. */
  forget(keyId: string): void {
    for (const [h, c] of this.cache.entries()) if (c.principal.keyId === keyId) this.cache.delete(h);
  }

  private touch(keyId: string): void {
    const now = this.clock.now();
    if (now - (this.lastUsedWritten.peek(keyId) ?? -Infinity) < this.lastUsedWriteMs) return;
    this.lastUsedWritten.set(keyId, now);
    this.db
      .update(apiKeys)
      .set({ lastUsedAt: new Date(now) })
      .where(eq(apiKeys.id, keyId))
      .then(
        () => undefined,
        () => this.lastUsedWritten.delete(keyId), // try again on the next request
      );
  }
}
