// A least-recently-used cache on one Map (its insertion order is the recency order: a touch moves
// the entry to the end). Limits on the entry count and on a total weight (bytes, usually) are both
// optional. Entries `canEvict` refuses (in use, being read) are skipped by eviction and stay, so
// the cache may sit above a limit until they become evictable; makeRoom() says whether room could
// be made, for callers that must refuse work instead.

export interface LruOptions<K, V> {
  /** At most this many entries (default: no limit). */
  maxEntries?: number;
  /** At most this total weight (default: no limit). */
  maxWeight?: number;
  /** An entry's weight, read once when it is set (default: 0, so only maxEntries limits). */
  weigh?: (value: V, key: K) => number;
  /** False keeps an entry from eviction for now (default: every entry may go). */
  canEvict?: (key: K, value: V) => boolean;
  /** Called for each entry evicted to respect the limits (not for delete() or clear()). */
  onEvict?: (key: K, value: V) => void;
}

export interface Evicted<K, V> {
  key: K;
  value: V;
}

interface Slot<V> {
  value: V;
  weight: number;
}

function checkLimit(name: string, n: number | undefined): number {
  if (n === undefined) return Infinity;
  if (!(n >= 0)) throw new RangeError(`Lru: ${name} ${n} must be a number >= 0`);
  return n;
}

export class Lru<K, V> {
  private readonly slots = new Map<K, Slot<V>>();
  private totalWeight = 0;
  readonly maxEntries: number;
  readonly maxWeight: number;

  constructor(private readonly opts: LruOptions<K, V> = {}) {
    this.maxEntries = checkLimit('maxEntries', opts.maxEntries);
    this.maxWeight = checkLimit('maxWeight', opts.maxWeight);
  }

  get size(): number {
    return this.slots.size;
  }

  /** The sum of the entries' weights. */
  get weight(): number {
    return this.totalWeight;
  }

  has(key: K): boolean {
    return this.slots.has(key);
  }

  /** The value, marked most recently used. */
  get(key: K): V | undefined {
    return this.touch(key) ? this.slots.get(key)!.value : undefined;
  }

  /** The value, leaving its recency as it was. */
  peek(key: K): V | undefined {
    return this.slots.get(key)?.value;
  }

  /** Marks an entry most recently used; false when there is none. */
  touch(key: K): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.slots.delete(key);
    this.slots.set(key, slot);
    return true;
  }

  /**
   * Stores `value` as the most recently used entry (replacing one under the same key), then evicts
   * least recently used entries other than this one until the limits hold or nothing more may go.
   * Returns the evicted entries, oldest first (onEvict has been called for each).
   */
  set(key: K, value: V): Array<Evicted<K, V>> {
    const weight = this.weighOf(key, value);
    this.remove(key);
    this.slots.set(key, { value, weight });
    this.totalWeight += weight;
    return this.evictUntil(() => this.slots.size <= this.maxEntries && this.totalWeight <= this.maxWeight, key);
  }

  /** Removes an entry without calling onEvict; false when there was none. */
  delete(key: K): boolean {
    return this.remove(key) !== undefined;
  }

  /** Whether `count` more entries weighing `weight` in all would fit without evicting anything. */
  fits(count: number, weight = 0): boolean {
    return this.slots.size + count <= this.maxEntries && this.totalWeight + weight <= this.maxWeight;
  }

  /**
   * Evicts least recently used entries until `count` more entries weighing `weight` in all fit.
   * `fits` is false when evicting every evictable entry was not enough (what could go is gone).
   */
  makeRoom(count: number, weight = 0): { fits: boolean; evicted: Array<Evicted<K, V>> } {
    const evicted = this.evictUntil(() => this.fits(count, weight));
    return { fits: this.fits(count, weight), evicted };
  }

  /** Keys, least recently used first. */
  keys(): IterableIterator<K> {
    return this.slots.keys();
  }

  /** Values, least recently used first. */
  *values(): IterableIterator<V> {
    for (const slot of this.slots.values()) yield slot.value;
  }

  /** [key, value] pairs, least recently used first. Deleting during the iteration is safe. */
  *entries(): IterableIterator<[K, V]> {
    for (const [key, slot] of this.slots) yield [key, slot.value];
  }

  /** Removes every entry without calling onEvict. */
  clear(): void {
    this.slots.clear();
    this.totalWeight = 0;
  }

  private weighOf(key: K, value: V): number {
    const w = this.opts.weigh?.(value, key) ?? 0;
    if (!(w >= 0) || !Number.isFinite(w))
      throw new RangeError(`Lru: weight ${w} of an entry must be a finite number >= 0`);
    return w;
  }

  private remove(key: K): Slot<V> | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    this.slots.delete(key);
    this.totalWeight -= slot.weight;
    return slot;
  }

  private evictUntil(done: () => boolean, keep?: K): Array<Evicted<K, V>> {
    const evicted: Array<Evicted<K, V>> = [];
    if (done()) return evicted;
    // Live iteration (Map iterators survive deletes): an entry onEvict touches moves to the end and
    // may be visited again, which is still least recently used first.
    for (const [key, slot] of this.slots) {
      if (done()) break;
      if (key === keep) continue;
      if (this.opts.canEvict !== undefined && !this.opts.canEvict(key, slot.value)) continue;
      this.remove(key);
      evicted.push({ key, value: slot.value });
      this.opts.onEvict?.(key, slot.value);
    }
    return evicted;
  }
}
