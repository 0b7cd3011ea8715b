// Adapter residency: which known adapters sit in the engine's LoRA slots, loading cold ones in the
// background, and evicting to make room.
//
// - require(name) starts (or joins) a load; concurrent requests for one adapter share that load.
//   Loads run beside decoding steps (the engine loads into a free slot while a step runs).
// - A slot is taken while an adapter is loading or resident. When none is free, the least recently
//   used adapter with no running sequence (pins = 0) is unloaded; adapters that sequences are
//   waiting for are kept over those nobody waits for.
// - When every slot is pinned by running sequences, one resident adapter is asked to drain: the
//   scheduler admits no new sequence for it, its running ones finish, then it is evicted. The one
//   chosen is, preferring adapters nobody waits for, the longest resident among those that have
//   admitted at least one sequence since they were loaded (so a freshly loaded adapter is never
//   drained before it served anyone: no thrashing).
// - A failed load rejects the shared promise: only the requests waiting for that adapter fail.
//   The next request for it tries again.
// The tiers below (source -> disk cache -> host memory) live in AdapterTiers; a load here first
// asks them for the adapter's files, then fills a slot from host memory.
// The manager is the engine scheduler's AdapterGate itself: the scheduler asks it whether an adapter
// may be admitted, pins it per running sequence, and names the adapters sequences wait for.
import { EngineError, type AdapterFiles, type AdapterGate, type AdapterInfo, type Scheduler } from '@loraplex/engine';
import { SequenceError } from '../scheduler/sequence.js';
import type { AdapterLocation } from './source.js';
import type { AdapterTiers } from './tiers.js';

/** What the manager needs from the engine (a fake in unit tests). */
export interface SlotEngine {
  loadAdapter(name: string, label: string, files: AdapterFiles): Promise<AdapterInfo>;
  unloadAdapter(name: string): Promise<void>;
  readonly options: { maxAdapters: number };
}

export interface AdapterHooks {
  loaded?(name: string, seconds: number): void;
  loadFailed?(name: string, err: Error): void;
  evicted?(name: string): void;
  /** Residency changed (a load finished or failed, a drain began, a slot was freed). */
  changed?(): void;
}

type State = 'cold' | 'pending' | 'loading' | 'resident' | 'evicting';

interface Entry {
  name: string;
  state: State;
  slot: number;
  pins: number;
  lastUsed: number;
  loadedAt: number;
  admittedSinceLoad: number;
  draining: boolean;
  needsRoom: boolean;
  load?: { promise: Promise<void>; resolve(): void; reject(e: unknown): void };
}

let clock = 0;
const tick = (): number => ++clock;

/** What the manager needs from the scheduler it gates: demand, a wake-up after a load, failing a load's waiters. */
export type GatedScheduler = Pick<Scheduler, 'waitingFor' | 'wake' | 'failWaiting'>;

export class AdapterManager implements AdapterGate {
  private readonly entries = new Map<string, Entry>();
  private readonly pending: string[] = [];
  private readonly descriptors = new Map<string, AdapterLocation>();
  private pumping = false;
  private again = false;
  private scheduler: GatedScheduler | undefined;

  constructor(
    private readonly engine: SlotEngine,
    readonly tiers: AdapterTiers,
    private readonly hooks: AdapterHooks = {},
  ) {
    tiers.inUse = (name) => this.demand(name) > 0 || this.pins(name) > 0 || this.isLoading(name);
  }

  /** Gates `scheduler` (the worker's Scheduler calls this once, before anything is submitted). */
  gate(scheduler: GatedScheduler): void {
    this.scheduler = scheduler;
  }

  /** Sequences waiting for an adapter. */
  private demand(name: string): number {
    return this.scheduler?.waitingFor(name) ?? 0;
  }

  /** Throws the 429 when a request for `name` would need host memory that every in-use adapter holds. */
  checkCapacity(name: string): void {
    const state = this.entries.get(name)?.state;
    if (state !== 'resident' && state !== 'pending' && state !== 'loading' && !this.tiers.hasRoomFor(name))
      throw this.tiers.tooManyAdapters();
  }

  get slots(): number {
    return this.engine.options.maxAdapters;
  }

  /** The adapter's descriptor, or undefined when no source knows it (a 404). */
  async lookup(name: string): Promise<AdapterLocation | undefined> {
    const d =
      (await this.tiers.source.lookup(name)) ??
      (this.entries.get(name)?.state === 'resident' ? this.descriptors.get(name) : undefined);
    if (d) this.descriptors.set(name, d);
    return d;
  }

