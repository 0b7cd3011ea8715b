// Which workers serve a request. Adapter requests use rendezvous (highest random weight) hashing on
// the adapter id: every API instance computes the same order without coordination, an adapter's
// traffic concentrates on the same few workers (so it stays resident there), and adding or removing
// a worker moves only the adapters whose top choice it was.
import { createHash } from 'node:crypto';

export interface Candidate {
  id: string;
  /** Adapters in an engine slot or the worker's host memory. */
  residentAdapters: readonly string[];
  /** Adapters in an engine slot (served without a load); absent from candidates that do not say. */
  slotAdapters?: readonly string[];
}

/** The worker's weight for a key: the first 8 bytes of sha256(workerId \0 key), unsigned. */
export function rendezvousScore(workerId: string, key: string): bigint {
  return createHash('sha256').update(workerId).update('\0').update(key).digest().readBigUInt64BE(0);
}

/** Workers in descending rendezvous score for `key` (ties, practically impossible, by id). */
export function pickWorkers<W extends { id: string }>(workers: readonly W[], key: string): W[] {
  return workers
    .map((w) => ({ w, s: rendezvousScore(w.id, key) }))
    .sort((a, b) => (a.s === b.s ? (a.w.id < b.w.id ? -1 : 1) : a.s > b.s ? -1 : 1))
    .map((x) => x.w);
}

export interface PreferOptions {
  /** How many of the top rendezvous choices compete on residency and load (default 2). */
  topK?: number;
  /** Requests this API instance has in flight per worker id. */
  inFlight?: (workerId: string) => number;
  /**
   * What fetching an adapter the worker does not hold at all costs, in in-flight requests (default 4).
   */
  coldPenalty?: number;
  /**
   * What loading an adapter into an engine slot costs, in in-flight requests (default 4): a worker
   * whose slot holds the adapter wins over one that holds it only in host memory unless it has
   * this many more requests in flight. The load also evicts another adapter from a slot, so a low
   * value lets load spreading copy every adapter onto every worker.
   */
  slotLoadPenalty?: number;
  /**
   * This API instance sent the adapter to the worker since the worker's last heartbeat: it is in a
   * slot there now, though no heartbeat has said so yet.
   */
  sentSinceHeartbeat?: (workerId: string) => boolean;
  /**
   * How many more requests in flight the rendezvous-first worker may have before a later top choice
   * in the same residency class takes the request, per rank (default 2). Without it a difference of
   * one request moves an adapter that is in no slot to another worker, and over time every adapter
   * visits every worker; the rendezvous order alone spreads adapters evenly, so this herds nothing.
   */
  spillMargin?: number;
}

/**
 * Reorders the first `topK` of a rendezvous order by cost = requests in flight + what the worker
 * must do before it can serve the adapter: nothing when it is in a slot, a slot load when it is in
 * host memory, a fetch and a slot load when it is cold. So the worker that serves the adapter from a
 * slot wins unless it is much busier (two-choice load balancing), then a host-resident one, then the
 * rendezvous order; with no load a single client's requests always land on the same worker. The rest
 * of the order (the fallbacks) is kept.
 */
export function preferResident<W extends Candidate>(
  order: readonly W[],
  adapterId: string,
  opts: PreferOptions = {},
): W[] {
  const k = Math.min(opts.topK ?? 2, order.length);
  const inFlight = opts.inFlight ?? (() => 0);
  const coldPenalty = opts.coldPenalty ?? 4;
  const slotLoadPenalty = opts.slotLoadPenalty ?? 4;
  const sent = opts.sentSinceHeartbeat ?? (() => false);
  const spillMargin = opts.spillMargin ?? 2;
  const cost = (w: W): number => {
    const inSlot = w.slotAdapters?.includes(adapterId) === true || sent(w.id);
    return (
      inFlight(w.id) +
      (inSlot ? 0 : slotLoadPenalty) +
      (inSlot || w.residentAdapters.includes(adapterId) ? 0 : coldPenalty)
    );
  };
  const head = order.slice(0, k).map((w, rank) => ({ w, rank, c: cost(w) + rank * spillMargin }));
  head.sort((a, b) => a.c - b.c || a.rank - b.rank);
  return [...head.map((x) => x.w), ...order.slice(k)];
}

/**
 * Base-model requests: every worker holds the base weights, so there is no locality to keep and the
 * choice is the least loaded worker: fewest requests in flight from this API instance (exact, never
 * stale), then the worker's own last reported running + waiting, then random, so that several API
 * instances seeing equal loads do not all herd onto the same worker. The rest follow in that order.
 */
export function leastLoaded<W extends { id: string; load: { running: number; waiting: number } }>(
  workers: readonly W[],
  inFlight: (workerId: string) => number = () => 0,
): W[] {
  return workers
    .map((w) => ({ w, a: inFlight(w.id), b: w.load.running + w.load.waiting, r: Math.random() }))
    .sort((x, y) => x.a - y.a || x.b - y.b || x.r - y.r)
    .map((x) => x.w);
}
