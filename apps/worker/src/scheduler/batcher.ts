// Builds one step (iteration-level batching): one decode token for every running sequence that has
// finished its prefill, then prefill chunks (chunked prefill) in admission order while the token
// budget and the free KV blocks last. A prefill covers the prompt, or after a preemption the prompt
// and the tokens sampled before it (recompute). Items are ordered by adapter slot so each adapter
// forms one LoRA segment.
import { usesPenalties, type StepItem } from '@loraplex/engine';
import { SequenceError, type Sequence } from './sequence.js';

export interface Batch {
  items: StepItem[];
  owners: Sequence[];
  prefillTokens: number;
  decodeTokens: number;
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

export function buildBatch(running: readonly Sequence[], maxBatchTokens: number, kv: BatchBlocks): Batch {
  const items: StepItem[] = [];
  const owners: Sequence[] = [];
  let budget = maxBatchTokens, prefillTokens = 0, decodeTokens = 0;
  const push = (s: Sequence, tokens: number[], sample: boolean): void => {
    const p = s.params.sampling;
    const prompt = s.params.prompt;
    kv.ensure(s.blocks, s.computed + tokens.length);
    const out = s.sampled;
    items.push({
      tokens, startPosition: s.computed, blockTable: s.blocks, adapterSlot: s.adapterSlot, sample,
      // Prompt logprobs once: a recompute after a preemption does not ask for them again.
      allLogits: s.params.promptLogprobs && s.computed < prompt.length && s.promptLogprobs.length < prompt.length,
      sampling: p, draw: out.length,
      history: sample && usesPenalties(p) ? { tokens: [...prompt, ...out], generatedStart: prompt.length } : undefined,
      mask: null,
    });
    owners.push(s);
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
    push(s, s.tokensAt(s.computed, s.computed + n), last);
    prefillTokens += n;
  }
  const order = items.map((_, i) => i).sort((a, b) => items[a]!.adapterSlot - items[b]!.adapterSlot || a - b);
  return {
    items: order.map((i) => items[i]!),
    owners: order.map((i) => owners[i]!),
    prefillTokens,
    decodeTokens,
    adapters: new Set(items.map((it) => it.adapterSlot).filter((x) => x >= 0)).size,
  };
}

/**
 * Gives the items that sample for a constrained (JSON-mode) sequence their allowed-token mask as a
 * late mask (StepItem.maskLater): the engine starts the forward pass first and asks for the masks
 * while it runs; the grammar engine thread computes them (structured/engine-thread.ts), in parallel
 * with the forward pass and this thread; sampling waits for them. A sequence whose grammar fails
 * is failed and samples unconstrained (its token is dropped: it has ended).
 */
export function withLateMasks(batch: Batch): Batch {
  batch.items.forEach((it, i) => {
    const s = batch.owners[i]!, c = s.params.constraint;
    if (!it.sample || !c) return;
    it.maskLater = () =>
      c.nextMask().catch((e: unknown) => {
        s.fail(new SequenceError(500, 'internal_error', `the grammar failed: ${e instanceof Error ? e.message : String(e)}`));
        return null;
      });
  });
  return batch;
}
