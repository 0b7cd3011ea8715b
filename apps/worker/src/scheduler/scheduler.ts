// The continuous-batching loop over engine.runStep (iteration-level scheduling, as in Orca / vLLM /
// text-generation-inference's router). Between two steps it:
//   1. retires finished and cancelled sequences (KV blocks back to the allocator, adapter unpinned);
//   2. admits waiting sequences: round-robin across adapter queues (queue.ts), only for resident,
//      non-draining adapters, while the free KV blocks (less those that admitted prefills still
//      need) hold the sequence's prefill (its prompt) plus a watermark of 1% of the cache (vLLM's
//      default), and the running set fits one decode token each in the step budget;
//   3. secures a KV block for every decode token; when the allocator runs out it preempts by
//      recompute (vLLM's default): the most recently admitted running sequence loses its blocks
//      and its adapter pin and goes back to the front of its adapter's queue; re-admitted, it
//      prefills prompt + the tokens it had sampled (not re-sampled, not re-emitted) and sampling
//      goes on at the same draw index, so greedy and seeded outputs equal an uninterrupted run.
//      The oldest running sequence is never a victim while others run, and a request whose whole
//      length cannot fit the cache is refused at submit, so the running set always progresses;
//   4. builds the next step (batcher.ts): decode tokens + prefill chunks under --max-batch-tokens,
//      chunks cut to the free blocks.
// Sampled tokens are recorded at once; their text (detokenisation, stop strings, events) is
// processed while the next step runs (at most one step behind), so a sequence stopped by a stop
// string may have sampled one more token, which is dropped.
// Distinct adapters per step never exceed the engine's slots: only resident (slotted, pinned)
// adapters are admitted. KV blocks are allocated as prefill chunks and decode tokens need them, never
// reserved ahead. Steps run one at a time; HTTP handling and adapter loads run between and beside
// them (every engine call is asynchronous).
import type { BlockAllocator, StepItem, StepItemResult } from '@loraplex/engine';
import type { AdapterManager } from '../adapters/adapter-manager.js';
import { buildBatch, withLateMasks, type Batch } from './batcher.js';
import { AdapterQueues, BASE_KEY } from './queue.js';
import { Sequence, SequenceError, type FinishReason, type SequenceParams } from './sequence.js';
import type { Decoder } from './detokenizer.js';

/** The slice of Engine the scheduler drives (a fake in unit tests). */
export interface StepEngine {
  runStep(items: StepItem[]): Promise<StepItemResult[]>;
  readonly blocks: BlockAllocator;
  readonly eosTokenIds: Set<number>;
  readonly config: { maxPositions: number; vocab: number };
}

export interface SchedulerOptions {
  maxBatchTokens: number;
  /** Most sequences running at once (also capped by maxBatchTokens). Default 256. */
  maxRunning?: number;
}

export interface SchedulerHooks {
  submitted?(s: Sequence): void;
  /** First admission only (a re-admission after a preemption does not call it again). */
  admitted?(s: Sequence): void;
  /** Preempted by recompute: KV freed, back to the front of its queue. */
  preempted?(s: Sequence): void;
  token?(s: Sequence): void;
  finished?(s: Sequence, reason: FinishReason): void;
  failed?(s: Sequence, err: unknown): void;
  cancelled?(s: Sequence): void;
  step?(seconds: number, batch: Batch): void;
}

export class CancelledError extends SequenceError {
  constructor() {
    super(499, 'cancelled', 'the client went away');
  }
}

export class Scheduler {
  private readonly queues = new AdapterQueues();
  private readonly running: Sequence[] = [];
  private inStep = new Set<Sequence>();
  /** Text processing of the previous step's tokens (overlaps the next step; awaited before absorbing it). */
  private textLag: Promise<unknown> = Promise.resolve();
  private textInFlight = 0;
  private wakeup: (() => void) | undefined;
  private accepting = true;
  private stopped = false;
  private drained: Array<() => void> = [];
  private readonly maxRunning: number;
  /** Blocks kept free at admission while sequences run, headroom for their decode tokens (vLLM: 1%). */
  private readonly watermark: number;
  /** Steps run so far (for tests and metrics). */
  steps = 0;
  /** Largest number of distinct adapters seen in one step. */
  maxAdaptersInStep = 0;
  /** Preemptions so far. */
  preemptions = 0;

