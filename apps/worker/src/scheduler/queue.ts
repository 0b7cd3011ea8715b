// Waiting sequences, one FIFO per adapter (the base model is one more queue).
//
// Fairness policy: admission is round-robin across adapter queues. The cursor walks the queues in
// the order they were created and takes at most one sequence from a queue per turn, then moves on;
// it persists across steps. So with queues A (1000 waiting) and B (1 waiting), B's request is
// admitted within one turn of reaching the head, however deep A is: a popular adapter cannot starve
// a rare one. Within one adapter, order is FIFO. Queues whose adapter is not resident (or is
// draining to make room for another) are skipped for the turn; see AdapterManager for how a
// waiting adapter gets a slot even when all slots are busy.
//
// A preempted sequence (see scheduler.ts) goes back to the front of its adapter's queue and the
// cursor moves to that queue, so it is the next sequence admitted (as vLLM puts preempted requests
// at the front of its waiting queue); it was admitted fairly once already.
import type { Sequence } from './sequence.js';

/** Key of the base model's queue (adapter names are directory names, so they cannot be empty). */
export const BASE_KEY = '';

export class AdapterQueues {
  private readonly queues = new Map<string, Sequence[]>();
  private order: string[] = [];
  private cursor = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(seq: Sequence): void {
    this.queueOf(seq).push(seq);
    this.count++;
  }

  /** Puts a preempted sequence at the front of its adapter's queue and points the cursor there. */
  pushFront(seq: Sequence): void {
    this.queueOf(seq).unshift(seq);
    this.count++;
    this.cursor = this.order.indexOf(seq.params.adapter ?? BASE_KEY);
  }

  private queueOf(seq: Sequence): Sequence[] {
    const key = seq.params.adapter ?? BASE_KEY;
    let q = this.queues.get(key);
    if (!q) {
      q = [];
      this.queues.set(key, q);
      this.order.push(key);
    }
    return q;
  }

  /** Number waiting for one adapter (BASE_KEY for the base model). */
  waiting(key: string): number {
    return this.queues.get(key)?.length ?? 0;
  }

  /** Adapters (not the base) with waiting sequences. */
  adaptersWaiting(): string[] {
    return this.order.filter((k) => k !== BASE_KEY && (this.queues.get(k)?.length ?? 0) > 0);
  }

  remove(seq: Sequence): boolean {
    const key = seq.params.adapter ?? BASE_KEY;
    const q = this.queues.get(key);
    const i = q ? q.indexOf(seq) : -1;
    if (i < 0) return false;
    q!.splice(i, 1);
    this.count--;
    this.prune(key);
    return true;
  }

  /** Removes and returns every sequence waiting for `key`. */
  takeAll(key: string): Sequence[] {
    const q = this.queues.get(key) ?? [];
    this.count -= q.length;
    this.queues.set(key, []);
    this.prune(key);
    return q;
  }

  /**
   * The head of the first eligible queue at or after the cursor (round-robin), without taking it.
   * If the caller cannot admit it (KV cache full), the cursor stays, so that queue goes first next time.
   */
  next(eligible: (key: string) => boolean): { key: string; head: Sequence } | undefined {
    const n = this.order.length;
    for (let i = 0; i < n; i++) {
      const key = this.order[(this.cursor + i) % n]!;
      const head = this.queues.get(key)?.[0];
      if (head && eligible(key)) return { key, head };
    }
    return undefined;
  }

  /** Admits the head of `key` (the one `next` returned) and moves the cursor past its queue. */
  take(key: string): Sequence {
    const q = this.queues.get(key)!;
    const s = q.shift()!;
    this.count--;
    const idx = this.order.indexOf(key);
    this.cursor = idx + 1;
    this.prune(key);
    return s;
  }

  private prune(key: string): void {
    const q = this.queues.get(key);
    if (q && q.length > 0) return;
    const idx = this.order.indexOf(key);
    if (idx < 0) return;
    this.queues.delete(key);
    this.order.splice(idx, 1);
    if (this.cursor > idx) this.cursor--;
    if (this.cursor >= this.order.length) this.cursor = 0;
  }
}
