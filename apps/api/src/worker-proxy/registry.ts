// Workers and base models as the API sees them. Heartbeats are written to Postgres (so every API
// instance sees every worker) and also applied to this instance's memory at once; reads come from
// memory, refreshed from Postgres in the background every ~refreshMs. While Postgres is down the
// cache keeps serving, and heartbeats that reach this instance keep their workers healthy.
//
// Staleness is judged on this process's clock only: a row's age is computed by Postgres
// (now() - last_heartbeat) and turned into a local "seen at" time, so clock skew between the
// database and the API never makes a live worker look stale.
import { monotonicClock, type Clock } from '@loraplex/common';
import { sql } from 'drizzle-orm';
import {
  baseModels as baseModelsTable,
  workers as workersTable,
  type WorkerCapacity,
  type WorkerLoad,
} from '../db/schema.js';
import type { Db } from './db.js';
import { parseHeartbeat, residencyOf, type HeartbeatBody } from './heartbeat-schema.js';

export interface WorkerRecord {
  id: string;
  url: string;
  baseModel: string;
  capacity: WorkerCapacity;
  load: WorkerLoad;
  /** Adapters in an engine slot or the host tier. */
  residentAdapters: string[];
  /** Adapters in an engine slot (a subset of residentAdapters): served without a load. */
  slotAdapters: string[];
  draining: boolean;
  /** The registry's clock reading (RegistryOptions.clock) at the newest heartbeat known. */
  seenAtMs: number;
}

export interface BaseModelRecord {
  id: string;
  config: Record<string, unknown>;
  maxLoraRank: number;
}

