// Lru: recency order, count and weight limits, entries kept from eviction, makeRoom for callers
// that refuse work, and the eviction callback.
import { describe, expect, it } from 'vitest';
import { Lru, type Evicted } from '../src/lru.js';

const keysOf = <K, V>(l: Lru<K, V>): K[] => [...l.keys()];
const evictedKeys = <K, V>(e: Array<Evicted<K, V>>): K[] => e.map((x) => x.key);

describe('Lru', () => {
  it('evicts the least recently used entry beyond maxEntries; get() and touch() refresh, peek() does not', () => {
    const l = new Lru<string, number>({ maxEntries: 3 });
    for (const [k, v] of [
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ] as const)
      expect(l.set(k, v)).toEqual([]);
    expect(l.get('a')).toBe(1);
    expect(l.peek('b')).toBe(2);
    expect(keysOf(l)).toEqual(['b', 'c', 'a']);
    expect(l.set('d', 4)).toEqual([{ key: 'b', value: 2 }]);
    expect(l.touch('c')).toBe(true);
    expect(l.touch('zz')).toBe(false);
    expect(evictedKeys(l.set('e', 5))).toEqual(['a']);
    expect([...l.entries()]).toEqual([
      ['d', 4],
      ['c', 3],
      ['e', 5],
    ]);
    expect([...l.values()]).toEqual([4, 3, 5]);
    expect(l.get('a')).toBeUndefined();
    expect(l.size).toBe(3);
  });

  it('replacing a key makes it most recent and re-weighs it', () => {
    const l = new Lru<string, { bytes: number }>({ maxWeight: 10, weigh: (v) => v.bytes });
    l.set('a', { bytes: 4 });
    l.set('b', { bytes: 4 });
    expect(l.weight).toBe(8);
    expect(l.set('a', { bytes: 7 })).toEqual([{ key: 'b', value: { bytes: 4 } }]);
    expect(l.weight).toBe(7);
    expect(keysOf(l)).toEqual(['a']);
  });

  it('keeps both limits: count and weight', () => {
    const l = new Lru<string, number>({ maxEntries: 3, maxWeight: 10, weigh: (v) => v });
    l.set('a', 2);
    l.set('b', 2);
    l.set('c', 2);
    expect(evictedKeys(l.set('d', 1))).toEqual(['a']); // count
    expect(evictedKeys(l.set('e', 8))).toEqual(['b', 'c']); // weight: 2 + 1 + 8 > 10, then 1 + 8
    expect(l.weight).toBe(9);
    expect(keysOf(l)).toEqual(['d', 'e']);
  });

  it('never evicts the entry just set, even when it alone exceeds maxWeight', () => {
    const l = new Lru<string, number>({ maxWeight: 5, weigh: (v) => v });
    l.set('small', 1);
    expect(evictedKeys(l.set('huge', 9))).toEqual(['small']);
    expect(keysOf(l)).toEqual(['huge']);
    expect(l.weight).toBe(9);
  });

  it('skips entries canEvict refuses, and stays over its limit while only those are left', () => {
    const pinned = new Set(['a']);
    const l = new Lru<string, number>({ maxEntries: 2, canEvict: (k) => !pinned.has(k) });
    l.set('a', 1);
    l.set('b', 2);
    expect(evictedKeys(l.set('c', 3))).toEqual(['b']);
    pinned.add('c');
    expect(l.set('d', 4)).toEqual([]);
    expect(keysOf(l)).toEqual(['a', 'c', 'd']);
    pinned.clear();
    expect(evictedKeys(l.set('e', 5))).toEqual(['a', 'c']);
  });

  it('calls onEvict for limit evictions, not for delete() or clear()', () => {
    const seen: string[] = [];
    const l = new Lru<string, number>({ maxEntries: 1, onEvict: (k, v) => seen.push(`${k}=${v}`) });
    l.set('a', 1);
    l.set('b', 2);
    expect(l.delete('b')).toBe(true);
    expect(l.delete('b')).toBe(false);
    l.set('c', 3);
    l.clear();
    expect(seen).toEqual(['a=1']);
    expect(l.size).toBe(0);
    expect(l.weight).toBe(0);
  });

  it('makeRoom() evicts until more entries fit, or says they cannot after evicting what may go', () => {
    const busy = new Set<string>();
    const l = new Lru<string, number>({ maxEntries: 3, maxWeight: 10, weigh: (v) => v, canEvict: (k) => !busy.has(k) });
    l.set('a', 3);
    l.set('b', 3);
    l.set('c', 3);
    expect(l.fits(1, 1)).toBe(false);
    expect(l.makeRoom(0, 0)).toEqual({ fits: true, evicted: [] });
    const r = l.makeRoom(1, 5);
    expect(r.fits).toBe(true);
    expect(evictedKeys(r.evicted)).toEqual(['a', 'b']); // one for the count would do; the weight needs two
    busy.add('c');
    const refused = l.makeRoom(1, 8);
    expect(refused).toEqual({ fits: false, evicted: [] });
    busy.clear();
    expect(l.makeRoom(1, 11)).toEqual({ fits: false, evicted: [{ key: 'c', value: 3 }] });
    expect(l.size).toBe(0);
  });

  it('is unbounded without limits, keeps undefined values, and refuses bad limits and weights', () => {
    const l = new Lru<number, undefined>();
    for (let i = 0; i < 1000; i++) l.set(i, undefined);
    expect(l.size).toBe(1000);
    expect(l.has(0)).toBe(true);
    expect(l.touch(0)).toBe(true);
    expect(keysOf(l).at(-1)).toBe(0);
    expect(() => new Lru({ maxEntries: -1 })).toThrow(RangeError);
    expect(() => new Lru({ maxWeight: Number.NaN })).toThrow(RangeError);
    const w = new Lru<string, number>({ weigh: (v) => v });
    expect(() => w.set('x', -1)).toThrow(RangeError);
    expect(() => w.set('x', Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(w.size).toBe(0);
  });

  it('deleting entries while iterating entries() visits the rest', () => {
    const l = new Lru<string, number>();
    for (const k of ['a', 'b', 'c', 'd']) l.set(k, k.charCodeAt(0));
    const visited: string[] = [];
    for (const [k] of l.entries()) {
      visited.push(k);
      if (k === 'a' || k === 'c') l.delete(k);
    }
    expect(visited).toEqual(['a', 'b', 'c', 'd']);
    expect(keysOf(l)).toEqual(['b', 'd']);
  });
});
