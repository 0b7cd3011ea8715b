// Engine.generate's loop: a small iteration-level scheduler over the step API. All requests of one
// call share every step: decode tokens first, then prefill chunks under a token budget. KV blocks
// for a request's whole length are reserved when it is admitted, so a running request never runs
// out of blocks; requests that do not fit yet wait for others to finish.
import type { BlockAllocator } from './kv-cache.js';
import { EngineError } from './errors.js';
import type { ResolvedSampling } from './sampling.js';
import { usesPenalties } from './sampling.js';
import type { StepItem, StepItemResult, TopLogprob } from './step.js';

export type FinishReason = 'length' | 'stop' | 'eos';

/** Constrains decoding (JSON mode): a bitmask of allowed tokens before each draw. */
export interface TokenConstraint {
  /** Allowed-token bitmask for the next draw (ceil(vocab/32) words), or null for any token. */
  nextMask(): Uint32Array | null;
  /** Called with every token drawn. */
  accept(token: number): void;
  /** True when the constrained output is complete (generation then stops with 'stop'). */
  isTerminated?(): boolean;
}

export interface TokenLogprob { token: number; logprob: number; top: TopLogprob[] }

export interface SequenceResult {
  tokens: number[];
  finishReason: FinishReason;
  promptLogits?: Float32Array;
  logprobs?: TokenLogprob[];
}

export interface SequenceRequest {
  prompt: number[];
  adapterSlot: number;
  sampling: ResolvedSampling;
  returnPromptLogits: boolean;
  constraint?: TokenConstraint;
}

interface Seq {
  req: SequenceRequest;
  blocks: number[];
  computed: number;               // positions whose K/V are in the cache
  output: number[];
  logitChunks: Float32Array[];
  logprobs: TokenLogprob[];
  finish?: FinishReason;
}

export interface LoopContext {
  vocab: number;
  maxPositions: number;
  eos: Set<number>;
  blocks: BlockAllocator;
  maxBatchTokens: number;
  runStep(items: StepItem[]): Promise<StepItemResult[]>;
}

function checkFinish(s: Seq, tok: number, ctx: LoopContext): FinishReason | undefined {
  const p = s.req.sampling;
  if (!p.ignoreEos && ctx.eos.has(tok)) return 'eos';
  if (p.stopTokenIds.includes(tok)) return 'stop';
  if (s.req.constraint?.isTerminated?.()) return 'stop';
  if (s.output.length >= p.maxTokens) return 'length';
  if (s.req.prompt.length + s.output.length >= ctx.maxPositions) return 'length';
  return undefined;
}

export async function runGeneration(reqs: SequenceRequest[], ctx: LoopContext): Promise<SequenceResult[]> {
  const seqs: Seq[] = reqs.map((req) => ({ req, blocks: [], computed: 0, output: [], logitChunks: [], logprobs: [] }));
  for (const s of seqs) {
    const total = s.req.prompt.length + s.req.sampling.maxTokens;
    if (s.req.prompt.length === 0) throw new EngineError('INVALID_ARGUMENT', 'a prompt needs at least one token');
    if (s.req.prompt.length > ctx.maxPositions) throw new EngineError('INVALID_ARGUMENT', `the prompt has ${s.req.prompt.length} tokens, more than the model's ${ctx.maxPositions} positions`);
    if (ctx.blocks.blocksFor(Math.min(total, ctx.maxPositions)) > ctx.blocks.numBlocks) {
      throw new EngineError('KV_CACHE_FULL', `a request of ${total} tokens needs more KV blocks than the cache has (${ctx.blocks.numBlocks} x ${ctx.blocks.blockSize} tokens)`);
    }
    if (s.req.sampling.maxTokens === 0 && !s.req.returnPromptLogits) s.finish = 'length';
  }
  const waiting = seqs.filter((s) => !s.finish);
  const running: Seq[] = [];
  try {
    while (waiting.length > 0 || running.length > 0) {
      while (waiting.length > 0) {
        const s = waiting[0]!;
        const need = ctx.blocks.blocksFor(Math.min(s.req.prompt.length + s.req.sampling.maxTokens, ctx.maxPositions));
        if (need > ctx.blocks.freeBlocks) break;
        s.blocks = ctx.blocks.allocate(need);
        running.push(waiting.shift()!);
      }
      if (running.length === 0) throw new EngineError('KV_CACHE_FULL', 'no request fits in the free KV blocks');
      const items: StepItem[] = [];
      const owners: Seq[] = [];
      let budget = ctx.maxBatchTokens;
      const push = (s: Seq, tokens: number[], sample: boolean, allLogits: boolean): void => {
        const p = s.req.sampling;
        items.push({
          tokens, startPosition: s.computed, blockTable: s.blocks, adapterSlot: s.req.adapterSlot, sample, allLogits,
          sampling: p, draw: s.output.length,
          history: sample && usesPenalties(p) ? { tokens: [...s.req.prompt, ...s.output], generatedStart: s.req.prompt.length } : undefined,
          mask: sample ? s.req.constraint?.nextMask() ?? null : null,
        });
        owners.push(s);
        budget -= tokens.length;
      };
      for (const s of running) if (s.computed >= s.req.prompt.length) push(s, [s.output[s.output.length - 1]!], true, false);
      for (const s of running) {
        if (s.computed >= s.req.prompt.length || budget <= 0) continue;
        const n = Math.min(budget, s.req.prompt.length - s.computed);
        const last = s.computed + n === s.req.prompt.length;
        push(s, s.req.prompt.slice(s.computed, s.computed + n), last && s.req.sampling.maxTokens > 0, s.req.returnPromptLogits);
      }
      // Adjacent tokens with the same adapter form one LoRA segment in the kernels.
      const order = items.map((_, i) => i).sort((a, b) => items[a]!.adapterSlot - items[b]!.adapterSlot || a - b);
      const sortedItems = order.map((i) => items[i]!), sortedOwners = order.map((i) => owners[i]!);
      const results = await ctx.runStep(sortedItems);
      results.forEach((r, i) => {
        const s = sortedOwners[i]!, it = sortedItems[i]!;
        s.computed += it.tokens.length;
        if (r.logits) s.logitChunks.push(r.logits);
        if (it.sample && r.token !== undefined) {
          s.output.push(r.token);
          s.req.constraint?.accept(r.token);
          if (s.req.sampling.logprobs !== undefined) s.logprobs.push({ token: r.token, logprob: r.logprob!, top: r.top ?? [] });
          s.finish = checkFinish(s, r.token, ctx);
        } else if (s.computed >= s.req.prompt.length && s.req.sampling.maxTokens === 0) {
          s.finish = 'length';
        }
      });
      for (let i = running.length - 1; i >= 0; i--) {
        const s = running[i]!;
        if (s.finish) {
          ctx.blocks.release(s.blocks);
          running.splice(i, 1);
        }
      }
    }
  } finally {
    for (const s of running) ctx.blocks.release(s.blocks);
  }
  return seqs.map((s) => {
    const r: SequenceResult = { tokens: s.output, finishReason: s.finish ?? 'length' };
    if (s.req.returnPromptLogits) {
      const all = new Float32Array(s.req.prompt.length * ctx.vocab);
      let off = 0;
      for (const c of s.logitChunks) {
        all.set(c, off);
        off += c.length;
      }
      r.promptLogits = all;
    }
    if (s.req.sampling.logprobs !== undefined) r.logprobs = s.logprobs;
    return r;
  });
}