export interface RegistryOptions {
  /** A worker is healthy while its last heartbeat is younger than this (contract: 3 × interval). */
  staleAfterMs?: number;
  /** How old the cache may get before a read starts a background refresh. */
  refreshMs?: number;
  /** A refresh that takes longer is abandoned (the cache keeps serving). */
  queryTimeoutMs?: number;
  /** base_models rows are rewritten at most this often when their content has not changed. */
  baseModelWriteMs?: number;
  /** This process's clock for heartbeat ages and refresh intervals (default monotonicClock; tests drive one). */
  clock?: Clock;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>(
    (_, rej) => (timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms)),
  );
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export class WorkerRegistry {
  private readonly staleAfterMs: number;
  private readonly refreshMs: number;
  private readonly queryTimeoutMs: number;
  private readonly baseModelWriteMs: number;
  private readonly clock: Clock;
  private workers = new Map<string, WorkerRecord>();
  private models = new Map<string, BaseModelRecord & { json: string; writtenAtMs: number }>();
  /** Workers this instance failed to reach, with when: excluded until a newer heartbeat. */
  private readonly failedAt = new Map<string, number>();
  private refreshedAtMs = -Infinity;
  private inflight: Promise<boolean> | undefined;
  private closed = false;
  /** The last refresh error (null after a successful refresh): for health reporting and tests. */
  lastRefreshError: Error | null = null;

  constructor(
    private readonly db: Db,
    opts: RegistryOptions = {},
  ) {
    this.staleAfterMs = opts.staleAfterMs ?? 6000;
    this.refreshMs = opts.refreshMs ?? 500;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 2000;
    this.baseModelWriteMs = opts.baseModelWriteMs ?? 60_000;
    this.clock = opts.clock ?? monotonicClock;
  }

  /**
   * Records a heartbeat: memory first (so this instance routes to the worker at once, even while
   * Postgres is down), then Postgres. Throws HeartbeatError (400) for a malformed body; a database
   * failure is not the worker's fault and resolves `{ persisted: false }`.
   */
  async heartbeat(body: unknown): Promise<{ persisted: boolean }> {
    const hb = parseHeartbeat(body);
    const seenAtMs = this.clock.now();
    this.workers.set(hb.id, toRecord(hb, seenAtMs));
    const modelJson = JSON.stringify(hb.model_config);
    const known = this.models.get(hb.base_model);
    const writeModel =
      !known ||
      known.json !== modelJson ||
      known.maxLoraRank !== hb.max_lora_rank ||
      seenAtMs - known.writtenAtMs > this.baseModelWriteMs;
    if (!known || writeModel)
      this.models.set(hb.base_model, {
        id: hb.base_model,
        config: hb.model_config,
        maxLoraRank: hb.max_lora_rank,
        json: modelJson,
        writtenAtMs: known?.writtenAtMs ?? -Infinity,
      });
    try {
      await withTimeout(this.persist(hb, writeModel), this.queryTimeoutMs, 'heartbeat write');
      if (writeModel) this.models.get(hb.base_model)!.writtenAtMs = seenAtMs;
      return { persisted: true };
    } catch (e) {
      this.lastRefreshError = e as Error;
      return { persisted: false };
    }
  }

  private async persist(hb: HeartbeatBody, writeModel: boolean): Promise<void> {
    const { slot, resident } = residencyOf(hb);
    const row = {
      id: hb.id,
      url: hb.url,
      baseModel: hb.base_model,
      capacity: hb.capacity,
      load: hb.load,
      residentAdapters: resident,
      slotAdapters: slot,
      draining: hb.draining,
      lastHeartbeat: sql`now()`,
    };
    await this.db
      .insert(workersTable)
      .values(row)
      .onConflictDoUpdate({
        target: workersTable.id,
        set: {
          url: sql`excluded.url`,
          baseModel: sql`excluded.base_model`,
          capacity: sql`excluded.capacity`,
          load: sql`excluded.load`,
          residentAdapters: sql`excluded.resident_adapters`,
          slotAdapters: sql`excluded.slot_adapters`,
          draining: sql`excluded.draining`,
          lastHeartbeat: sql`now()`,
        },
      });
    if (writeModel) {
      await this.db
        .insert(baseModelsTable)
        .values({ id: hb.base_model, config: hb.model_config, maxLoraRank: hb.max_lora_rank })
        .onConflictDoUpdate({
          target: baseModelsTable.id,
          set: { config: sql`excluded.config`, maxLoraRank: sql`excluded.max_lora_rank`, updatedAt: sql`now()` },
        });
    }
  }

  /** Healthy workers serving `baseModel`: fresh heartbeat, not draining, not failed since. */
  healthy(baseModel: string): WorkerRecord[] {
    this.maybeRefresh();
    const t = this.clock.now();
    const out: WorkerRecord[] = [];
    for (const w of this.workers.values()) {
      if (w.baseModel !== baseModel || w.draining || t - w.seenAtMs >= this.staleAfterMs) continue;
      const failed = this.failedAt.get(w.id);
      if (failed !== undefined && failed >= w.seenAtMs) continue;
      out.push(w);
    }
    return out;
  }

  /** Base models any worker has reported (kept after their workers leave: adapters refer to them). */
  baseModels(): BaseModelRecord[] {
    this.maybeRefresh();
    return [...this.models.values()].map(({ id, config, maxLoraRank }) => ({ id, config, maxLoraRank }));
  }

  /** Base models that have a healthy worker right now. */
  servedBaseModels(): string[] {
    return [...new Set([...this.workers.values()].map((w) => w.baseModel))].filter((m) => this.healthy(m).length > 0);
  }

  /**
   * The router could not reach this worker: leave it out until a heartbeat newer than now shows
   * it is back, instead of waiting for the heartbeat to go stale.
   */
  reportFailure(workerId: string): void {
    this.failedAt.set(workerId, this.clock.now());
  }

  private maybeRefresh(): void {
    if (this.closed || this.inflight || this.clock.now() - this.refreshedAtMs < this.refreshMs) return;
    void this.refresh();
  }

  /** Reloads workers and base models from Postgres; false (cache kept) when that fails. */
  refresh(): Promise<boolean> {
    if (this.inflight) return this.inflight;
    const started = this.clock.now();
    this.inflight = withTimeout(this.load(started), this.queryTimeoutMs, 'registry refresh')
      .then(() => {
        this.lastRefreshError = null;
        return true;
      })
      .catch((e: unknown) => {
        this.lastRefreshError = e instanceof Error ? e : new Error(String(e));
        return false;
      })
      .finally(() => {
        // Failed refreshes also wait refreshMs: a down database is not hammered by every request.
        this.refreshedAtMs = this.clock.now();
        this.inflight = undefined;
      });
    return this.inflight;
  }

  private async load(started: number): Promise<void> {
    const horizonMs = Math.max(this.staleAfterMs * 10, 60_000);
    const rows = await this.db
      .select({
        id: workersTable.id,
        url: workersTable.url,
        baseModel: workersTable.baseModel,
        capacity: workersTable.capacity,
        load: workersTable.load,
        residentAdapters: workersTable.residentAdapters,
        slotAdapters: workersTable.slotAdapters,
        draining: workersTable.draining,
        ageMs: sql<number>`(extract(epoch from (now() - ${workersTable.lastHeartbeat})) * 1000)::float8`,
      })
      .from(workersTable)
      .where(sql`${workersTable.lastHeartbeat} > now() - (${horizonMs} * interval '1 millisecond')`);
    const models = await this.db.select().from(baseModelsTable);
    const next = new Map<string, WorkerRecord>();
    for (const r of rows) {
      const seenAtMs = started - Math.max(0, Number(r.ageMs));
      const local = this.workers.get(r.id);
      next.set(r.id, local && local.seenAtMs >= seenAtMs ? local : { ...r, url: r.url.replace(/\/+$/, ''), seenAtMs });
    }
    // Heartbeats this instance received but could not persist stay while they are fresh.
    const t = this.clock.now();
    for (const w of this.workers.values()) if (!next.has(w.id) && t - w.seenAtMs < this.staleAfterMs) next.set(w.id, w);
    this.workers = next;
    for (const m of models) {
      const json = JSON.stringify(m.config);
      const known = this.models.get(m.id);
      if (!known || known.json !== json || known.maxLoraRank !== m.maxLoraRank)
        this.models.set(m.id, {
          id: m.id,
          config: m.config,
          maxLoraRank: m.maxLoraRank,
          json,
          writtenAtMs: known?.writtenAtMs ?? -Infinity,
        });
    }
    for (const [id, at] of this.failedAt) if (t - at > horizonMs) this.failedAt.delete(id);
  }

  /** Stops background refreshes (waits for one in flight). */
  async close(): Promise<void> {
    this.closed = true;
    await this.inflight;
  }
}

function toRecord(hb: HeartbeatBody, seenAtMs: number): WorkerRecord {
  const { slot, resident } = residencyOf(hb);
  return {
    id: hb.id,
    url: hb.url.replace(/\/+$/, ''),
    baseModel: hb.base_model,
    capacity: hb.capacity,
    load: hb.load,
    residentAdapters: resident,
    slotAdapters: slot,
    draining: hb.draining,
    seenAtMs,
  };
}
