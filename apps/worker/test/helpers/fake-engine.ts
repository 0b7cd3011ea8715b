// A fake engine for scheduler and adapter-manager tests: the engine's real scheduler (and its KV
// allocator) over scripted steps (token = f(last token, adapter slot)), slots with optional load
// latency and failures.
import type { Clock } from '@loraplex/common';
import {
  EngineError,
  Scheduler as EngineScheduler,
  resolveSampling,
  type AdapterInfo,
  type KvUsage,
  type StepItem,
  type StepItemResult,
} from '@loraplex/engine';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdapterManager } from '../../src/adapters/adapter-manager.js';
import { DiskCache } from '../../src/adapters/disk-cache.js';
import { AdapterTiers } from '../../src/adapters/tiers.js';
import { FIXTURES } from './http.js';
import type { AdapterLocation, AdapterSource } from '../../src/adapters/source.js';
import { Scheduler, type SchedulerHooks } from '../../src/scheduler/scheduler.js';
import type { SequenceParams } from '../../src/scheduler/sequence.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class FakeEngine {
  /** The engine scheduler over this fake's steps (set by setup()). */
  core: EngineScheduler | undefined;
  readonly kvBlocks: number;
  readonly blockSize: number;
  readonly eosTokenIds = new Set<number>([0]);
  readonly config = { maxPositions: 256, vocab: 64 };
  readonly options: { maxAdapters: number };
  readonly steps: StepItem[][] = [];
  readonly loads: string[] = [];
  readonly unloads: string[] = [];
  readonly failLoad = new Set<string>();
  loadDelayMs = 0;
  stepDelayMs = 0;
  /** Rank pages of the LoRA pool (Infinity = only slots limit), and each adapter's rank. */
  poolPages = Infinity;
  ranks: Record<string, number> = {};
  private readonly slots: Array<string | undefined>;

  constructor(opts: { maxAdapters?: number; kvBlocks?: number; blockSize?: number } = {}) {
    this.options = { maxAdapters: opts.maxAdapters ?? 2 };
    this.slots = new Array(this.options.maxAdapters).fill(undefined);
    this.kvBlocks = opts.kvBlocks ?? 256;
    this.blockSize = opts.blockSize ?? 4;
  }

  kvUsage(): KvUsage {
    return this.core!.kvUsage();
  }

  async loadAdapter(name: string, dir: string): Promise<AdapterInfo> {
    this.loads.push(name);
    if (this.loadDelayMs) await sleep(this.loadDelayMs);
    if (this.failLoad.has(name))
      throw new EngineError('ADAPTER_CONFIG', `${dir}/adapter_config.json: not a LoRA config`);
    const slot = this.slots.indexOf(undefined);
    if (slot < 0) throw new EngineError('ADAPTER_POOL_FULL', 'all slots are taken');
    const used = this.slots.reduce((n, a) => n + (a ? (this.ranks[a] ?? 8) : 0), 0);
    if (used + (this.ranks[name] ?? 8) > this.poolPages)
      throw new EngineError('ADAPTER_POOL_FULL', `the LoRA pool has ${this.poolPages - used} free rank pages`);
    this.slots[slot] = name;
    return { name, slot, rank: 8, path: dir, bytes: 0, modules: 0 };
  }

  async unloadAdapter(name: string): Promise<void> {
    const slot = this.slots.indexOf(name);
    if (slot < 0) throw new EngineError('ADAPTER_NOT_FOUND', name);
    this.slots[slot] = undefined;
    this.unloads.push(name);
  }

  async runStep(items: StepItem[]): Promise<StepItemResult[]> {
    this.steps.push(items);
    if (this.stepDelayMs) await sleep(this.stepDelayMs);
    // Never EOS (0): 1..63 from the last token and the slot.
    return items.map((it) =>
      it.sample ? { token: 1 + ((it.tokens[it.tokens.length - 1]! * 7 + it.adapterSlot + 3) % 63), logprob: -1 } : {},
    );
  }
}

/** Names mapped onto the real fixture adapter directories (the host tier reads their files). */
export class FakeSource implements AdapterSource {
  constructor(readonly names: string[]) {}
  private describe(name: string): AdapterLocation {
    const dirs = ['lora_all_r8', 'lora_qv_r4', 'lora_qkvo_r16_rslora'];
    return { name, path: join(FIXTURES, 'llama', 'adapters', dirs[this.names.indexOf(name) % dirs.length]!) };
  }
  async list(): Promise<AdapterLocation[]> {
    return this.names.map((name) => this.describe(name));
  }
  async lookup(name: string): Promise<AdapterLocation | undefined> {
    return this.names.includes(name) ? this.describe(name) : undefined;
  }
}

export function tiersOver(source: AdapterSource, hostAdapters = 64): AdapterTiers {
  return new AdapterTiers(source, new DiskCache(join(tmpdir(), 'loraplex-test-disk-cache'), 1 << 30), {
    maxAdapters: hostAdapters,
    maxBytes: 1 << 30,
  });
}

/** Decodes token t as one letter. */
export const letters = {
  decode: async (ids: number[]): Promise<string> => ids.map((i) => String.fromCharCode(97 + (i % 26))).join(''),
};

export interface SetupOptions {
  maxAdapters?: number;
  kvBlocks?: number;
  blockSize?: number;
  adapters?: string[];
  sched?: { maxBatchTokens?: number; maxRunning?: number };
  hooks?: SchedulerHooks;
  /** Steps only when the test calls scheduler.step(). */
  manual?: boolean;
  clock?: Clock;
}

export function setup(opts: SetupOptions = {}) {
  const engine = new FakeEngine(opts);
  const core = new EngineScheduler({
    runStep: (items) => engine.runStep(items), // looked up per step: tests wrap engine.runStep
    numBlocks: engine.kvBlocks,
    blockSize: engine.blockSize,
    vocab: engine.config.vocab,
    maxPositions: engine.config.maxPositions,
    eos: engine.eosTokenIds,
    maxBatchTokens: opts.sched?.maxBatchTokens ?? 64,
    ...(opts.manual ? { manual: true } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  engine.core = core;
  let scheduler: Scheduler | undefined;
  const adapters = new AdapterManager(engine, tiersOver(new FakeSource(opts.adapters ?? ['A', 'B', 'C', 'D'])), {
    changed: () => scheduler?.wake(),
  });
  scheduler = new Scheduler(
    core,
    adapters,
    letters,
    opts.sched?.maxRunning !== undefined ? { maxRunning: opts.sched.maxRunning } : {},
    opts.hooks ?? {},
  );
  return { engine, adapters, scheduler };
}

/** Steps a manual scheduler until it has nothing left to run. */
export async function runToIdle(scheduler: Scheduler, maxSteps = 10_000): Promise<number> {
  let n = 0;
  while (await scheduler.step()) if (++n > maxSteps) throw new Error('the scheduler did not go idle');
  return n;
}

export function params(
  adapter: string | undefined,
  maxTokens = 4,
  prompt: number[] = [5, 6, 7],
  extra: Partial<SequenceParams> = {},
): SequenceParams {
  return {
    adapter,
    prompt,
    sampling: resolveSampling({ maxTokens, temperature: 0 }, 64),
    stop: [],
    includeStopString: false,
    promptLogprobs: false,
    route: 'test',
    ...extra,
  };
}
