// The continuous-batching scheduler (iteration-level scheduling, as in Orca / vLLM /
// text-generation-inference's router). It owns the KV block allocator. One step():
//   1. retires finished and cancelled sequences (KV blocks back to the allocator, adapter unpinned);
//   2. admits waiting sequences (admission.ts: round-robin across adapter queues, prefill blocks
//      plus a watermark, only adapters the AdapterGate admits);
//   3. secures a KV block for every decode token, preempting by recompute when the cache runs out:
//      the victim loses its blocks and adapter pin and goes back to the front of its queue;
//      re-admitted, it prefills prompt + the tokens it had sampled (not re-sampled, not re-emitted)
//      and sampling goes on at the same draw index, so greedy and seeded outputs equal an
//      uninterrupted run;
//   4. builds the batch (batcher.ts), runs one engine step and absorbs its results.
// Sampled tokens are recorded at once; what a sequence's owner does with them (the worker's text
// processing) may lag one step: it overlaps the next step and is awaited before absorbing it.
// KV blocks are allocated as prefill chunks and decode tokens need them, never reserved ahead.
// Steps run one at a time. The scheduler runs itself while it has work (wake()), or, with
// `manual`, only when the caller calls step() (tests).
import { EngineError } from '../errors.js';
import { BlockAllocator } from '../kv-cache.js';
import type { StepItem, StepItemResult } from '../step.js';
import { chooseAdmissions, secureDecodeBlocks, tokenFinish, watermarkBlocks } from './admission.js';
import { buildBatch, type Batch } from './batcher.js';
import { monotonicClock, type Clock } from '@loraplex/common';
import type { AdapterGate } from './gate.js';
import { AdapterQueues } from './queue.js';
import type { AcceptResult, FinishReason, SampledToken, ScheduledSequence } from './sequence.js';

export type StepFn = (items: StepItem[]) => Promise<StepItemResult[]>;

export interface KvUsage {
  freeBlocks: number;
  totalBlocks: number;
  blockSize: number;
}

export interface SchedulerHooks<S extends ScheduledSequence = ScheduledSequence> {
  submitted?(s: S): void;
  /** First admission only (a re-admission after a preemption does not call it again). */
  admitted?(s: S): void;
  /** Preempted by recompute: KV freed, back to the front of its queue. */
  preempted?(s: S): void;
  /** A token the owner kept (accept() resolved to null or a finish reason). */
  token?(s: S): void;
  finished?(s: S, reason: FinishReason): void;
  failed?(s: S, err: unknown): void;
  cancelled?(s: S): void;
  step?(seconds: number, batch: Batch<S>): void;
}

export interface SchedulerOptions {
  runStep: StepFn;
  numBlocks: number;
  blockSize: number;
  vocab: number;
  maxPositions: number;
  eos: ReadonlySet<number>;
  /** Token budget of one step. */
  maxBatchTokens: number;
  /** Most sequences running at once (also capped by maxBatchTokens). Default 256. */
  maxRunning?: number;
  gate?: AdapterGate;
  hooks?: SchedulerHooks;
  clock?: Clock;
  /** Run only when step() is called (tests); by default the scheduler runs itself while it has work. */
  manual?: boolean;
}

