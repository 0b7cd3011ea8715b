// The main thread's handle on one grammar engine thread (engine-thread.ts): requests with ids,
// batched per microtask (the masks of one step travel as one message each way), and the limits.
//
// A request fails alone (EngineRequestError) when xgrammar refuses it. The thread is ended — and
// every other request still pending on it rejects with EngineDiedError, meaning "not your fault:
// go again on a fresh engine" — when a request traps, needs more WebAssembly memory or JS heap than
// allowed, runs past its time limit, or the thread dies any other way. The request the thread was
// executing at that moment (a shared progress slot says which) gets the EngineRequestError.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type {
  AdvanceReply,
  EngineFailure,
  EngineMessage,
  EngineReply,
  EngineRequest,
  EngineThreadInit,
} from './engine-protocol.js';

export interface EngineLimits {
  /** A compile running longer is stopped (the thread is ended); its request fails. */
  compileMs: number;
  /** A matcher request (accept + mask) running longer is stopped the same way. */
  matchMs: number;
  /** WebAssembly memory of the engine, bytes. */
  wasmMemoryBytes: number;
  /** The thread's JS heap (Worker resourceLimits.maxOldGenerationSizeMb). */
  heapMb: number;
}

export const ENGINE_LIMITS: EngineLimits = {
  compileMs: 10_000,
  matchMs: 10_000,
  wasmMemoryBytes: 2 * 2 ** 30,
  heapMb: 512,
};

/** Why a request failed; `kind` 'time' and 'crash' come from the main thread's side. */
export class EngineRequestError extends Error {
  constructor(
    readonly kind: EngineFailure['kind'] | 'time' | 'crash',
    message: string,
  ) {
    super(message);
    this.name = 'EngineRequestError';
  }
}

/** The engine thread ended while this request waited: another request's fault; retry on a new engine. */
export class EngineDiedError extends Error {
  constructor(why: string) {
    super(`the grammar engine was replaced (${why})`);
    this.name = 'EngineDiedError';
  }
}

type Request = EngineRequest extends infer R ? (R extends EngineRequest ? Omit<R, 'id'> : never) : never;
interface Pending {
  op: EngineRequest['op'];
  resolve(r: EngineReply): void;
  reject(e: Error): void;
}

/**
 * The thread's entry: next to this module when running from dist; when running from the sources
 * (tests), the built one in dist (`pnpm test` builds first) — a worker thread cannot load TypeScript.
 */