  constructor(
    private readonly engine: StepEngine,
    private readonly adapters: AdapterManager,
    private readonly decoder: Decoder,
    private readonly opts: SchedulerOptions,
    private readonly hooks: SchedulerHooks = {},
  ) {
    this.maxRunning = Math.max(1, Math.min(opts.maxRunning ?? 256, opts.maxBatchTokens));
    this.watermark = Math.floor(0.01 * engine.blocks.numBlocks);
    adapters.demand = (name) => this.queues.waiting(name);
    void this.loop();
  }

  get runningCount(): number {
    return this.running.length;
  }

  get waitingCount(): number {
    return this.queues.size;
  }

  get isAccepting(): boolean {
    return this.accepting;
  }

  /** KV blocks that admitted sequences still need to finish their prefill, beyond what they hold. */
  private outstandingPrefill(): number {
    let n = 0;
    for (const s of this.running) if (s.generating && !s.prefilled) n += Math.max(0, this.engine.blocks.blocksFor(s.prefillLength) - s.blocks.length);
    return n;
  }

  /** KV blocks of a sequence's whole length, prompt + max tokens, capped by the context. */
  blocksNeeded(promptLength: number, maxTokens: number): number {
    return this.engine.blocks.blocksFor(Math.min(promptLength + maxTokens, this.engine.config.maxPositions));
  }

  /** Queues a sequence. Throws SequenceError when it can never run or the worker is draining. */
  submit(params: SequenceParams): Sequence {
    if (!this.accepting) throw new SequenceError(503, 'unavailable', 'the worker is shutting down and accepts no new requests');
    const { prompt, sampling } = params;
    if (prompt.length === 0) throw new SequenceError(400, 'invalid_request_error', 'the prompt is empty');
    const need = this.blocksNeeded(prompt.length, sampling.maxTokens);
    if (need > this.engine.blocks.numBlocks) {
      throw new SequenceError(400, 'invalid_request_error', `the request needs ${need} KV blocks (prompt ${prompt.length} + max tokens ${sampling.maxTokens}) but the KV cache has ${this.engine.blocks.numBlocks} of ${this.engine.blocks.blockSize} tokens`);
    }
    if (params.adapter !== undefined) this.adapters.checkCapacity(params.adapter);
    const seq = new Sequence(params, this.decoder);
    this.queues.push(seq);
    this.hooks.submitted?.(seq);
    if (params.adapter !== undefined) this.ensureAdapter(params.adapter);
    this.wake();
    return seq;
  }

  /** Ends a sequence at once (client disconnect): it leaves the queue or the batch, its KV blocks are freed. */
  cancel(seq: Sequence): void {
    if (seq.isEnded) return;
    seq.cancelled = true;
    seq.fail(new CancelledError());
    this.hooks.cancelled?.(seq);
    if (this.queues.remove(seq)) return;
    // Safe while a step runs: blocks are handed out only between steps, and the step already copied its block tables.
    this.engine.blocks.release(seq.blocks);
    if (!this.inStep.has(seq)) this.retire();
    this.wake();
  }

  /** Stops accepting; resolves once every accepted request has finished. */
  drain(): Promise<void> {
    this.accepting = false;
    return new Promise<void>((res) => {
      this.drained.push(res);
      this.checkDrained();
    });
  }

  /** Stops the loop (after drain, before closing the engine). */
  stop(): void {
    this.stopped = true;
    this.wake();
  }

  private checkDrained(): void {
    if (this.accepting || this.running.length > 0 || this.queues.size > 0 || this.textInFlight > 0) return;
    const d = this.drained;
    this.drained = [];
    for (const r of d) r();
  }

