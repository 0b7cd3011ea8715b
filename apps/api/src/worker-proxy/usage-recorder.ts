// Usage events, written to Postgres in batches: record() only queues (the request path never waits
// on the database), a timer or a full batch flushes, and close() flushes what is left. A failed
// write keeps its events queued for the next flush, so an outage delays usage rows but loses none
// (up to maxQueued events, past which the oldest are dropped and counted).
import { usageEvents } from '../db/schema.js';
import type { Db } from './db.js';

export interface UsageEvent {
  tenantId: string;
  adapterId: string | null;
  adapterRef: string | null;
  baseModel: string;
  route: string;
  status: number;
  promptTokens: number;
  completionTokens: number;
  latencyMs: number;
  /** When the request finished; default: when record() was called (not when the batch is written). */
  createdAt?: Date;
}

export interface UsageRecorderOptions {
  flushMs?: number;
  maxBatch?: number;
  /** Events kept in memory while Postgres is unreachable. */
  maxQueued?: number;
  /** How long close() keeps retrying a failing write before giving up. */
  closeTimeoutMs?: number;
}

type Row = typeof usageEvents.$inferInsert;

export class UsageRecorder {
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxQueued: number;
  private readonly closeTimeoutMs: number;
  private queue: Row[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private closed = false;
  /** Events dropped because the queue overflowed during an outage. */
  dropped = 0;
  /** The last write error (null after a successful write). */
  lastError: Error | null = null;

  constructor(
    private readonly db: Db,
    opts: UsageRecorderOptions = {},
  ) {
    this.flushMs = opts.flushMs ?? 1000;
    // 10 columns per row: 1000 rows stay far below Postgres's 65535 bind parameters.
    this.maxBatch = Math.min(opts.maxBatch ?? 500, 5000);
    this.maxQueued = opts.maxQueued ?? 100_000;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 10_000;
  }

  get pending(): number {
    return this.queue.length;
  }

  record(e: UsageEvent): void {
    if (this.closed) throw new Error('usage recorder is closed');
    this.queue.push({
      tenantId: e.tenantId,
      adapterId: e.adapterId,
      adapterRef: e.adapterRef,
      baseModel: e.baseModel,
      route: e.route,
      status: e.status,
      promptTokens: Math.round(e.promptTokens),
      completionTokens: Math.round(e.completionTokens),
      latencyMs: e.latencyMs,
      createdAt: e.createdAt ?? new Date(),
    });
    if (this.queue.length > this.maxQueued) {
      const over = this.queue.length - this.maxQueued;
      this.queue.splice(0, over);
      this.dropped += over;
    }
    if (this.queue.length >= this.maxBatch) void this.flush().catch(() => undefined);
    else
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        void this.flush().catch(() => undefined);
      }, this.flushMs);
  }

  /** Writes every queued event (one flush at a time); rejects, keeping them queued, when a write fails. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => this.flush());
    if (this.queue.length === 0) return Promise.resolve();
    this.flushing = this.writeAll().finally(() => {
      this.flushing = undefined;
      // Events that arrived during a failed write still need a timer.
      if (!this.closed && this.queue.length > 0 && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          void this.flush().catch(() => undefined);
        }, this.flushMs);
      }
    });
    return this.flushing;
  }

  private async writeAll(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        await this.db.insert(usageEvents).values(batch);
        this.lastError = null;
      } catch (e) {
        this.queue.unshift(...batch);
        this.lastError = e instanceof Error ? e : new Error(String(e));
        throw this.lastError;
      }
    }
  }

  /**
   * Stops accepting events and writes the rest, retrying a failing database until closeTimeoutMs;
   * rejects (saying how many events were not written) only if that runs out.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const deadline = performance.now() + this.closeTimeoutMs;
    for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
      try {
        await this.flush();
        return;
      } catch (e) {
        if (performance.now() + delay > deadline)
          throw new Error(`usage recorder closed with ${this.queue.length} events unwritten: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }
}
