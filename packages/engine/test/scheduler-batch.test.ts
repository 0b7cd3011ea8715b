// Batch building alone: decode tokens first, prefill chunks under the token budget, chunks cut to
// the free KV blocks, items grouped by adapter slot, prompt logits asked for once.
import { describe, expect, it } from 'vitest';
import { BlockAllocator, ScheduledSequence, buildBatch } from '../src/index.js';
import { greedy } from './helpers/fake-step.js';

function seq(prompt: number[], opts: { maxTokens?: number; slot?: number; logits?: boolean } = {}): ScheduledSequence {
  const s = new ScheduledSequence({
    adapter: opts.slot !== undefined && opts.slot >= 0 ? `a${opts.slot}` : undefined,
    prompt,
    sampling: greedy(opts.maxTokens ?? 4),
    promptLogits: opts.logits === true,
  });
  s.adapterSlot = opts.slot ?? -1;
  return s;
}

/** A sequence that has prefilled its prompt and sampled `sampled` (its blocks cover the prompt). */
function decoding(kv: BlockAllocator, prompt: number[], sampled: number[], slot = -1): ScheduledSequence {
  const s = seq(prompt, { slot });
  kv.ensure(s.blocks, prompt.length + sampled.length - 1);
  s.computed = prompt.length + sampled.length - 1;
  s.sampled.push(...sampled);
  return s;
}

const range = (n: number, from = 1): number[] => Array.from({ length: n }, (_, i) => from + i);

describe('buildBatch', () => {
  it('puts one decode token per decoding sequence first, then prefill chunks under the budget', () => {
    const kv = new BlockAllocator(64, 4);
    const d = decoding(kv, [1, 2], [9]);
    const p1 = seq(range(10)),
      p2 = seq(range(10));
    const b = buildBatch([p1, d, p2], 8, kv);
    expect(b.decodeTokens).toBe(1);
    expect(b.prefillTokens).toBe(7);
    const [decode, chunk] = [
      b.items.find((it) => it.tokens.length === 1)!,
      b.items.find((it) => it.tokens.length > 1)!,
    ];
    expect(Array.from(decode.tokens)).toEqual([9]);
    expect(decode.startPosition).toBe(2);
    expect(decode.sample).toBe(true);
    expect(decode.draw).toBe(1);
    expect(Array.from(chunk.tokens)).toEqual(range(7));
    expect(chunk.sample).toBe(false); // not the last chunk of the prompt
    expect(b.owners).not.toContain(p2); // budget spent
    expect(p1.blocks).toHaveLength(2); // blocks for the chunk only
  });

  it('the last chunk of a prompt samples; prompt-only requests (max tokens 0) do not', () => {
    const kv = new BlockAllocator(64, 4);
    const s = seq(range(5)),
      z = seq(range(3), { maxTokens: 0, logits: true });
    s.computed = 3;
    kv.ensure(s.blocks, 3);
    const b = buildBatch([s, z], 64, kv);
    const it = b.items[b.owners.indexOf(s)]!;
    expect(Array.from(it.tokens)).toEqual([4, 5]);
    expect(it.startPosition).toBe(3);
    expect(it.sample).toBe(true);
    expect(b.items[b.owners.indexOf(z)]!.sample).toBe(false);
    expect(b.items[b.owners.indexOf(z)]!.allLogits).toBe(true);
  });

  it('cuts prefill chunks to the free KV blocks; a prefill with no block left waits', () => {
    const kv = new BlockAllocator(3, 4);
    const a = seq(range(20)),
      b = seq(range(8));
    const batch = buildBatch([a, b], 64, kv);
    expect(batch.items).toHaveLength(1);
    expect(batch.items[0]!.tokens.length).toBe(12); // 3 blocks of 4
    expect(batch.owners).toEqual([a]);
    expect(kv.freeBlocks).toBe(0);
    // A partly filled block still takes tokens.
    const kv2 = new BlockAllocator(2, 4);
    const c = seq(range(8));
    c.computed = 2;
    kv2.ensure(c.blocks, 2);
    expect(buildBatch([c], 64, kv2).items[0]!.tokens.length).toBe(6);
  });

  it('groups items by adapter slot (base first), stable within a slot, and counts distinct adapters', () => {
    const kv = new BlockAllocator(64, 4);
    const s = [
      seq([1], { slot: 1 }),
      seq([2], { slot: -1 }),
      seq([3], { slot: 0 }),
      seq([4], { slot: 1 }),
      seq([5], { slot: -1 }),
    ];
    const b = buildBatch(s, 64, kv);
    expect(b.items.map((it) => it.adapterSlot)).toEqual([-1, -1, 0, 1, 1]);
    expect(b.items.map((it) => it.tokens[0])).toEqual([2, 5, 3, 1, 4]);
    expect(b.adapters).toBe(2);
  });

  it('after a preemption, prefills the prompt and the sampled tokens, without asking for prompt logits again', () => {
    const kv = new BlockAllocator(64, 4);
    const s = seq([1, 2, 3], { logits: true });
    s.sampled.push(7, 8);
    s.promptLogitRows = 3;
    s.preempt();
    const b = buildBatch([s], 64, kv);
    const it = b.items[0]!;
    expect(Array.from(it.tokens)).toEqual([1, 2, 3, 7, 8]);
    expect(it.allLogits).toBe(false);
    expect(it.sample).toBe(true);
    expect(it.draw).toBe(2); // sampling goes on at the same draw index
  });

  it('skips sequences that stopped generating', () => {
    const kv = new BlockAllocator(64, 4);
    const done = decoding(kv, [1], [2]);
    done.finishWithoutSampling();
    expect(buildBatch([done], 64, kv).items).toEqual([]);
  });
});
