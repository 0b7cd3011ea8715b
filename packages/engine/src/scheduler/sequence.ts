// One sequence as the scheduler steps it: prompt, sampling, KV block table, progress and sampled
// token ids. Owners subclass it to receive what the steps produce (Engine.generate collects
// tokens; the worker detokenises and streams them) and to supply per-draw masks (JSON mode).
import type { ResolvedSampling } from '../sampling.js';
import type { StepItem, TopLogprob } from '../step.js';

/** Why a sequence ended: eos (an EOS token), stop (a stop token id or stop string), length (max tokens or context). */
export type FinishReason = 'length' | 'stop' | 'eos';

export interface SampledToken {
  token: number;
  /** Log-probability under the raw distribution (when sampling.logprobs is set). */
  logprob?: number;
  top?: TopLogprob[];
}

export interface SequenceSpec {
  /** Adapter name, or undefined for the base model. */
  adapter: string | undefined;
  prompt: number[];
  sampling: ResolvedSampling;
  /** Deliver the logits of every prompt position (once, even across preemptions). */
  promptLogits?: boolean;
}

/** accept()'s answer: the finish reason if the sequence ended there, null if it goes on, undefined if the token was dropped. */
export type AcceptResult = FinishReason | null | undefined;

let nextId = 1;

export class ScheduledSequence {
  readonly id = nextId++;
  readonly adapter: string | undefined;
  readonly prompt: number[];
  readonly sampling: ResolvedSampling;
  readonly wantsPromptLogits: boolean;
  state: 'waiting' | 'running' | 'finished' = 'waiting';
  /** KV block table, grown step by step (emptied, same array, when the sequence is preempted or ends). */
  readonly blocks: number[] = [];
  /** Positions whose keys/values are in the cache. */
  computed = 0;
  /** Positions to fill before decoding: the prompt, or after a preemption the prompt and the tokens sampled so far. */
  prefillLength: number;
  /** Times this sequence was preempted (KV freed, to be recomputed on re-admission). */
  preemptions = 0;
  /** Sampled token ids: the draw index, the penalty history and the next decode input. */
  readonly sampled: number[] = [];
  /** Prompt positions whose logits were delivered (promptLogits). */
  promptLogitRows = 0;
  adapterSlot = -1;
  /** When it was submitted, on the scheduler's clock. */
  enqueuedAt = 0;
  /** A token-level finish (EOS, stop token id, length): no more steps. */
  protected tokenFinish: FinishReason | undefined;
  /** Ended by its owner (a stop string, a failure, a cancel). */
  protected ended = false;

  constructor(spec: SequenceSpec) {
    this.adapter = spec.adapter;
    this.prompt = spec.prompt;
    this.sampling = spec.sampling;
    this.wantsPromptLogits = spec.promptLogits === true;
    this.prefillLength = spec.prompt.length;
  }

  /** Still stepping: not ended and no token-level finish yet. */
  get generating(): boolean {
    return !this.ended && this.tokenFinish === undefined;
  }

  get prefilled(): boolean {
    return this.computed >= this.prefillLength;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Tokens [from, to) of the sequence so far: the prompt, then the sampled tokens. */
  tokensAt(from: number, to: number): number[] {
    const prompt = this.prompt,
      P = prompt.length;
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
    this.prefillLength = this.prompt.length + this.sampled.length;
    this.adapterSlot = -1;
    this.preemptions++;
  }

  /** Admitted to the running set (first time or after a preemption). */
  markAdmitted(): void {
    this.state = 'running';
  }

  /** The mask of an item that samples for this sequence (JSON mode). Default: every token allowed. */
  stepMask(): Pick<StepItem, 'mask' | 'maskLater'> {
    return { mask: null };
  }

  /** The logits row of prompt position `position` (wantsPromptLogits), in order, once each. */
  promptLogitsRow(_position: number, _row: Float32Array): void {}

  /**
   * Records a sampled token; `finish` is the token-level finish the scheduler found. May resolve
   * later (text processing lags one step): the scheduler awaits it before absorbing the next step.
   */
  accept(tok: SampledToken, finish: FinishReason | undefined): AcceptResult | Promise<AcceptResult> {
    this.sampled.push(tok.token);
    if (finish) {
      this.tokenFinish = finish;
      this.state = 'finished';
    }
    return finish ?? null;
  }

  /** The prefill finished and nothing is to be sampled (max tokens 0). */
  finishWithoutSampling(): void {
    this.tokenFinish = 'length';
    this.state = 'finished';
  }

  /** Ends the sequence with an error. */
  fail(_err: unknown): void {
    this.ended = true;
    this.state = 'finished';
  }

  /** The engine step that carried this sequence failed. */
  stepFailed(err: unknown): void {
    this.fail(err);
  }

  /** The scheduler itself failed (a bug) while this sequence ran. */
  schedulerFailed(err: unknown): void {
    this.fail(err);
  }
}
