// The KV block allocator alone: all-or-nothing allocation, growth by positions, release.
import { describe, expect, it } from 'vitest';
import { BlockAllocator } from '../src/index.js';

describe('BlockAllocator', () => {
  it('hands out distinct blocks, refuses more than are free without taking any, and takes them back', () => {
    const kv = new BlockAllocator(4, 16);
    expect(kv.blocksFor(0)).toBe(0);
    expect(kv.blocksFor(16)).toBe(1);
    expect(kv.blocksFor(17)).toBe(2);
    const a = kv.allocate(3);
    expect(new Set(a).size).toBe(3);
    expect(kv.freeBlocks).toBe(1);
    expect(() => kv.allocate(2)).toThrow(/KV cache needs 2 more block/);
    expect(kv.freeBlocks).toBe(1);
    kv.release(a);
    expect(a).toEqual([]); // the table is emptied in place
    expect(kv.freeBlocks).toBe(4);
  });

  it('ensure grows a table to cover positions, only by what is missing', () => {
    const kv = new BlockAllocator(8, 4);
    const t: number[] = [];
    kv.ensure(t, 5);
    expect(t).toHaveLength(2);
    kv.ensure(t, 8);
    expect(t).toHaveLength(2);
    kv.ensure(t, 9);
    expect(t).toHaveLength(3);
    expect(kv.freeBlocks).toBe(5);
  });

  it('refuses to release a block that is not of this cache', () => {
    const kv = new BlockAllocator(2, 4);
    expect(() => kv.release([7])).toThrow(/not a block of this cache/);
  });
});