  /** Wakes the loop (new work, a load finished, a drain began). */
  wake(): void {
    const w = this.wakeup;
    this.wakeup = undefined;
    w?.();
  }

  private ensureAdapter(name: string): void {
    if (this.adapters.isResident(name) || this.adapters.isLoading(name)) return;
    this.adapters.require(name).then(
      () => this.wake(),
      (err: unknown) => {
        for (const s of this.queues.takeAll(name)) {
          s.fail(err);
          this.hooks.failed?.(s, err);
        }
        this.checkDrained();
      },
    );
  }

  private admit(): void {
    for (const name of this.queues.adaptersWaiting()) this.ensureAdapter(name);
    let free = this.engine.blocks.freeBlocks - this.outstandingPrefill();
    const eligible = (key: string): boolean => key === BASE_KEY || this.adapters.isAdmissible(key);
    while (this.running.length < this.maxRunning) {
      const next = this.queues.next(eligible);
      if (!next) break;
      const s = next.head;
      const need = this.engine.blocks.blocksFor(s.prefillLength);
      // Head-of-line: if this queue's head does not fit, nobody is admitted past it (large requests
      // are not starved). The watermark does not apply to an empty batch (anything submitted fits alone).
      if (need > free - (this.running.length > 0 ? this.watermark : 0)) break;
      this.queues.take(next.key);
      free -= need;
      s.adapterSlot = s.params.adapter === undefined ? -1 : this.adapters.pin(s.params.adapter);
      this.running.push(s);
      s.markAdmitted();
      if (s.preemptions === 0) this.hooks.admitted?.(s);
    }
  }

  /**
   * Gives every decoding sequence the block its next token needs. When none is free, preempts the
   * most recently admitted running sequence (possibly the one that needs the block) and tries again:
   * sequences are visited in admission order and victims taken from the end, so a victim has not
   * been given a block yet in this pass.
   */
  private secureDecodeBlocks(): void {
    const kv = this.engine.blocks;
    for (let i = 0; i < this.running.length; ) {
      const s = this.running[i]!;
      if (s.generating && s.prefilled) {
        if (kv.blocksFor(s.computed + 1) - s.blocks.length > kv.freeBlocks) {
          this.preempt(this.running[this.running.length - 1]!);
          continue; // re-check s, unless it was the victim (then i is past the end)
        }
        kv.ensure(s.blocks, s.computed + 1);
      }
      i++;
    }
  }

  /** Preemption by recompute: frees the KV blocks and the adapter pin, re-queues at the front. */
  private preempt(s: Sequence): void {
    this.running.splice(this.running.indexOf(s), 1);
    this.engine.blocks.release(s.blocks);
    if (s.params.adapter !== undefined) this.adapters.unpin(s.params.adapter);
    s.preempt();
    this.queues.pushFront(s);
    this.preemptions++;
    this.hooks.preempted?.(s);
  }

  /** The next step; when every running sequence is a prefill with no free block, preempts the newest until one can move. */
  private nextBatch(): Batch | undefined {
    this.secureDecodeBlocks();
    for (;;) {
      if (this.running.length === 0) return undefined;
      const batch = buildBatch(this.running, this.opts.maxBatchTokens, this.engine.blocks);
      if (batch.items.length > 0) return batch;
      this.preempt(this.running[this.running.length - 1]!);
    }
  }

