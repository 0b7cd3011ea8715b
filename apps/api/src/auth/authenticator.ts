// Who is calling. Every request looks its key up in Postgres, so a revoked key is refused at once
// on every replica. Only when Postgres cannot be reached does a key verified in the last
// `cacheTtlMs` keep working from memory; a key this process saw revoked or missing never does.
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
}

interface Cached {
  principal: Principal;
  verifiedAt: number;
}

export const unauthenticated = (message = 'invalid or missing API key'): ApiError => new ApiError(401, 'invalid_api_key', message);

export class Authenticator {
  private readonly cache = new Map<string, Cached>();
  private readonly lastUsedWritten = new Map<string, number>();
  private readonly cacheTtlMs: number;
  private readonly lastUsedWriteMs: number;

  constructor(private readonly db: Db, private readonly opts: AuthenticatorOptions = {}) {
    this.cacheTtlMs = opts.cacheTtlMs ?? 60_000;
    this.lastUsedWriteMs = opts.lastUsedWriteMs ?? 60_000;
  }

  /** The principal for an Authorization header value, or a 401 ApiError. */
  async verify(authorization: string | undefined): Promise<Principal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) throw unauthenticated('missing API key: send Authorization: Bearer <key>');
    const token = m[1]!;
    if (this.opts.adminKey !== undefined && sameSecret(token, this.opts.adminKey)) return { keyId: null, tenantId: null, scopes: ['admin'] };
    if (!looksLikeKey(token)) throw unauthenticated();
    const hash = hashKey(token);
    let row: { id: string; tenantId: string | null; scopes: Scope[]; revokedAt: Date | null } | undefined;
    try {
      [row] = await this.db.select({ id: apiKeys.id, tenantId: apiKeys.tenantId, scopes: apiKeys.scopes, revokedAt: apiKeys.revokedAt }).from(apiKeys).where(eq(apiKeys.hash, hash)).limit(1);
    } catch (e) {
      const hit = this.cache.get(hash);
      if (hit && Date.now() - hit.verifiedAt < this.cacheTtlMs) return hit.principal;
      console.warn(`[api] key lookup failed and the key is not cached: ${(e as Error).message}`);
      throw unavailable('the key store is unreachable; retry shortly', 2);
    }
    if (!row || row.revokedAt) {
      this.cache.delete(hash);
      throw unauthenticated(row ? 'this API key has been revoked' : undefined);
    }
    const principal: Principal = { keyId: row.id, tenantId: row.tenantId, scopes: row.scopes };
    this.cache.set(hash, { principal, verifiedAt: Date.now() });
    this.touch(row.id);
    return principal;
  }

  /** Drops a revoked key from this process's memory at once. */
  forget(keyId: string): void {
    for (const [h, c] of this.cache) if (c.principal.keyId === keyId) this.cache.delete(h);
  }

  private touch(keyId: string): void {
    const now = Date.now();
    if (now - (this.lastUsedWritten.get(keyId) ?? 0) < this.lastUsedWriteMs) return;
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
