// GrammarCache: one compile per key while it is cached, least recently used grammars freed in the
// engine when the cache is full, failures cached as rejections.
import { describe, expect, it } from 'vitest';
import { GrammarCache } from '../src/structured/grammar-cache.js';

describe('GrammarCache', () => {
  it('compiles once per key, frees the least recently used grammar beyond capacity, and keeps failures', async () => {
    const freed: number[] = [];
    const cache = new GrammarCache(2, (id) => freed.push(id));
    let compiles = 0;
    const compile = (id: number) => () => {
      compiles++;
      return Promise.resolve(id);
    };
    expect(await cache.get('a', compile(1))).toBe(1);
    expect(await cache.get('b', compile(2))).toBe(2);
    expect(await cache.get('a', compile(99))).toBe(1); // hit: 'a' is now the most recent
    expect(await cache.get('c', compile(3))).toBe(3); // evicts 'b'
    await Promise.resolve();
    expect(freed).toEqual([2]);
    expect(compiles).toBe(3);
    expect([cache.hits, cache.misses, cache.size]).toEqual([1, 3, 2]);

    const bad = cache.get('bad', () => Promise.reject(new Error('unsupported'))); // evicts 'a'
    await expect(bad).rejects.toThrow('unsupported');
    await expect(cache.get('bad', compile(4))).rejects.toThrow('unsupported');
    expect(freed).toEqual([2, 1]);
    expect(await cache.get('c', compile(5))).toBe(3); // still cached: no compile
    expect(compiles).toBe(3);
  });
});