function threadEntry(): URL {
  const here = new URL('./engine-thread.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  return new URL('../../dist/structured/engine-thread.js', import.meta.url);
}

let nextId = 1;
/** Ids for requests, grammars and matchers: unique across engines, so a stale id never aliases. */
export const newId = (): number => nextId++;

export class EngineThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private outbox: EngineRequest[] = [];
  private readonly progress = new SharedArrayBuffer(4);
  private compileTimer: NodeJS.Timeout | undefined;
  private matchTimer: NodeJS.Timeout | undefined;
  /** Why the thread ended; set once. */
  died: string | undefined;
  readonly ready: Promise<void>;

  constructor(
    init: Omit<EngineThreadInit, 'progress' | 'wasmMemoryLimit'>,
    private readonly limits: EngineLimits,
    private readonly onDeath: (engine: EngineThread) => void,
  ) {
    this.worker = new Worker(threadEntry(), {
      workerData: {
        ...init,
        wasmMemoryLimit: limits.wasmMemoryBytes,
        progress: this.progress,
      } satisfies EngineThreadInit,
      resourceLimits: { maxOldGenerationSizeMb: limits.heapMb },
    });
    this.worker.unref(); // an idle engine never keeps the process alive (referenced while requests wait)
    this.ready = new Promise<void>((resolve, reject) => {
      this.worker.on('message', (m: EngineMessage) => {
        if ('ready' in m) resolve();
        else if ('started' in m) this.compileStarted(m.started);
        else this.replies(m.batch);
      });
      this.worker.on('error', (e) => {
        reject(e);
        const oom = (e as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY';
        this.end(
          oom ? 'memory' : 'crash',
          oom
            ? `needed more than the grammar engine's JS heap limit (${limits.heapMb} MiB)`
            : `the grammar engine crashed: ${e.message}`,
        );
      });
      this.worker.on('exit', (code) => {
        reject(new Error(`the grammar engine thread exited (code ${code}) while starting`));
        this.end('crash', `the grammar engine thread exited (code ${code})`);
      });
    });
    this.ready.catch(() => undefined);
  }

  /** A compile is running in the thread (from its start there to its answer). */
  get compiling(): boolean {
    return this.compileTimer !== undefined;
  }

  get dead(): boolean {
    return this.died !== undefined;
  }

  /** Sends a request (batched with the others of this tick); resolves to its reply, rejects with EngineRequestError / EngineDiedError. */
  request(r: Omit<Extract<EngineRequest, { op: 'advance' }>, 'id'>): Promise<AdvanceReply>;
  request(r: Request): Promise<EngineReply>;
  request(r: Request): Promise<EngineReply> {
    if (this.died) return Promise.reject(new EngineDiedError(this.died));
    const id = newId();
    if (this.outbox.length === 0) queueMicrotask(() => this.flush());
    if (this.pending.size === 0) this.worker.ref();
    this.outbox.push({ ...r, id } as EngineRequest);
    return new Promise<EngineReply>((resolve, reject) => this.pending.set(id, { op: r.op, resolve, reject }));
  }

  /** Sends a request whose reply nobody needs (freeing a matcher or grammar). */
  post(r: Request): void {
    this.request(r).catch(() => undefined);
  }

  private flush(): void {
    if (this.died || this.outbox.length === 0) return;
    const batch = this.outbox;
    this.outbox = [];
    this.worker.postMessage({ batch });
    if (!this.matchTimer && batch.some((r) => r.op !== 'compile')) this.armMatchTimer();
  }

  private replies(batch: EngineReply[]): void {
    for (const r of batch) {
      const p = this.pending.get(r.id);
      if (!p) continue;
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      if (p.op === 'compile') this.clearCompileTimer();
      if (r.ok) p.resolve(r);
      else p.reject(new EngineRequestError(r.kind, r.message));
      // The instance may be corrupt (trap) or over its memory: nothing else may run in it.
      if (!r.ok && (r.kind === 'trap' || r.kind === 'memory'))
        this.end('crash', `${r.kind} in request ${r.id}: ${r.message}`, r.id);
    }
    if (this.matchTimer) {
      clearTimeout(this.matchTimer);
      this.matchTimer = undefined;
      if ([...this.pending.values()].some((p) => p.op !== 'compile')) this.armMatchTimer();
    }
  }

  private compileStarted(id: number): void {
    this.clearCompileTimer();
    this.compileTimer = setTimeout(
      () => this.end('time', `compiling took longer than the ${this.limits.compileMs} ms limit`, id),
      this.limits.compileMs,
    );
  }

  private clearCompileTimer(): void {
    clearTimeout(this.compileTimer);
    this.compileTimer = undefined;
  }

  /** Matcher requests: the thread must answer something within the limit, unless it is compiling (its own limit). */
  private armMatchTimer(): void {
    this.matchTimer = setTimeout(() => {
      this.matchTimer = undefined;
      const current = Atomics.load(new Int32Array(this.progress), 0);
      if (this.compileTimer || this.pending.get(current)?.op === 'compile') return this.armMatchTimer();
      this.end('time', `matching took longer than the ${this.limits.matchMs} ms limit`, current);
    }, this.limits.matchMs);
  }

  /**
   * Ends the thread: `culprit` (by default the request it was executing) fails with `message`; every
   * other pending request rejects with EngineDiedError.
   */
  end(
    kind: EngineRequestError['kind'],
    message: string,
    culprit = Atomics.load(new Int32Array(this.progress), 0),
  ): void {
    if (this.died) return;
    this.died = message;
    this.clearCompileTimer();
    clearTimeout(this.matchTimer);
    void this.worker.terminate();
    for (const [id, p] of this.pending)
      p.reject(id === culprit ? new EngineRequestError(kind, message) : new EngineDiedError(message));
    this.pending.clear();
    this.outbox = [];
    this.onDeath(this);
  }

  /** Ends the thread on purpose (shutdown, tests). */
  close(): Promise<number> {
    this.end('crash', 'the grammar engine was closed', -1);
    return this.worker.terminate();
  }
}
