// Builds one step (iteration-level batching): one decode token for every running sequence that has
// finished its prompt, then prompt chunks (chunked prefill) in admission order while the token
// budget lasts. Items are ordered by adapter slot so each adapter forms one LoRA segment.
import { usesPenalties, type StepItem } from '@loraplex/engine';
import { SequenceError, type Sequence } from './sequence.js';

export interface Batch {
  items: StepItem[];
  owners: Sequence[];
  prefillTokens: number;
  decodeTokens: number;
  adapters: number;
}

/** Grows a block table to cover `tokens` positions (the scheduler reserved the blocks at admission). */
export type EnsureBlocks = (table: number[], tokens: number) => void;

export function buildBatch(running: readonly Sequence[], maxBatchTokens: number, ensure: EnsureBlocks): Batch {
  const items: StepItem[] = [];
  const owners: Sequence[] = [];
  let budget = maxBatchTokens, prefillTokens = 0, decodeTokens = 0;
  const push = (s: Sequence, tokens: number[], sample: boolean): void => {
    const p = s.params.sampling;
    ensure(s.blocks, s.computed + tokens.length);
    const out = s.sampled;
    items.push({
      tokens, startPosition: s.computed, blockTable: s.blocks, adapterSlot: s.adapterSlot, sample,
      allLogits: s.params.promptLogprobs && !s.prefilled,
      sampling: p, draw: out.length,
      history: sample && usesPenalties(p) ? { tokens: [...s.params.prompt, ...out], generatedStart: s.params.prompt.length } : undefined,
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
    const prompt = s.params.prompt;
    const n = Math.min(budget, prompt.length - s.computed);
    const last = s.computed + n === prompt.length;
    push(s, prompt.slice(s.computed, s.computed + n), last);
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
 * Fills in the allowed-token masks of the items that sample for a constrained (JSON-mode) sequence.
 * The masks are computed concurrently; a sequence that ended meanwhile (a cancel releases its block
 * table) or whose grammar failed is left out of the step.
 */
export async function withMasks(batch: Batch): Promise<Batch> {
  const jobs: Array<Promise<void>> = [];
  batch.items.forEach((it, i) => {
    const s = batch.owners[i]!, c = s.params.constraint;
    if (!it.sample || !c) return;
    jobs.push(
      c.nextMask().then(
        (mask) => void (it.mask = mask),
        (e: unknown) => s.fail(new SequenceError(500, 'internal_error', `the grammar failed: ${e instanceof Error ? e.message : String(e)}`)),
      ),
    );
  });
  if (jobs.length === 0) return batch;
  await Promise.all(jobs);
  const keep = batch.owners.map((s) => !s.isEnded);
  if (keep.every(Boolean)) return batch;
  return {
    ...batch,
    items: batch.items.filter((_, i) => keep[i]),
    owners: batch.owners.filter((_, i) => keep[i]),
  };
}