const noAdapters: AdapterGate = {
  admissible: () => false,
  pin: (a) => {
    throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${a} is not loaded`);
  },
  unpin: () => undefined,
};

export class Scheduler<S extends ScheduledSequence = ScheduledSequence> {
  private readonly kv: BlockAllocator;
  private readonly queues = new AdapterQueues<S>();
  private readonly running: S[] = [];
  private inStep = new Set<S>();
  /** Owner processing of the previous step's tokens (overlaps the next step; awaited before absorbing it). */
  private ownerLag: Promise<unknown> = Promise.resolve();
  private ownerInFlight = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private looping = false;
  private again = false;
  private accepting = true;
  private stopped = false;
  private drained: Array<() => void> = [];
  private maxRunning: number;
  private readonly watermark: number;
  private readonly runStep: StepFn;
  private gate: AdapterGate;
  private hooks: SchedulerHooks<S>;
  private readonly clock: Clock;
  private readonly manual: boolean;
  /** Steps run so far (for tests and metrics). */
  steps = 0;
  /** Largest number of distinct adapters seen in one step. */
  maxAdaptersInStep = 0;
  /** Preemptions so far. */
  preemptions = 0;

  constructor(private readonly opts: SchedulerOptions) {
    this.kv = new BlockAllocator(opts.numBlocks, opts.blockSize);
    this.runStep = opts.runStep;
    this.gate = opts.gate ?? noAdapters;
    this.hooks = (opts.hooks ?? {}) as SchedulerHooks<S>;
    this.clock = opts.clock ?? monotonicClock;
    this.manual = opts.manual === true;
    this.maxRunning = Math.max(1, Math.min(opts.maxRunning ?? 256, opts.maxBatchTokens));
    this.watermark = watermarkBlocks(opts.numBlocks);
  }

  /** Hands adapter residency, hooks and the running cap to an owner (the worker), before it submits. */
  configure(c: { gate?: AdapterGate; hooks?: SchedulerHooks<S>; maxRunning?: number }): void {
    if (c.gate) this.gate = c.gate;
    if (c.hooks) this.hooks = c.hooks;
    if (c.maxRunning !== undefined) this.maxRunning = Math.max(1, Math.min(c.maxRunning, this.opts.maxBatchTokens));
  }

  kvUsage(): KvUsage {
    return { freeBlocks: this.kv.freeBlocks, totalBlocks: this.kv.numBlocks, blockSize: this.kv.blockSize };
  }

  /** KV blocks of a sequence's whole length, prompt + max tokens, capped by the context. */
  blocksNeeded(promptLength: number, maxTokens: number): number {
    return this.kv.blocksFor(Math.min(promptLength + maxTokens, this.opts.maxPositions));
  }

  /** Blocks outside any scheduled sequence, for callers of the raw step API (tests, benchmarks). */
  leaseBlocks(n: number): number[] {
    return this.kv.allocate(n);
  }

  /** Grows a leased table to cover `tokens` positions. */
  extendLease(table: number[], tokens: number): void {
    this.kv.ensure(table, tokens);
  }

  releaseLease(table: number[]): void {
    this.kv.release(table);
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

  /** Sequences waiting for an adapter (the residency policy's demand signal). */
  waitingFor(adapter: string): number {
    return this.queues.waiting(adapter);
  }

  /** Queues a sequence. Throws KV_CACHE_FULL when its whole length can never fit the cache. */
  submit(seq: S): S {
    if (!this.accepting)
      throw new EngineError('ENGINE_CLOSED', 'the scheduler is draining and accepts no new sequences');
    if (seq.prompt.length === 0) throw new EngineError('INVALID_ARGUMENT', 'a prompt needs at least one token');
    const need = this.blocksNeeded(seq.prompt.length, seq.sampling.maxTokens);
    if (need > this.kv.numBlocks) {
      const total = seq.prompt.length + seq.sampling.maxTokens;
      throw new EngineError(
        'KV_CACHE_FULL',
        `a request of ${total} tokens needs ${need} KV blocks but the cache has ${this.kv.numBlocks} of ${this.kv.blockSize} tokens`,
      );
    }
    seq.enqueuedAt = this.clock.now();
    this.queues.push(seq);
    this.hooks.submitted?.(seq);
    this.wake();
    return seq;
  }

  /** Ends a sequence at once with `err`: it leaves the queue or the batch, its KV blocks are freed. */
  cancel(seq: S, err: unknown): void {
    if (seq.isEnded) return;
    seq.fail(err);
    this.hooks.cancelled?.(seq);
    if (this.queues.remove(seq)) return;
    // Safe while a step runs: blocks are handed out only between steps, and the step already copied its block tables.
    this.kv.release(seq.blocks);
    if (!this.inStep.has(seq)) this.retire();
    this.wake();
  }

  /** Fails every sequence waiting for `adapter` (its load failed). */
  failWaiting(adapter: string, err: unknown): void {
    for (const s of this.queues.takeAll(adapter)) {
      s.fail(err);
      this.hooks.failed?.(s, err);
    }
    this.checkDrained();
  }

  /** Stops accepting; resolves once every accepted sequence has finished. */
  drain(): Promise<void> {
    this.accepting = false;
    return new Promise<void>((res) => {
      this.drained.push(res);
      this.checkDrained();
    });
  }

  /** Stops running itself (after drain, before closing the engine). */
  stop(): void {
    this.stopped = true;
  }

  private checkDrained(): void {
    if (this.accepting || this.running.length > 0 || this.queues.size > 0 || this.ownerInFlight > 0) return;
    const d = this.drained;
    this.drained = [];
    for (const r of d) r();
  }

  /** New work, a load finished, a drain began: runs the scheduler until it is idle (unless manual). */
  wake(): void {
    if (this.manual || this.stopped) return;
    if (this.looping) {
      this.again = true;
      return;
    }
    this.looping = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.again = false;
        const worked = await this.step();
        if (this.stopped || (!worked && !this.again)) break;
      }
    } finally {
      this.looping = false;
    }
  }

  /**
   * One scheduling iteration: retire, admit, build the batch, run one engine step, absorb it.
   * Resolves to false when there was nothing to run. Calls are serialised.
   */
  step(): Promise<boolean> {
    const run = this.chain.then(() => this.iteration());
    this.chain = run.catch(() => undefined);
    return run;
  }

  private admit(): void {
    const waiting = this.queues.adaptersWaiting();
    if (waiting.length > 0) this.gate.wanted?.(waiting);
    const admitted = chooseAdmissions({
      queues: this.queues,
      running: this.running,
      kv: this.kv,
      gate: this.gate,
      maxRunning: this.maxRunning,
      watermark: this.watermark,
    });
    for (const s of admitted) {
      s.adapterSlot = s.adapter === undefined ? -1 : this.gate.pin(s.adapter);
      this.running.push(s);
      s.markAdmitted();
      if (s.preemptions === 0) this.hooks.admitted?.(s);
    }
  }

  /** Preemption by recompute: frees the KV blocks and the adapter pin, re-queues at the front. */
  private preempt(s: S): void {
    this.running.splice(this.running.indexOf(s), 1);
    this.kv.release(s.blocks);
    if (s.adapter !== undefined) this.gate.unpin(s.adapter);
    s.preempt();
    this.queues.pushFront(s);
    this.preemptions++;
    this.hooks.preempted?.(s);
  }

  private retire(): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const s = this.running[i]!;
      if (s.generating || this.inStep.has(s)) continue;
      this.kv.release(s.blocks);
      if (s.adapter !== undefined) this.gate.unpin(s.adapter);
      this.running.splice(i, 1);
    }
    this.checkDrained();
  }

  /**
   * One iteration: retire, admit, secure decode blocks, build the batch, run the engine step, absorb
   * its results. A throw here is a bug, not a request error: what is running fails rather than hangs.
   */
  private async iteration(): Promise<boolean> {
    try {
      this.retire();
      this.admit();
      if (this.running.length === 0) return false;
      secureDecodeBlocks(this.running, this.kv, (v) => this.preempt(v));
      // When every running sequence is a prefill with no free block, preempt the newest until one can move.
      let batch: Batch<S>;
      for (;;) {
        if (this.running.length === 0) return true; // everything went back to the queues: admit again
        batch = buildBatch(this.running, this.opts.maxBatchTokens, this.kv);
        if (batch.items.length > 0) break;
        this.preempt(this.running[this.running.length - 1]!);
      }
      this.maxAdaptersInStep = Math.max(this.maxAdaptersInStep, batch.adapters);
      this.inStep = new Set(batch.owners);
      const t0 = this.clock.now();
      let results: StepItemResult[];
      try {
        results = await this.runStep(batch.items);
      } catch (e) {
        for (const s of batch.owners) {
          s.stepFailed(e);
          this.hooks.failed?.(s, e);
        }
        this.inStep.clear();
        return true;
      }
      this.steps++;
      this.hooks.step?.((this.clock.now() - t0) / 1000, batch);
      await this.ownerLag; // at most one step of owner processing in flight
      this.ownerLag = this.absorb(batch, results);
      this.inStep.clear();
      this.retire();
      return true;
    } catch (e) {
      for (const s of this.running) {
        s.schedulerFailed(e);
        this.hooks.failed?.(s, e);
      }
      this.inStep.clear();
      this.retire();
      return true;
    }
  }

  /**
   * Applies one step's results: progress and prompt logits at once, sampled tokens accepted at once
   * (so the next step can be built). Resolves when the owners' processing of them is done.
   */
  private absorb(batch: Batch<S>, results: StepItemResult[]): Promise<unknown> {
    const pending: Array<Promise<void>> = [];
    const V = this.opts.vocab;
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!,
        s = batch.owners[i]!,
        it = batch.items[i]!;
      if (!s.generating) continue;
      if (r.logits) {
        for (let j = 0; j < it.tokens.length; j++) {
          const pos = it.startPosition + j;
          if (pos >= s.prompt.length) break;
          if (pos < s.promptLogitRows) continue; // delivered before a preemption
          s.promptLogitsRow(pos, r.logits.subarray(j * V, (j + 1) * V));
          s.promptLogitRows = pos + 1;
        }
      }
      s.computed += it.tokens.length;
      if (!it.sample || r.token === undefined) {
        if (s.prefilled && s.sampling.maxTokens === 0) s.finishWithoutSampling();
        continue;
      }
      pending.push(this.deliver(s, { token: r.token, logprob: r.logprob, top: r.top }));
    }
    return Promise.all(pending);
  }

  /** Hands a sampled token to its owner; resolves once the owner has processed it (token/finish or failure hooks). */
  private async deliver(s: S, tok: SampledToken): Promise<void> {
    this.ownerInFlight++;
    try {
      let final: AcceptResult;
      try {
        final = await s.accept(tok, tokenFinish(s, tok.token, this.opts.eos, this.opts.maxPositions));
      } catch (e) {
        s.fail(e);
        this.hooks.failed?.(s, e);
        return;
      }
      if (final === undefined) return;
      this.hooks.token?.(s);
      if (final) this.hooks.finished?.(s, final);
    } finally {
      this.ownerInFlight--;
      this.checkDrained();
    }
  }
}
