// One generated sequence (a request with n = 3 is three sequences): the engine scheduler's
// token-level state (ScheduledSequence: prompt, sampling, KV block table, progress, sampled ids)
// plus what a route reads from it (an ordered event stream for streaming responses, a final result
// for the others). Text processing (detokenisation, stop strings, events) lags one step behind the
// scheduler: accept() records the token at once and resolves once its text is processed.
import {
  ScheduledSequence,
  type FinishReason,
  type ResolvedSampling,
  type SampledToken,
  type StepItem,
  type TopLogprob,
} from '@loraplex/engine';
import type { SequenceConstraint } from '../structured/constraint.js';
import { IncrementalDetokenizer, type Decoder } from './detokenizer.js';
import { StopMatcher } from './stop-strings.js';

export type { FinishReason } from '@loraplex/engine';

export interface SequenceParams {
  /** Adapter name, or undefined for the base model. */
  adapter: string | undefined;
  prompt: number[];
  sampling: ResolvedSampling;
  stop: string[];
  /** Keep a matched stop string in the text (LoRAX) or cut it (OpenAI). */
  includeStopString: boolean;
  /** Compute the log-probability of every prompt token (LoRAX decoder_input_details). */
  promptLogprobs: boolean;
  /** The HTTP route, for metrics. */
  route: string;
  /** JSON mode: the grammar every draw must follow (its state is this sequence's alone). */
  constraint?: SequenceConstraint;
}

export interface GeneratedToken {
  token: number;
  /** Log-probability under the raw distribution (when sampling.logprobs is set). */
  logprob?: number;
  top?: TopLogprob[];
  /** The stable text this token added (before stop-string hold-back). */
  tokenText: string;
}

export type SequenceEvent =
  | ({ type: 'token'; /** Newly visible text (stop strings held back / cut). */ text: string } & GeneratedToken)
  | { type: 'finish'; reason: FinishReason; /** Visible text released at the end. */ text: string; stop?: string };

export interface SequenceResult {
  promptTokens: number[];
  tokens: GeneratedToken[];
  text: string;
  finishReason: FinishReason;
  stop?: string;
  /** Log-probability of each prompt token given the ones before it (NaN for the first). */
  promptLogprobs?: number[];
}

/** Errors that end a sequence before or while it runs; `status` is the HTTP status to report. */
export class SequenceError extends Error {
  /** `retryAfter`: seconds, sent as Retry-After (429, 503). */
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'SequenceError';
  }
}