  private retire(): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const s = this.running[i]!;
      if (s.generating || this.inStep.has(s)) continue;
      this.engine.blocks.release(s.blocks);
      if (s.params.adapter !== undefined) this.adapters.unpin(s.params.adapter);
      this.running.splice(i, 1);
    }
    this.checkDrained();
  }

  private finishReason(s: Sequence, tok: number): FinishReason | undefined {
    const p = s.params.sampling;
    if (!p.ignoreEos && this.engine.eosTokenIds.has(tok)) return 'eos';
    if (p.stopTokenIds.includes(tok)) return 'stop';
    const n = s.sampled.length + 1;
    if (n >= p.maxTokens) return 'length';
    if (s.params.prompt.length + n >= this.engine.config.maxPositions) return 'length';
    return undefined;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.iteration();
      } catch (e) {
        // A bug, not a request error: fail what is running rather than leave clients hanging.
        const err = new SequenceError(500, 'internal_error', `scheduler failure: ${e instanceof Error ? e.message : String(e)}`);
        for (const s of this.running) {
          s.fail(err);
          this.hooks.failed?.(s, err);
        }
        this.inStep.clear();
        this.retire();
      }
    }
  }

  /** Retire, admit, run one step (or sleep until there is work). */
  private async iteration(): Promise<void> {
    this.retire();
    this.admit();
    if (this.running.length === 0) {
      await new Promise<void>((res) => (this.wakeup = res));
      return;
    }
    const nextBatch = this.nextBatch();
    if (!nextBatch) return;
    const batch = withLateMasks(nextBatch);
    this.maxAdaptersInStep = Math.max(this.maxAdaptersInStep, batch.adapters);
    this.inStep = new Set(batch.owners);
    const t0 = performance.now();
    let results: StepItemResult[];
    try {
      results = await this.engine.runStep(batch.items);
    } catch (e) {
      const err = new SequenceError(500, 'engine_error', `the engine step failed: ${e instanceof Error ? e.message : String(e)}`);
      for (const s of batch.owners) {
        s.fail(err);
        this.hooks.failed?.(s, err);
      }
      this.inStep.clear();
      return;
    }
    this.steps++;
    this.hooks.step?.((performance.now() - t0) / 1000, batch);
    await this.textLag; // at most one step of text processing in flight
    this.textLag = this.absorb(batch, results);
    this.inStep.clear();
    this.retire();
  }

  /**
   * Applies one step's results: progress and prompt logprobs at once, sampled tokens accepted at once
   * (so the next step can be built); their text (detokenisation, stop strings, events) is processed
   * asynchronously, overlapping the next step. Resolves when that text processing is done.
   */
  private absorb(batch: Batch, results: StepItemResult[]): Promise<unknown> {
    const pending: Array<Promise<unknown>> = [];
    results.forEach((r, i) => {
      const s = batch.owners[i]!, it = batch.items[i]!;
      if (!s.generating) return;
      if (r.logits) this.addPromptLogprobs(s, it, r.logits);
      s.computed += it.tokens.length;
      if (!it.sample || r.token === undefined) return;
      this.textInFlight++;
      const p = s.accept({ token: r.token, logprob: r.logprob, top: r.top }, this.finishReason(s, r.token)).then(
        (final) => {
          if (final === undefined) return;
          this.hooks.token?.(s);
          if (final) this.hooks.finished?.(s, final);
        },
        (e: unknown) => {
          s.fail(e);
          this.hooks.failed?.(s, e);
        },
      ).finally(() => {
        this.textInFlight--;
        this.checkDrained();
      });
      pending.push(p);
    });
    return Promise.all(pending);
  }

  /** Row j of a prefill chunk's logits predicts prompt position startPosition + j + 1. */
  private addPromptLogprobs(s: Sequence, it: StepItem, logits: Float32Array): void {
    const V = this.engine.config.vocab;
    const prompt = s.params.prompt;
    if (it.startPosition === 0 && s.promptLogprobs.length === 0) s.promptLogprobs.push(Number.NaN);
    for (let j = 0; j < it.tokens.length; j++) {
      const target = it.startPosition + j + 1;
      if (target >= prompt.length) break;
      if (target < s.promptLogprobs.length) continue; // already computed before a preemption
      const row = logits.subarray(j * V, (j + 1) * V);
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (row[v]! > max) max = row[v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
      s.promptLogprobs.push(row[prompt[target]!]! - max - Math.log(sum));
    }
  }
}
