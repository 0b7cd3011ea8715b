// Builds one step (iteration-level batching): one decode token for every running sequence that has
// finished its prefill, then prefill chunks (chunked prefill) in admission order while the token
// budget and the free KV blocks last. A prefill covers the prompt, or after a preemption the prompt
// and the tokens sampled before it (recompute). Items are ordered by adapter slot so each adapter
// forms one LoRA segment.
import { usesPenalties } from '../sampling.js';
import type { StepItem } from '../step.js';
import type { ScheduledSequence } from './sequence.js';

export interface Batch<S extends ScheduledSequence = ScheduledSequence> {
  items: StepItem[];
  owners: S[];
  prefillTokens: number;
  decodeTokens: number;
  /** Distinct adapters in the step. */
  adapters: number;
}

/**
 * The KV allocator as the batcher uses it. The scheduler has already secured the block of every
 * decode token (preempting if it had to); prefill chunks are cut to what is free.
 */
export interface BatchBlocks {
  readonly freeBlocks: number;
  readonly blockSize: number;
  /** Grows a block table to cover `tokens` positions. */
  ensure(table: number[], tokens: number): void;
}

export function buildBatch<S extends ScheduledSequence>(
  running: readonly S[],
  maxBatchTokens: number,
  kv: BatchBlocks,
): Batch<S> {
  // Items grouped by adapter slot as they are made (decodes, then prefills, each in admission order).
  const bySlot = new Map<number, { items: StepItem[]; owners: S[] }>();
  let budget = maxBatchTokens,
    prefillTokens = 0,
    decodeTokens = 0;
  const push = (s: S, tokens: number[], sample: boolean): void => {
    const p = s.sampling;
    const P = s.prompt.length;
    kv.ensure(s.blocks, s.computed + tokens.length);
    const out = s.sampled;
    let group = bySlot.get(s.adapterSlot);
    if (!group) bySlot.set(s.adapterSlot, (group = { items: [], owners: [] }));
    group.items.push({
      tokens,
      startPosition: s.computed,
      blockTable: s.blocks,
      adapterSlot: s.adapterSlot,
      sample,
      // Prompt logits once: a recompute after a preemption does not ask for them again.
      allLogits: s.wantsPromptLogits && s.computed < P && s.promptLogitRows < P,
      sampling: p,
      draw: out.length,
      history: sample && usesPenalties(p) ? { tokens: [...s.prompt, ...out], generatedStart: P } : undefined,
      ...(sample ? s.stepMask() : { mask: null }),
    });
    group.owners.push(s);
    budget -= tokens.length;
  };
  for (const s of running) {
    if (!s.generating || !s.prefilled) continue;
    push(s, [s.sampled[s.sampled.length - 1]!], true);
    decodeTokens++;
  }
  for (const s of running) {
    if (budget <= 0) break;
    if (!s.generating || s.prefilled) continue;
    const room = (s.blocks.length + kv.freeBlocks) * kv.blockSize - s.computed;
    const n = Math.min(budget, s.prefillLength - s.computed, room);
    if (n <= 0) continue; // no free block for it this step: it waits (or is preempted) while others progress
    const last = s.computed + n === s.prefillLength;
    // A request for prompt logits alone (max tokens 0) samples nothing.
    push(s, s.tokensAt(s.computed, s.computed + n), last && s.sampling.maxTokens > 0);
    prefillTokens += n;
  }
  const batch: Batch<S> = { items: [], owners: [], prefillTokens, decodeTokens, adapters: 0 };
  for (const slot of [...bySlot.keys()].sort((a, b) => a - b)) {
    const group = bySlot.get(slot)!;
    batch.items.push(...group.items);
    batch.owners.push(...group.owners);
    if (slot >= 0) batch.adapters++;
  }
  return batch;
}