  /** Every known adapter: the source's plus any still resident. */
  async list(): Promise<AdapterLocation[]> {
    const all = new Map((await this.tiers.source.list()).map((d) => [d.name, d]));
    for (const [n, e] of this.entries)
      if (e.state === 'resident' && !all.has(n) && this.descriptors.has(n)) all.set(n, this.descriptors.get(n)!);
    for (const d of all.values()) this.descriptors.set(d.name, d);
    return [...all.values()];
  }

  /**
   * The name is no longer served (vLLM's unload_lora_adapter): it resolves only if a source still knows
   * it, its host-memory copy is dropped, and an idle resident copy is unloaded (a pinned one is unloaded
   * by the usual eviction). Returns whether the name is still resident.
   */
  async forget(name: string): Promise<boolean> {
    this.descriptors.delete(name);
    this.tiers.drop(name);
    const e = this.entries.get(name);
    if (e && e.state === 'resident' && e.pins === 0) await this.evict(e);
    return this.isResident(name);
  }

  descriptor(name: string): AdapterLocation | undefined {
    return this.descriptors.get(name);
  }

  resident(): string[] {
    return [...this.entries.values()].filter((e) => e.state === 'resident').map((e) => e.name);
  }

  isResident(name: string): boolean {
    return this.entries.get(name)?.state === 'resident';
  }

  /** The scheduler may admit new sequences for it: resident and not draining. */
  admissible(name: string): boolean {
    const e = this.entries.get(name);
    return e !== undefined && e.state === 'resident' && !e.draining;
  }

  /**
   * Sequences wait for these adapters: starts the load of each that is neither resident nor loading.
   * A finished load wakes the scheduler; a failed one fails only the sequences waiting for it.
   */
  wanted(names: readonly string[]): void {
    for (const name of names) {
      const state = this.entries.get(name)?.state;
      if (state === 'resident' || state === 'pending' || state === 'loading') continue;
      this.require(name).then(
        () => this.scheduler?.wake(),
        (err: unknown) => this.scheduler?.failWaiting(name, err),
      );
    }
  }

  /** Loading or waiting for a slot. */
  isLoading(name: string): boolean {
    const s = this.entries.get(name)?.state;
    return s === 'pending' || s === 'loading';
  }

  /** Resolves when the adapter is resident; starts its load if none is under way. */
  require(name: string): Promise<void> {
    const e = this.entry(name);
    if (e.state === 'resident') return Promise.resolve();
    if (e.load) return e.load.promise;
    let resolve!: () => void, reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    e.load = { promise, resolve, reject };
    e.state = 'pending';
    this.pending.push(name);
    this.pump();
    return promise;
  }