/** A grammar call's failure as the error this sequence fails with. */
async function grammarCall<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw new SequenceError(500, 'internal_error', `the grammar failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export class Sequence extends ScheduledSequence {
  readonly params: SequenceParams;
  /** Tokens whose text has been processed, cut at a stop string: what the result reports. */
  readonly output: GeneratedToken[] = [];
  readonly promptLogprobs: number[] = [];
  cancelled = false;
  firstTokenAt: number | undefined;
  private text = '';
  private readonly detok: IncrementalDetokenizer;
  private readonly stops: StopMatcher;
  private readonly events: SequenceEvent[] = [];
  private waiter: (() => void) | undefined;
  private failure: unknown;
  private textChain: Promise<unknown> = Promise.resolve();
  /** The result once the sequence finishes; rejects with the error it fails with. */
  readonly done: Promise<SequenceResult>;
  private resolveDone!: (r: SequenceResult) => void;
  private rejectDone!: (e: unknown) => void;
  private wasAdmitted = false;
  /** Created by the first caller of `admitted` while the sequence waits (streams wait for admission). */
  private admission: { promise: Promise<void>; resolve(): void; reject(e: unknown): void } | undefined;

  constructor(params: SequenceParams, decoder: Decoder) {
    super({
      adapter: params.adapter,
      prompt: params.prompt,
      sampling: params.sampling,
      promptLogits: params.promptLogprobs,
    });
    this.params = params;
    this.detok = new IncrementalDetokenizer(decoder);
    this.stops = new StopMatcher(params.stop, params.includeStopString);
    this.done = new Promise<SequenceResult>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined); // observed by whoever awaits it
  }

  /** Resolves when the sequence is admitted to the running batch (its adapter is resident); rejects if it fails first. */
  get admitted(): Promise<void> {
    if (this.wasAdmitted) return Promise.resolve();
    if (this.ended) return Promise.reject(this.failure); // only a failure ends a sequence before its admission
    if (!this.admission) {
      let resolve!: () => void, reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined); // observed by whoever awaits it
      this.admission = { promise, resolve, reject };
    }
    return this.admission.promise;
  }

  override markAdmitted(): void {
    super.markAdmitted();
    this.wasAdmitted = true;
    this.admission?.resolve();
  }

  /**
   * JSON mode: the allowed-token mask as a late mask (StepItem.maskLater): the engine starts the
   * forward pass first and asks for the mask while it runs; the grammar engine thread computes it
   * (structured/engine-thread.ts), in parallel with the forward pass and this thread; sampling waits
   * for it. A sequence whose grammar fails is failed and samples unconstrained (its token is
   * dropped: it has ended).
   */
  override stepMask(): Pick<StepItem, 'mask' | 'maskLater'> {
    const c = this.params.constraint;
    if (!c) return { mask: null };
    return {
      mask: null,
      maskLater: () =>
        c.nextMask().catch((e: unknown) => {
          this.fail(new SequenceError(500, 'internal_error', `the grammar failed: ${message(e)}`));
          return null;
        }),
    };
  }

  /** Row p of the prompt's logits predicts prompt position p + 1 (LoRAX decoder_input_details). */
  override promptLogitsRow(position: number, row: Float32Array): void {
    const prompt = this.params.prompt;
    if (position === 0 && this.promptLogprobs.length === 0) this.promptLogprobs.push(Number.NaN);
    const target = position + 1;
    if (target >= prompt.length) return;
    let max = -Infinity;
    for (let v = 0; v < row.length; v++) if (row[v]! > max) max = row[v]!;
    let sum = 0;
    for (let v = 0; v < row.length; v++) sum += Math.exp(row[v]! - max);
    this.promptLogprobs.push(row[prompt[target]!]! - max - Math.log(sum));
  }

  override stepFailed(err: unknown): void {
    this.fail(new SequenceError(500, 'engine_error', `the engine step failed: ${message(err)}`));
  }

  override schedulerFailed(err: unknown): void {
    this.fail(new SequenceError(500, 'internal_error', `scheduler failure: ${message(err)}`));
  }

  override finishWithoutSampling(): void {
    this.tokenFinish = 'length';
    this.textChain = this.processText(this.textChain, undefined, 'length').catch((e: unknown) => this.fail(e));
  }

  /**
   * Records a sampled token at once (the next step can be built) and queues its text processing
   * (detokenisation, stop strings, events), which runs in order per sequence and may overlap the next
   * step. Resolves, once its text is processed, to the finish reason if the sequence ended there,
   * null if it goes on, undefined if the token was dropped (sampled after a stop string or a cancel).
   */
  override accept(tok: SampledToken, tokenFinish: FinishReason | undefined): Promise<FinishReason | null | undefined> {
    this.sampled.push(tok.token);
    const c = this.params.constraint;
    let lastDraw: Promise<boolean> | undefined;
    if (c && !this.ended) {
      if (c.complete) {
        // The grammar was complete when this token was drawn: its mask allowed only the stop tokens,
        // so this is the EOS that ends the JSON document (even with ignore_eos: nothing may follow).
        // It ends the output without joining it, as the end of a document: the text, the tokens and
        // their count are the document's alone (what clients parse).
        const reason: FinishReason = tokenFinish === 'stop' ? 'stop' : 'eos';
        this.tokenFinish = reason;
        const end = this.processText(this.textChain, undefined, reason);
        this.textChain = end.catch(() => undefined);
        return end;
      } else if (!c.accept(tok.token)) {
        this.tokenFinish = 'stop'; // stops stepping at once; the caller fails the sequence with this error
        return Promise.reject(
          new SequenceError(500, 'internal_error', `the grammar rejected token ${tok.token}, which its mask allowed`),
        );
      } else if (tokenFinish === 'length' && c.settle) {
        // The last draw allowed: if it completed the grammar, the output ends as complete JSON ('eos').
        lastDraw = c.settle();
        lastDraw.catch(() => undefined); // observed in processText
      }
    }
    if (tokenFinish) this.tokenFinish = tokenFinish;
    if (this.firstTokenAt === undefined) this.firstTokenAt = performance.now();
    const p = this.processText(this.textChain, tok, tokenFinish, lastDraw);
    this.textChain = p.catch(() => undefined);
    return p;
  }

  /**
   * The text processing of one token, after the processing before it (`after`): detokenise, hold
   * back or cut stop strings, emit. With a finish (or with no token: the end without one), flushes
   * the held-back text and finishes. Resolves as accept() does.
   */
  private async processText(
    after: Promise<unknown>,
    tok: SampledToken | undefined,
    tokenFinish: FinishReason | undefined,
    lastDraw?: Promise<boolean>,
  ): Promise<FinishReason | null | undefined> {
    await after;
    if (lastDraw && (await grammarCall(lastDraw))) tokenFinish = 'eos';
    if (this.ended) return undefined; // sampled after a stop string or a cancel: dropped
    if (tok) {
      const entry: GeneratedToken = { token: tok.token, logprob: tok.logprob, top: tok.top, tokenText: '' };
      entry.tokenText = await this.detok.push(tok.token);
      if (this.ended) return undefined;
      this.output.push(entry);
      const r = this.stops.push(entry.tokenText);
      this.text += r.text;
      this.notify({ type: 'token', text: r.text, ...entry });
      if (r.stop !== undefined) {
        this.finish('stop', '', r.stop);
        return 'stop';
      }
      if (!tokenFinish) return null;
    }
    const tail = this.stops.push(await this.detok.flush());
    if (tail.stop !== undefined) this.finish('stop', tail.text, tail.stop);
    else this.finish(tokenFinish!, tail.text + this.stops.flush());
    return tokenFinish;
  }

  private finish(reason: FinishReason, tailText: string, stop?: string): void {
    if (this.ended) return;
    this.text += tailText;
    this.state = 'finished';
    this.notify({ type: 'finish', reason, text: tailText, ...(stop !== undefined ? { stop } : {}) });
    this.ended = true;
    this.params.constraint?.dispose();
    this.resolveDone({
      promptTokens: this.params.prompt,
      tokens: this.output,
      text: this.text,
      finishReason: reason,
      ...(stop !== undefined ? { stop } : {}),
      ...(this.params.promptLogprobs ? { promptLogprobs: this.promptLogprobs } : {}),
    });
  }

  /** Ends the sequence with an error (adapter load failure, engine failure, cancellation). */
  override fail(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.params.constraint?.dispose();
    this.state = 'finished';
    this.failure = err;
    this.admission?.reject(err);
    this.rejectDone(err);
    this.notify();
  }

  /** Records an event (none: the sequence failed) and wakes the stream's consumer. */
  private notify(e?: SequenceEvent): void {
    if (e) this.events.push(e);
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** The ordered events; ends after 'finish', throws on failure. One consumer. */
  async *stream(): AsyncGenerator<SequenceEvent> {
    for (;;) {
      while (this.events.length > 0) {
        const e = this.events.shift()!;
        yield e;
        if (e.type === 'finish') return;
      }
      if (this.failure !== undefined) throw this.failure;
      await new Promise<void>((res) => (this.waiter = res));
    }
  }
}
