// One generated sequence (a request with n = 3 is three sequences): what the scheduler needs to
// step it (prompt, sampling, KV block table, progress) and what a route reads from it (an ordered
// event stream for streaming responses, a final result for the others).
import type { ResolvedSampling, TopLogprob } from '@loraplex/engine';
import type { SequenceConstraint } from '../structured/constraint.js';
import { IncrementalDetokenizer, type Decoder } from './detokenizer.js';
import { StopMatcher } from './stop-strings.js';

/** Why a sequence ended: eos (an EOS token), stop (a stop token id or stop string), length (max tokens or context). */
export type FinishReason = 'eos' | 'stop' | 'length';

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
  constructor(readonly status: number, readonly type: string, message: string, readonly retryAfter?: number) {
    super(message);
    this.name = 'SequenceError';
  }
}

class Deferred<T> {
  promise: Promise<T>;
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;
  constructor() {
    this.promise = new Promise<T>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.promise.catch(() => undefined); // observed by whoever awaits it
  }
}

let nextId = 1;

/** A grammar call's failure as the error this sequence fails with. */
async function grammarCall<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw new SequenceError(500, 'internal_error', `the grammar failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export class Sequence {
  readonly id = nextId++;
  readonly params: SequenceParams;
  readonly enqueuedAt = performance.now();
  state: 'waiting' | 'running' | 'finished' = 'waiting';
  /** KV block table, grown step by step (freed when the sequence is preempted). */
  blocks: number[] = [];
  /** Positions whose keys/values are in the cache. */
  computed = 0;
  /** Positions to fill before decoding: the prompt, or after a preemption the prompt and the tokens sampled so far. */
  prefillLength: number;
  /** Times this sequence was preempted (KV freed, to be recomputed on re-admission). */
  preemptions = 0;
  /** Sampled token ids: the scheduler's view (draw index, penalty history, next decode input). */
  readonly sampled: number[] = [];
  /** Tokens whose text has been processed, cut at a stop string: what the result reports. */
  readonly output: GeneratedToken[] = [];
  readonly promptLogprobs: number[] = [];
  adapterSlot = -1;
  cancelled = false;
  firstTokenAt: number | undefined;
  private text = '';
  private readonly detok: IncrementalDetokenizer;
  private readonly stops: StopMatcher;
  private readonly events: SequenceEvent[] = [];
  private waiter: (() => void) | undefined;
  private failure: unknown;
  private ended = false;
  private tokenFinish: FinishReason | undefined;
  private textChain: Promise<unknown> = Promise.resolve();
  private readonly admittedD = new Deferred<void>();
  private readonly doneD = new Deferred<SequenceResult>();

  constructor(params: SequenceParams, decoder: Decoder) {
    this.params = params;
    this.prefillLength = params.prompt.length;
    this.detok = new IncrementalDetokenizer(decoder);
    this.stops = new StopMatcher(params.stop, params.includeStopString);
  }

  /** Still stepping: not ended and no token-level finish (EOS, stop token id, length) yet. */
  get generating(): boolean {
    return !this.ended && this.tokenFinish === undefined;
  }

  get prefilled(): boolean {
    return this.computed >= this.prefillLength;
  }

  /** Tokens [from, to) of the sequence so far: the prompt, then the sampled tokens. */
  tokensAt(from: number, to: number): number[] {
    const prompt = this.params.prompt, P = prompt.length;
    if (to <= P) return prompt.slice(from, to);
    return [...prompt.slice(Math.min(from, P), P), ...this.sampled.slice(Math.max(0, from - P), to - P)];
  }

  /**
   * Preemption by recompute (the scheduler has freed the blocks and unpinned the adapter): back to
   * waiting; on re-admission it prefills the prompt and the tokens it already sampled, which are
   * neither re-sampled nor re-emitted, and sampling goes on at the same draw index.
   */
  preempt(): void {
    this.state = 'waiting';
    this.computed = 0;
    this.prefillLength = this.params.prompt.length + this.sampled.length;
    this.adapterSlot = -1;
    this.preemptions++;
  }

  /** Resolves when the sequence is admitted to the running batch (its adapter is resident); rejects if it fails first. */
  get admitted(): Promise<void> {
    return this.admittedD.promise;
  }

  get done(): Promise<SequenceResult> {
    return this.doneD.promise;
  }

  markAdmitted(): void {
    this.state = 'running';
    this.admittedD.resolve();
  }

  /**
   * Records a sampled token at once (the next step can be built) and queues its text processing
   * (detokenisation, stop strings, events), which runs in order per sequence and may overlap the next
   * step. Resolves, once its text is processed, to the finish reason if the sequence ended there,
   * null if it goes on, undefined if the token was dropped (sampled after a stop string or a cancel).
   */
  accept(tok: Omit<GeneratedToken, 'tokenText'>, tokenFinish: FinishReason | undefined): Promise<FinishReason | null | undefined> {
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
        const end = this.textChain.then(async () => {
          if (this.ended) return undefined;
          await this.finishFlushing(reason);
          return reason;
        });
        this.textChain = end.catch(() => undefined);
        return end;
      } else if (!c.accept(tok.token)) {
        this.tokenFinish = 'stop'; // stops stepping at once; the caller fails the sequence with this error
        return Promise.reject(new SequenceError(500, 'internal_error', `the grammar rejected token ${tok.token}, which its mask allowed`));
      } else if (tokenFinish === 'length' && c.settle) {
        // The last draw allowed: if it completed the grammar, the output ends as complete JSON ('eos').
        lastDraw = c.settle();
        lastDraw.catch(() => undefined); // observed in processText
      }
    }
    if (tokenFinish) this.tokenFinish = tokenFinish;
    if (this.firstTokenAt === undefined) this.firstTokenAt = performance.now();
    const p = this.textChain.then(async () => {
      if (lastDraw && (await grammarCall(lastDraw))) tokenFinish = 'eos';
      return this.processText(tok, tokenFinish);
    });
    this.textChain = p.catch(() => undefined);
    return p;
  }

  private async processText(tok: Omit<GeneratedToken, 'tokenText'>, tokenFinish: FinishReason | undefined): Promise<FinishReason | null | undefined> {
    if (this.ended) return undefined; // sampled after a stop string or a cancel: dropped
    const entry: GeneratedToken = { token: tok.token, logprob: tok.logprob, top: tok.top, tokenText: '' };
    entry.tokenText = await this.detok.push(tok.token);
    if (this.ended) return undefined;
    this.output.push(entry);
    const r = this.stops.push(entry.tokenText);
    this.text += r.text;
    this.emit({ type: 'token', text: r.text, ...entry });
    if (r.stop !== undefined) {
      this.finish('stop', '', r.stop);
      return 'stop';
    }
    if (!tokenFinish) return null;
    await this.finishFlushing(tokenFinish);
    return tokenFinish;
  }

  private async finishFlushing(reason: FinishReason): Promise<void> {
    const tail = await this.detok.flush();
    const r = this.stops.push(tail);
    if (r.stop !== undefined) return this.finish('stop', r.text, r.stop);
    this.finish(reason, r.text + this.stops.flush());
  }

  private finish(reason: FinishReason, tailText: string, stop?: string): void {
    if (this.ended) return;
    this.text += tailText;
    this.state = 'finished';
    this.emit({ type: 'finish', reason, text: tailText, ...(stop !== undefined ? { stop } : {}) });
    this.ended = true;
    this.params.constraint?.dispose();
    this.doneD.resolve({
      promptTokens: this.params.prompt,
      tokens: this.output,
      text: this.text,
      finishReason: reason,
      ...(stop !== undefined ? { stop } : {}),
      ...(this.params.promptLogprobs ? { promptLogprobs: this.promptLogprobs } : {}),
    });
  }

  /** Ends the sequence with an error (adapter load failure, engine failure, cancellation). */
  fail(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.params.constraint?.dispose();
    this.state = 'finished';
    this.failure = err;
    this.admittedD.reject(err);
    this.doneD.reject(err);
    this.wake();
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private emit(e: SequenceEvent): void {
    this.events.push(e);
    this.wake();
  }

  private wake(): void {
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
