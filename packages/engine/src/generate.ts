// Engine.generate over the engine's scheduler: every request becomes a GenerationSequence, submitted
// to the same scheduler the worker drives (same admission, preemption and finish rules), and the
// call resolves when all of them have finished. Preemption by recompute keeps greedy and seeded
// outputs identical to an uninterrupted run.
import { EngineError } from './errors.js';
import type { ResolvedSampling } from './sampling.js';
import type { Scheduler } from './scheduler/scheduler.js';
import { ScheduledSequence, type AcceptResult, type FinishReason, type SampledToken } from './scheduler/sequence.js';
import type { StepItem, TopLogprob } from './step.js';

export type { FinishReason } from './scheduler/sequence.js';

/** Constrains decoding (JSON mode): a bitmask of allowed tokens before each draw. */
export interface TokenConstraint {
  /** Allowed-token bitmask for the next draw (ceil(vocab/32) words), or null for any token. */
  nextMask(): Uint32Array | null;
  /** Called with every token drawn. */
  accept(token: number): void;
  /** True when the constrained output is complete (generation then stops with 'stop'). */
  isTerminated?(): boolean;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: TopLogprob[];
}

export interface SequenceResult {
  tokens: number[];
  finishReason: FinishReason;
  promptLogits?: Float32Array;
  logprobs?: TokenLogprob[];
}

export interface SequenceRequest {
  prompt: number[];
  adapter: string | undefined;
  sampling: ResolvedSampling;
  returnPromptLogits: boolean;
  constraint?: TokenConstraint;
}

/** One request of a generate() call: collects its tokens, logprobs and prompt logits. */
class GenerationSequence extends ScheduledSequence {
  readonly output: number[] = [];
  readonly logprobs: TokenLogprob[] = [];
  promptLogits: Float32Array | undefined;
  finish: FinishReason | undefined;
  private settle!: { resolve(): void; reject(e: unknown): void };
  readonly done: Promise<void>;

  constructor(
    readonly req: SequenceRequest,
    private readonly vocab: number,
  ) {
    super({ adapter: req.adapter, prompt: req.prompt, sampling: req.sampling, promptLogits: req.returnPromptLogits });
    this.done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // observed by generate()
  }

  override stepMask(): Pick<StepItem, 'mask' | 'maskLater'> {
    try {
      return { mask: this.req.constraint?.nextMask() ?? null };
    } catch (e) {
      // Fails this call alone (the scheduler is shared): the item still runs, its token is dropped.
      this.fail(e);
      return { mask: null };
    }
  }

  override promptLogitsRow(position: number, row: Float32Array): void {
    this.promptLogits ??= new Float32Array(this.prompt.length * this.vocab);
    this.promptLogits.set(row, position * this.vocab);
  }

  override accept(tok: SampledToken, finish: FinishReason | undefined): AcceptResult {
    this.output.push(tok.token);
    this.req.constraint?.accept(tok.token);
    if (this.sampling.logprobs !== undefined)
      this.logprobs.push({ token: tok.token, logprob: tok.logprob!, top: tok.top ?? [] });
    // A completed constraint stops with 'stop', after EOS and stop tokens, before length.
    if (finish !== 'eos' && finish !== 'stop' && this.req.constraint?.isTerminated?.()) finish = 'stop';
    super.accept(tok, finish);
    if (finish) this.end(finish);
    return finish ?? null;
  }

  override finishWithoutSampling(): void {
    super.finishWithoutSampling();
    this.end('length');
  }

  end(reason: FinishReason): void {
    this.finish = reason;
    this.settle.resolve();
  }

  override fail(err: unknown): void {
    if (this.ended) return;
    super.fail(err);
    this.settle.reject(err);
  }

  result(): SequenceResult {
    const r: SequenceResult = { tokens: this.output, finishReason: this.finish ?? 'length' };
    if (this.req.returnPromptLogits)
      r.promptLogits = this.promptLogits ?? new Float32Array(this.prompt.length * this.vocab);
    if (this.sampling.logprobs !== undefined) r.logprobs = this.logprobs;
    return r;
  }
}

export interface GenerationContext {
  vocab: number;
  maxPositions: number;
  scheduler: Scheduler;
}

/** Runs every request through the scheduler; all-or-nothing: a failure cancels the call's other sequences. */
export async function runGeneration(reqs: SequenceRequest[], ctx: GenerationContext): Promise<SequenceResult[]> {
  const kv = ctx.scheduler.kvUsage();
  for (const r of reqs) {
    const total = r.prompt.length + r.sampling.maxTokens;
    if (r.prompt.length === 0) throw new EngineError('INVALID_ARGUMENT', 'a prompt needs at least one token');
    if (r.prompt.length > ctx.maxPositions) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `the prompt has ${r.prompt.length} tokens, more than the model's ${ctx.maxPositions} positions`,
      );
    }
    if (ctx.scheduler.blocksNeeded(r.prompt.length, r.sampling.maxTokens) > kv.totalBlocks) {
      const cache = `${kv.totalBlocks} x ${kv.blockSize} tokens`;
      throw new EngineError(
        'KV_CACHE_FULL',
        `a request of ${total} tokens needs more KV blocks than the cache has (${cache})`,
      );
    }
  }
  const seqs = reqs.map((r) => new GenerationSequence(r, ctx.vocab));
  try {
    for (const s of seqs) {
      if (s.sampling.maxTokens === 0 && !s.req.returnPromptLogits) s.end('length');
      else ctx.scheduler.submit(s);
    }
    await Promise.all(seqs.map((s) => s.done));
  } catch (e) {
    for (const s of seqs) if (!s.isEnded && s.finish === undefined) ctx.scheduler.cancel(s, e);
    throw e;
  }
  return seqs.map((s) => s.result());
}
