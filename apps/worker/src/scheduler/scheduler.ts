// The worker's front of the engine's scheduler (@loraplex/engine Scheduler: queues, admission,
// preemption by recompute, chunked prefill, the KV allocator). The worker keeps its policies:
//   - requests: refusals as HTTP errors (draining 503, empty prompt 400, longer than the KV cache
//     400, no host memory for the adapter 429), sequences with text processing (sequence.ts);
//   - adapter residency: AdapterManager is the engine scheduler's AdapterGate itself; only resident,
//     non-draining adapters are admitted, so distinct adapters per step never exceed the slots;
//     adapters with waiting sequences are loaded in the background, and a failed load fails only
//     the sequences waiting for it;
//   - metrics hooks (for the worker's own sequences).
import type {
  Batch,
  Scheduler as EngineScheduler,
  ScheduledSequence,
  SchedulerHooks as EngineHooks,
} from '@loraplex/engine';
import type { AdapterManager } from '../adapters/adapter-manager.js';
import { Sequence, SequenceError, type FinishReason, type SequenceParams } from './sequence.js';
import type { Decoder } from './detokenizer.js';

export interface SchedulerOptions {
  /** Most sequences running at once (also capped by the step's token budget). Default 256. */
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

/** The hooks for the engine scheduler: only the worker's own sequences reach the worker's hooks. */
function ownHooks(h: SchedulerHooks): EngineHooks {
  const own = <A extends unknown[]>(f: ((s: Sequence, ...a: A) => void) | undefined) =>
    f &&
    ((s: ScheduledSequence, ...a: A): void => {
      if (s instanceof Sequence) f(s, ...a);
    });
  return {
    submitted: own(h.submitted),
    admitted: own(h.admitted),
    preempted: own(h.preempted),
    token: own(h.token),
    finished: own(h.finished),
    failed: own(h.failed),
    cancelled: own(h.cancelled),
    step: h.step,
  };
}

export class Scheduler {
  constructor(
    /** The engine's scheduler (engine.scheduler), or one over a fake step function in tests. */
    readonly core: EngineScheduler,
    private readonly adapters: AdapterManager,
    private readonly decoder: Decoder,
    opts: SchedulerOptions = {},
    private readonly hooks: SchedulerHooks = {},
  ) {
    core.configure({
      gate: adapters,
      hooks: ownHooks(hooks),
      ...(opts.maxRunning !== undefined ? { maxRunning: opts.maxRunning } : {}),
    });
    adapters.gate(core);
  }

  get runningCount(): number {
    return this.core.runningCount;
  }

  get waitingCount(): number {
    return this.core.waitingCount;
  }

  get isAccepting(): boolean {
    return this.core.isAccepting;
  }

  get steps(): number {
    return this.core.steps;
  }

  get preemptions(): number {
    return this.core.preemptions;
  }

  get maxAdaptersInStep(): number {
    return this.core.maxAdaptersInStep;
  }

  /** Queues a sequence. Throws SequenceError when it can never run or the worker is draining. */
  submit(params: SequenceParams): Sequence {
    if (!this.core.isAccepting)
      throw new SequenceError(503, 'unavailable', 'the worker is shutting down and accepts no new requests');
    const { prompt, sampling } = params;
    if (prompt.length === 0) throw new SequenceError(400, 'invalid_request_error', 'the prompt is empty');
    const need = this.core.blocksNeeded(prompt.length, sampling.maxTokens);
    const kv = this.core.kvUsage();
    if (need > kv.totalBlocks) {
      const what = `${need} KV blocks (prompt ${prompt.length} + max tokens ${sampling.maxTokens})`;
      throw new SequenceError(
        400,
        'invalid_request_error',
        `the request needs ${what} but the KV cache has ${kv.totalBlocks} of ${kv.blockSize} tokens`,
      );
    }
    if (params.adapter !== undefined) this.adapters.checkCapacity(params.adapter);
    const seq = new Sequence(params, this.decoder);
    this.core.submit(seq);
    // The load starts now, not at the next admission round (a manual scheduler may not run one soon).
    if (params.adapter !== undefined) this.adapters.wanted([params.adapter]);
    return seq;
  }

  /** Ends a sequence at once (client disconnect): it leaves the queue or the batch, its KV blocks are freed. */
  cancel(seq: Sequence): void {
    if (seq.isEnded) return;
    seq.cancelled = true;
    this.core.cancel(seq, new CancelledError());
  }

  /** Stops accepting; resolves once every accepted request has finished. */
  drain(): Promise<void> {
    return this.core.drain();
  }

  /** Stops the loop (after drain, before closing the engine). */
  stop(): void {
    this.core.stop();
  }

  /** Wakes the loop (new work, a load finished, a drain began). */
  wake(): void {
    this.core.wake();
  }

  /** One scheduling iteration (tests drive a manual scheduler with it). */
  step(): Promise<boolean> {
    return this.core.step();
  }
}
