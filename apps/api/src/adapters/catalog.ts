// Adapter rows of one tenant: reference parsing, resolution, listing, versioning and deletion.
// Every lookup is scoped by tenant_id in SQL, so another tenant's adapter (by name, version or id)
// is simply not found. Resolution for inference falls back to a short-lived memory of recent
// answers only while Postgres is unreachable.
import { Lru, systemClock, type Clock } from '@loraplex/common';
import { and, desc, eq, max } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { adapters } from '../db/schema.js';
import { isUniqueViolation } from '../db/unique.js';
import { badRequest, notFound, unavailable } from '../errors.js';
import { ADAPTER_ID } from '../ids.js';

export type AdapterRow = typeof adapters.$inferSelect;

export const ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export type AdapterRef =
  { kind: 'id'; id: string } | { kind: 'name'; name: string } | { kind: 'version'; name: string; version: number };

export function checkAdapterName(name: string): string {
  if (!ADAPTER_NAME.test(name))
    throw badRequest(
      'an adapter name is 1-128 letters, digits or . _ - characters, starting with a letter or digit',
      'invalid_adapter_name',
    );
  if (ADAPTER_ID.test(name))
    throw badRequest('an adapter name may not look like an adapter id (ad_...)', 'invalid_adapter_name');
  return name;
}

export function parseRef(ref: string): AdapterRef | null {
  if (ADAPTER_ID.test(ref)) return { kind: 'id', id: ref };
  const at = ref.lastIndexOf('@');
  if (at < 0) return ADAPTER_NAME.test(ref) ? { kind: 'name', name: ref } : null;
  const name = ref.slice(0, at);
  const v = ref.slice(at + 1);
  if (!ADAPTER_NAME.test(name) || !/^[1-9][0-9]{0,8}$/.test(v)) return null;
  return { kind: 'version', name, version: Number(v) };
}

/** The same message whether the adapter is missing or another tenant's. */
export const adapterNotFound = (ref: string): Error =>
  notFound(
    `adapter ${JSON.stringify(ref.length > 200 ? `${ref.slice(0, 200)}...` : ref)} not found`,
    'adapter_not_found',
  );

/** The public adapter object (contract §3). */
export function adapterJson(a: AdapterRow): Record<string, unknown> {
  return {
    id: a.id,
    object: 'adapter',
    name: a.name,
    version: a.version,
    ref: `${a.name}@${a.version}`,
    base_model: a.baseModel,
    rank: a.rank,
    alpha: a.alpha,
    target_modules: a.targetModules,
    size_bytes: a.sizeBytes,
    sha256: a.sha256,
    status: a.status,
    failure_reason: a.failureReason,
    created_at: a.createdAt.toISOString(),
  };
}

interface CachedResolution {
  row: AdapterRow;
  at: number;
}

export class AdapterCatalog {
  /** By tenant and ref; the least recently resolved go first beyond 10,000. */
  private readonly recent = new Lru<string, CachedResolution>({ maxEntries: 10_000 });

  constructor(
    private readonly db: Db,
    private readonly cacheTtlMs = 60_000,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Rows a ref names inside the tenant: a name gives every version (newest first). */
  async find(tenantId: string, ref: AdapterRef): Promise<AdapterRow[]> {
    const mine = eq(adapters.tenantId, tenantId);
    const q = this.db.select().from(adapters);
    if (ref.kind === 'id') return q.where(and(mine, eq(adapters.id, ref.id)));
    if (ref.kind === 'version')
      return q.where(and(mine, eq(adapters.name, ref.name), eq(adapters.version, ref.version)));
    return q.where(and(mine, eq(adapters.name, ref.name))).orderBy(desc(adapters.version));
  }

  /** One adapter for GET: a bare name is its newest ready version (or newest of any status when none is ready). */
  async get(tenantId: string, refText: string): Promise<AdapterRow> {
    const ref = parseRef(refText);
    if (!ref) throw adapterNotFound(refText);
    const rows = await this.find(tenantId, ref);
    const row = ref.kind === 'name' ? (rows.find((r) => r.status === 'ready') ?? rows[0]) : rows[0];
    if (!row) throw adapterNotFound(refText);
    return row;
  }

  /** The ready adapter an inference request names, served from memory only while Postgres is down. */
  async resolveReady(tenantId: string, refText: string): Promise<AdapterRow> {
    const ref = parseRef(refText);
    if (!ref) throw adapterNotFound(refText);
    const cacheKey = `${tenantId}\n${refText}`;
    let rows: AdapterRow[];
    try {
      rows = await this.find(tenantId, ref);
    } catch (e) {
      const hit = this.recent.peek(cacheKey);
      if (hit && this.clock.now() - hit.at < this.cacheTtlMs) return hit.row;
      console.warn(`[api] adapter lookup failed and is not cached: ${(e as Error).message}`);
      throw unavailable('the adapter catalog is unreachable; retry shortly', 2);
    }
    const row = rows.find((r) => r.status === 'ready');
    if (!row) {
      this.recent.delete(cacheKey);
      if (rows[0])
        throw notFound(
          `adapter ${JSON.stringify(refText)} is not ready (status ${rows[0].status})`,
          'adapter_not_ready',
        );
      throw adapterNotFound(refText);
    }
    this.recent.set(cacheKey, { row, at: this.clock.now() });
    return row;
  }

  async list(tenantId: string): Promise<AdapterRow[]> {
    return this.db
      .select()
      .from(adapters)
      .where(eq(adapters.tenantId, tenantId))
      .orderBy(adapters.name, adapters.version);
  }

  async readyList(tenantId: string): Promise<AdapterRow[]> {
    return (await this.list(tenantId)).filter((a) => a.status === 'ready');
  }

  async nextVersion(tenantId: string, name: string): Promise<number> {
    const [r] = await this.db
      .select({ v: max(adapters.version) })
      .from(adapters)
      .where(and(eq(adapters.tenantId, tenantId), eq(adapters.name, name)));
    return (r?.v ?? 0) + 1;
  }

  /**
   * Inserts a new version of `name`, retrying the version number when a concurrent upload took it
   * (the unique index on tenant, name, version decides).
   */
  async insertNextVersion(row: Omit<typeof adapters.$inferInsert, 'version'>): Promise<AdapterRow> {
    for (let attempt = 0; ; attempt++) {
      const version = await this.nextVersion(row.tenantId, row.name);
      try {
        const [out] = await this.db
          .insert(adapters)
          .values({ ...row, version })
          .returning();
        return out!;
      } catch (e) {
        if (attempt < 5 && isUniqueViolation(e)) continue;
        throw e;
      }
    }
  }

  async deleteRows(tenantId: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      await this.db.delete(adapters).where(and(eq(adapters.tenantId, tenantId), eq(adapters.id, id)));
      for (const [k, v] of this.recent.entries()) if (v.row.id === id) this.recent.delete(k);
    }
  }
}
