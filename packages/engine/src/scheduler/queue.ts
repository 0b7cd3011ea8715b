// Waiting sequences, one FIFO per adapter (the base model is one more queue).
//
// Fairness policy: admission is round-robin across adapter queues. The cursor walks the queues in
// the order they were created and takes at most one sequence from a queue per turn, then moves on;
// it persists across steps. So with queues A (1000 waiting) and B (1 waiting), B's request is
// admitted within one turn of reaching the head, however deep A is: a popular adapter cannot starve
// a rare one. Within one adapter, order is FIFO. Queues whose adapter is not admissible (not
// resident, or draining to make room for another) are skipped for the turn.
//
// A preempted sequence goes back to the front of its adapter's queue and the cursor moves to that
// queue, so it is the next sequence admitted (as vLLM puts preempted requests at the front of its
// waiting queue); it was admitted fairly once already.

/** Key of the base model's queue (adapter names cannot be empty). */
export const BASE_KEY = '';

/** What the queues need of a sequence. */
export interface Queued {
  readonly adapter: string | undefined;
}

const keyOf = (s: Queued): string => s.adapter ?? BASE_KEY;

export class AdapterQueues<S extends Queued> {
  private readonly queues = new Map<string, S[]>();
  private order: string[] = [];
  private cursor = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(seq: S): void {
    this.queueOf(seq).push(seq);
    this.count++;
  }

  /** Puts a preempted sequence at the front of its adapter's queue and points the cursor there. */
  pushFront(seq: S): void {
    this.queueOf(seq).unshift(seq);
    this.count++;
    this.cursor = this.order.indexOf(keyOf(seq));
  }

  private queueOf(seq: S): S[] {
    const key = keyOf(seq);
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

  remove(seq: S): boolean {
    const key = keyOf(seq);
    const q = this.queues.get(key);
    const i = q ? q.indexOf(seq) : -1;
    if (i < 0) return false;
    q!.splice(i, 1);
    this.count--;
    this.prune(key);
    return true;
  }

  /** Removes and returns every sequence waiting for `key`. */
  takeAll(key: string): S[] {
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
  next(eligible: (key: string) => boolean): { key: string; head: S } | undefined {
    const n = this.order.length;
    for (let i = 0; i < n; i++) {
      const key = this.order[(this.cursor + i) % n]!;
      const head = this.queues.get(key)?.[0];
      if (head && eligible(key)) return { key, head };
    }
    return undefined;
  }

  /** Admits the head of `key` (the one `next` returned) and moves the cursor past its queue. */
  take(key: string): S {
    const q = this.queues.get(key)!;
    const s = q.shift()!;
    this.count--;
    this.cursor = this.order.indexOf(key) + 1;
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