  /** A sequence using the adapter was admitted: it cannot be evicted until unpin. Returns the slot. */
  pin(name: string): number {
    const e = this.entries.get(name);
    if (!e || e.state !== 'resident') throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${name} is not resident`);
    e.pins++;
    e.admittedSinceLoad++;
    e.lastUsed = tick();
    return e.slot;
  }

  unpin(name: string): void {
    const e = this.entries.get(name);
    if (!e || e.pins === 0) return;
    e.pins--;
    e.lastUsed = tick();
    if (e.pins === 0 && this.pending.length > 0) this.pump();
  }

  pins(name: string): number {
    return this.entries.get(name)?.pins ?? 0;
  }

  private entry(name: string): Entry {
    let e = this.entries.get(name);
    if (!e) {
      e = {
        name,
        state: 'cold',
        slot: -1,
        pins: 0,
        lastUsed: 0,
        loadedAt: 0,
        admittedSinceLoad: 0,
        draining: false,
        needsRoom: false,
      };
      this.entries.set(name, e);
    }
    return e;
  }

  private occupied(): number {
    let n = 0;
    for (const e of this.entries.values())
      if (e.state === 'loading' || e.state === 'resident' || e.state === 'evicting') n++;
    return n;
  }

  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    void (async () => {
      try {
        do {
          this.again = false;
          await this.pumpOnce();
        } while (this.again);
      } finally {
        this.pumping = false;
      }
    })();
  }

  private async pumpOnce(): Promise<void> {
    while (this.pending.length > 0) {
      const e = this.entries.get(this.pending[0]!)!;
      if (!e.needsRoom && this.occupied() < this.slots) {
        this.pending.shift();
        void this.startLoad(e);
        continue;
      }
      const victim = this.idleVictim();
      if (victim) {
        if (!(await this.evict(victim))) return;
        e.needsRoom = false;
        continue;
      }
      if (this.slots === 0 || (e.needsRoom && this.occupied() === 0)) {
        this.pending.shift();
        this.settleFailure(
          e,
          new EngineError(
            'ADAPTER_POOL_FULL',
            this.slots === 0
              ? 'the worker has no adapter slots (--max-adapters 0)'
              : `adapter ${e.name} does not fit in the empty LoRA pool`,
          ),
        );
        continue;
      }
      this.requestDrain();
      return;
    }
    this.endDrains();
  }

  /** Nothing waits for a slot any more: adapters asked to drain may admit again. */
  private endDrains(): void {
    let changed = false;
    for (const e of this.entries.values()) {
      if (e.draining && e.state === 'resident') {
        e.draining = false;
        changed = true;
      }
    }
    if (changed) this.hooks.changed?.();
  }

  /** An unpinned resident adapter to unload: draining ones first, then nobody-waits LRU, then LRU among the served. */
  private idleVictim(): Entry | undefined {
    const idle = [...this.entries.values()].filter((e) => e.state === 'resident' && e.pins === 0);
    const lru = (xs: Entry[]): Entry | undefined => xs.sort((a, b) => a.lastUsed - b.lastUsed)[0];
    return (
      lru(idle.filter((e) => e.draining)) ??
      lru(idle.filter((e) => this.demand(e.name) === 0)) ??
      lru(idle.filter((e) => e.admittedSinceLoad > 0))
    );
  }

  private requestDrain(): void {
    const resident = [...this.entries.values()].filter((e) => e.state === 'resident');
    const draining = resident.filter((e) => e.draining).length;
    if (draining >= this.pending.length) return;
    const candidates = resident.filter((e) => !e.draining && e.admittedSinceLoad > 0);
    const pick = candidates.sort(
      (a, b) => Number(this.demand(a.name) > 0) - Number(this.demand(b.name) > 0) || a.loadedAt - b.loadedAt,
    )[0];
    if (!pick) return;
    pick.draining = true;
    this.hooks.changed?.();
  }

  private async evict(e: Entry): Promise<boolean> {
    e.state = 'evicting';
    try {
      await this.engine.unloadAdapter(e.name);
    } catch {
      e.state = 'resident'; // e.g. still used by an in-flight step: retried at the next unpin
      return false;
    }
    e.state = 'cold';
    e.slot = -1;
    e.draining = false;
    this.hooks.evicted?.(e.name);
    this.hooks.changed?.();
    return true;
  }

  private async startLoad(e: Entry): Promise<void> {
    e.state = 'loading';
    const t0 = performance.now();
    try {
      const d = (await this.tiers.source.lookup(e.name)) ?? this.descriptors.get(e.name);
      if (!d) throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${e.name} is no longer in the adapter directory`);
      this.descriptors.set(e.name, d);
      const files = await this.tiers.files(e.name, d);
      const info = await this.engine.loadAdapter(e.name, d.path, files);
      e.state = 'resident';
      e.slot = info.slot;
      e.loadedAt = e.lastUsed = tick();
      e.admittedSinceLoad = 0;
      e.draining = false;
      e.needsRoom = false;
      this.hooks.loaded?.(e.name, (performance.now() - t0) / 1000);
      const load = e.load;
      e.load = undefined;
      load?.resolve();
    } catch (err) {
      if (err instanceof EngineError && err.code === 'ADAPTER_POOL_FULL' && this.occupied() > 1) {
        // The pool's rank pages (not the slot count) ran out: free another adapter and retry.
        e.state = 'pending';
        e.needsRoom = true;
        this.pending.unshift(e.name);
      } else {
        this.settleFailure(e, err);
      }
    } finally {
      this.hooks.changed?.();
      this.pump();
    }
  }

  private settleFailure(e: Entry, err: unknown): void {
    e.state = 'cold';
    e.needsRoom = false;
    const msg = err instanceof Error ? err.message : String(err);
    const code = err instanceof EngineError ? ` (${err.code})` : '';
    const failure =
      err instanceof SequenceError
        ? err
        : new SequenceError(424, 'adapter_load_error', `adapter ${e.name} failed to load${code}: ${msg}`);
    this.hooks.loadFailed?.(e.name, failure);
    const load = e.load;
    e.load = undefined;
    load?.reject(failure);
  }
}
