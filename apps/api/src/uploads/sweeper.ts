// Removes what failed or interrupted uploads left in the object store. An adapter's files are
// written under adapters/<tenant>/<adapter_id>/ before anything refers to them; the adapter row
// is the commit marker: a prefix is kept while its row is ready, or uploading with an open
// presigned session. Anything else (no row: the upload failed, the API crashed, or the cleanup
// itself failed while the store was down; a failed row) is removed once its newest object is
// older than the grace period, which bounds how long an upload may take. Expired presigned
// sessions are aborted on the same pass. Runs at start and periodically; time comes from `now`.
import { inArray } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { adapters, uploadSessions } from '../db/schema.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { PresignedUploads } from './presigned.js';

export interface SweeperDeps {
  db: Db;
  store: ObjectStore;
  uploads: PresignedUploads;
  /** Objects younger than this are never removed (an upload may still be writing them). */
  graceMs: number;
  now?: () => number;
}

export interface SweepResult {
  /** Adapter prefixes whose objects were removed. */
  removed: string[];
  /** Expired presigned uploads aborted. */
  expiredUploads: number;
}

const ID_BATCH = 500;

export class OrphanSweeper {
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepResult> | undefined;

  constructor(private readonly d: SweeperDeps) {
    this.now = d.now ?? Date.now;
  }

  /** One pass (a pass already running is joined, not doubled). */
  sweep(): Promise<SweepResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<SweepResult> {
    const now = this.now();
    const expiredUploads = await this.d.uploads.sweepExpired(now);
    const newest = new Map<string, { adapterId: string; at: number }>();
    for (const o of await this.d.store.listObjects('adapters/')) {
      const parts = o.key.split('/');
      if (parts.length < 4) continue;
      const prefix = `${parts.slice(0, 3).join('/')}/`;
      const at = o.modifiedAt.getTime();
      const seen = newest.get(prefix);
      if (!seen || seen.at < at) newest.set(prefix, { adapterId: parts[2]!, at });
    }
    const ids = [...new Set([...newest.values()].map((g) => g.adapterId))];
    const status = new Map<string, string>();
    const withSession = new Set<string>();
    for (let i = 0; i < ids.length; i += ID_BATCH) {
      const batch = ids.slice(i, i + ID_BATCH);
      for (const r of await this.d.db
        .select({ id: adapters.id, status: adapters.status })
        .from(adapters)
        .where(inArray(adapters.id, batch)))
        status.set(r.id, r.status);
      for (const r of await this.d.db
        .select({ id: uploadSessions.adapterId })
        .from(uploadSessions)
        .where(inArray(uploadSessions.adapterId, batch)))
        withSession.add(r.id);
    }
    const removed: string[] = [];
    for (const [prefix, g] of newest) {
      const st = status.get(g.adapterId);
      const committed = st === 'ready' || (st === 'uploading' && withSession.has(g.adapterId));
      if (committed || now - g.at < this.d.graceMs) continue;
      await this.d.store.delete(prefix);
      removed.push(prefix);
    }
    return { removed, expiredUploads };
  }

  /** Sweeps now and every `intervalMs`; failures are logged and retried on the next pass. */
  start(intervalMs: number): void {
    const run = (): void => {
      this.sweep().then(
        (r) => {
          if (r.removed.length || r.expiredUploads)
            console.warn(
              `[api] sweeper removed ${r.removed.length} orphaned adapter prefix(es), aborted ${r.expiredUploads} expired upload(s)`,
            );
        },
        (e: Error) => console.warn(`[api] sweeper pass failed (retried in ${intervalMs} ms): ${e.message}`),
      );
    };
    run();
    this.timer = setInterval(run, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }
}
