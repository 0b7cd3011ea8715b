// The in-process engine: one base model, many LoRA adapters in slots, and generate() / runStep()
// over mixed batches. The counterpart of vLLM's LLM class.
import { resolve } from 'node:path';
import {
  buildAdapter,
  parseAdapterFiles,
  readAdapterFiles,
  readModelConfig,
  resolveAdapterModulesAsync,
  type AdapterFiles,
  type ModelConfig,
} from '@loraplex/formats';
import { EngineError, toEngineError } from './errors.js';
import { runGeneration, type FinishReason, type TokenConstraint, type TokenLogprob } from './generate.js';
import { loadedAdaptersGate } from './scheduler/gate.js';
import { Scheduler, type KvUsage } from './scheduler/scheduler.js';
import {
  loadAddon,
  type NativeAdapterHandle,
  type NativeModel,
  type NativeModelSpec,
  type NativeStepInput,
  type NativeStepOutput,
} from './native.js';
import { resolveSampling, type SamplingOptions } from './sampling.js';
import {
  buildStepInput,
  fillLateMasks,
  splitStepOutput,
  type LateMask,
  type StepItem,
  type StepItemResult,
} from './step.js';
import { TextTokenizer } from './tokenizer.js';
import { readModelWeights } from './weights.js';

export interface EngineOptions {
  /** 'auto' picks CUDA when the addon was built with it and a GPU is present. Default 'auto'. */
  backend?: 'cpu' | 'cuda' | 'auto';
  /** Adapter slots resident at once. Default 8. */
  maxAdapters?: number;
  /** Largest LoRA rank accepted. Default 64. */
  maxLoraRank?: number;
  /** Rank-rows in the LoRA pool shared by all slots. Default maxAdapters * maxLoraRank. */
  loraPoolRanks?: number;
  /** KV cache capacity in tokens (rounded up to whole blocks). Default: what fits in 512 MiB, between 256 and 8192. */
  kvCacheTokens?: number;
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** CPU threads. Default: all cores. */
  threads?: number;
  /** Token budget of one step (decode tokens plus prefill chunks). Default 512. */
  maxBatchTokens?: number;
  /** Storage of LoRA weights: 'auto' is float32 for float32 models and bfloat16 for half-precision ones. */
  loraDtype?: 'auto' | 'float32' | 'bfloat16';
}

export interface GenerateRequest {
  prompt: string | number[];
  adapter?: string;
  sampling?: SamplingOptions;
  returnPromptLogits?: boolean;
  constraint?: TokenConstraint;
}

export interface GenerateOutput {
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number[];
  /** [promptLength x vocab] when returnPromptLogits was set. */
  promptLogits?: Float32Array;
  logprobs?: TokenLogprob[];
}

export interface AdapterInfo {
  name: string;
  slot: number;
  rank: number;
  path: string;
  bytes: number;
  modules: number;
}

/** A loaded adapter: its native handle (slot, pages, pins) and what listAdapters() reports. */
interface AdapterEntry {
  handle: NativeAdapterHandle;
  name: string;
  rank: number;
  path: string;
  bytes: number;
  modules: number;
}

export class Engine {
  readonly config: ModelConfig;
  readonly tokenizer: TextTokenizer | undefined;
  readonly backend: string;
  /**
   * The one scheduler of this engine: it owns the KV block allocator. Engine.generate submits to it;
   * the worker configures it (adapter gate, hooks) and submits its own sequences.
   */
  readonly scheduler: Scheduler;
  readonly eosTokenIds: Set<number>;
  readonly options: Required<EngineOptions>;
  private readonly native: NativeModel;
  private readonly adapters = new Map<string, AdapterEntry>();
  private readonly pendingAdapters = new Set<string>();
  private stepChain: Promise<unknown> = Promise.resolve();
  private maskTicket = 0;
  private closed = false;

  private constructor(
    config: ModelConfig,
    tokenizer: TextTokenizer | undefined,
    native: NativeModel,
    backend: string,
    options: Required<EngineOptions>,
  ) {
    this.config = config;
    this.tokenizer = tokenizer;
    this.native = native;
    this.backend = backend;
    this.options = options;
    this.eosTokenIds = new Set(config.eosTokenIds);
    // Serving chat, stop on the tokenizer's eos token too (as vLLM does).
    const tkEos = tokenizer?.eosToken !== undefined ? tokenizer.tokenId(tokenizer.eosToken) : undefined;
    if (tkEos !== undefined) this.eosTokenIds.add(tkEos);
    this.scheduler = new Scheduler({
      runStep: (items) => this.runStep(items),
      numBlocks: Math.ceil(options.kvCacheTokens / options.blockSize),
      blockSize: options.blockSize,
      vocab: config.vocab,
      maxPositions: config.maxPositions,
      eos: this.eosTokenIds,
      maxBatchTokens: options.maxBatchTokens,
      gate: loadedAdaptersGate((name) => this.adapters.get(name)?.handle.slot),
    });
  }

  static async load(modelDir: string, opts: EngineOptions = {}): Promise<Engine> {
    const options: Required<EngineOptions> = {
      backend: opts.backend ?? 'auto',
      maxAdapters: opts.maxAdapters ?? 8,
      maxLoraRank: opts.maxLoraRank ?? 64,
      loraPoolRanks: opts.loraPoolRanks ?? (opts.maxAdapters ?? 8) * (opts.maxLoraRank ?? 64),
      kvCacheTokens: opts.kvCacheTokens ?? 0, // resolved once the config is known
      blockSize: opts.blockSize ?? 16,
      threads: opts.threads ?? 0,
      maxBatchTokens: opts.maxBatchTokens ?? 512,
      loraDtype: opts.loraDtype ?? 'auto',
    };
    const intOpt = (k: keyof EngineOptions, lo: number, hi: number): void => {
      const v = options[k] as number;
      if (!Number.isInteger(v) || v < lo || v > hi)
        throw new EngineError('INVALID_ARGUMENT', `option ${k} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
    };
    intOpt('maxAdapters', 0, 65536);
    intOpt('maxLoraRank', 1, 1024);
    intOpt('loraPoolRanks', 0, 1 << 24);
    if (opts.kvCacheTokens !== undefined) intOpt('kvCacheTokens', 1, 1 << 26);
    intOpt('blockSize', 1, 4096);
    intOpt('threads', 0, 1024);
    intOpt('maxBatchTokens', 1, 1 << 20);
    if (!['auto', 'float32', 'bfloat16'].includes(options.loraDtype))
      throw new EngineError(
        'INVALID_ARGUMENT',
        `loraDtype must be auto, float32 or bfloat16, got ${String(options.loraDtype)}`,
      );
    if (!['cpu', 'cuda', 'auto'].includes(options.backend))
      throw new EngineError('INVALID_ARGUMENT', `backend must be cpu, cuda or auto, got ${String(options.backend)}`);
    const dir = resolve(modelDir);
    const config = await readModelConfig(dir);
    if (opts.kvCacheTokens === undefined) {
      const bytesPerToken = config.layers * 2 * config.kvHeads * config.headDim * 4; // float32 K and V
      options.kvCacheTokens = Math.max(256, Math.min(8192, Math.floor((512 * 2 ** 20) / bytesPerToken)));
    }
    const [weights, tokenizer] = await Promise.all([readModelWeights(dir, config), TextTokenizer.fromDir(dir)]);
    const addon = loadAddon();
    const backend =
      options.backend === 'auto' ? (addon.hasCuda && addon.cudaDeviceCount() > 0 ? 'cuda' : 'cpu') : options.backend;
    const spec: NativeModelSpec = {
      backend,
      config: {
        vocab: config.vocab,
        hidden: config.hidden,
        intermediate: config.intermediate,
        layers: config.layers,
        heads: config.heads,
        kvHeads: config.kvHeads,
        headDim: config.headDim,
        rmsEps: config.rmsEps,
        slidingWindow: config.slidingWindow,
        invFreq: config.invFreq,
        qkNorm: config.qkNorm,
      },
      files: weights.files,
      tensors: weights.tensors,
      kvBlocks: Math.ceil(options.kvCacheTokens / options.blockSize),
      blockSize: options.blockSize,
      maxAdapters: options.maxAdapters,
      maxRank: options.maxLoraRank,
      loraPages: options.loraPoolRanks,
      threads: options.threads,
      loraDtype:
        options.loraDtype === 'bfloat16' || (options.loraDtype === 'auto' && !weights.dtypes.has('F32'))
          ? 'BF16'
          : 'F32',
    };
    const tryLoad = async (s: NativeModelSpec): Promise<Engine> => {
      const native = new addon.NativeModel();
      const name = await native.load(s);
      return new Engine(config, tokenizer, native, name, options);
    };
    try {
      return await tryLoad(spec);
    } catch (e) {
      const err = toEngineError(e);
      // 'auto' falls back to the CPU when the GPU cannot run the CUDA backend (e.g. older than sm_80).
      if (options.backend === 'auto' && backend === 'cuda' && err.code === 'BACKEND_UNAVAILABLE')
        return tryLoad({ ...spec, backend: 'cpu' }).catch((e2: unknown) => {
          throw toEngineError(e2);
        });
      throw err;
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new EngineError('ENGINE_CLOSED', 'the engine has been closed');
  }

  /**
   * Loads a PEFT adapter into a free slot under `name`: from a directory, or from its files already
   * in memory (the worker's host tier), in which case `path` is only a label for messages.
   */
  async loadAdapter(name: string, adapterDir: string, files?: AdapterFiles): Promise<AdapterInfo> {
    this.ensureOpen();
    if (typeof name !== 'string' || name.length === 0)
      throw new EngineError('INVALID_ARGUMENT', 'adapter name must be a non-empty string');
    if (this.adapters.has(name) || this.pendingAdapters.has(name))
      throw new EngineError('ADAPTER_EXISTS', `adapter ${name} is already loaded`);
    this.pendingAdapters.add(name);
    try {
      const path = files ? adapterDir : resolve(adapterDir);
      // Labelled by name, not path: messages reach clients (a failed load is their 424).
      const { config, tensors } = parseAdapterFiles(files ?? (await readAdapterFiles(path)), name);
      const modules = await resolveAdapterModulesAsync(config, this.config, { maxRank: this.options.maxLoraRank });
      const loaded = buildAdapter(config, tensors, this.config, this.options.maxLoraRank, modules);
      const handle = await this.native.loadAdapter(loaded.spec).catch((e: unknown) => {
        throw toEngineError(e);
      });
      const entry: AdapterEntry = {
        handle,
        name,
        rank: loaded.maxRank,
        path,
        bytes: loaded.bytes,
        modules: loaded.modules.length,
      };
      this.adapters.set(name, entry);
      return this.describe(entry);
    } finally {
      this.pendingAdapters.delete(name);
    }
  }

  /** Frees an adapter's slot; refused natively (ADAPTER_IN_USE) while a step or a generate() call uses it. */
  async unloadAdapter(name: string): Promise<void> {
    this.ensureOpen();
    const a = this.adapters.get(name);
    if (!a) throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${name} is not loaded`);
    try {
      a.handle.release();
    } catch (e) {
      const err = toEngineError(e);
      throw err.code === 'ADAPTER_IN_USE' ? new EngineError('ADAPTER_IN_USE', `adapter ${name}: ${err.message}`) : err;
    }
    this.adapters.delete(name);
  }

  listAdapters(): AdapterInfo[] {
    return [...this.adapters.values()].map((a) => this.describe(a));
  }

  adapterSlot(name: string): number {
    const a = this.adapters.get(name);
    if (!a) throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${name} is not loaded`);
    return a.handle.slot;
  }

  private describe(a: AdapterEntry): AdapterInfo {
    return { name: a.name, slot: a.handle.slot, rank: a.rank, path: a.path, bytes: a.bytes, modules: a.modules };
  }

  info(): ReturnType<NativeModel['info']> & { freeKvBlocks: number; kvBlocks: number } {
    const kv = this.scheduler.kvUsage();
    return { ...this.native.info(), freeKvBlocks: kv.freeBlocks, kvBlocks: kv.totalBlocks };
  }

  /** The KV cache's blocks, read-only (the scheduler owns the allocator). */
  kvUsage(): KvUsage {
    return this.scheduler.kvUsage();
  }

  /** n KV blocks for a caller of the raw step API (tests, benchmarks); throws KV_CACHE_FULL and takes none. */
  allocateBlocks(n: number): number[] {
    return this.scheduler.leaseBlocks(n);
  }

  /** Grows a block table from allocateBlocks() to cover `tokens` positions. */
  extendBlocks(table: number[], tokens: number): void {
    this.scheduler.extendLease(table, tokens);
  }

  /** Gives back a block table from allocateBlocks() (emptied). */
  releaseBlocks(table: number[]): void {
    this.scheduler.releaseLease(table);
  }

  /** One forward step over a mixed batch (the API the worker's scheduler drives). Steps run one at a time. */
  runStep(items: StepItem[]): Promise<StepItemResult[]> {
    this.ensureOpen();
    const { input, late } = buildStepInput(items, this.config.vocab);
    const run = this.stepChain.then(async () => {
      try {
        const out = await (late.length === 0 ? this.native.step(input) : this.stepWithLateMasks(input, late));
        return splitStepOutput(items, out, this.config.vocab);
      } catch (e) {
        throw toEngineError(e);
      }
    });
    this.stepChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Starts the native step with placeholder masks, then computes the late masks on this thread while
   * the forward pass runs on the native side; the native step waits for them before sampling.
   */
  private stepWithLateMasks(input: NativeStepInput, late: LateMask[]): Promise<NativeStepOutput> {
    const ticket = ++this.maskTicket;
    const step = this.native.step({ ...input, maskTicket: ticket }); // the forward pass is under way from here
    const pending = late.map((l) => {
      try {
        return l.get();
      } catch (e) {
        return Promise.reject(e); // the native step waits either way: it must be told
      }
    });
    Promise.all(pending).then(
      (results) => {
        try {
          this.native.supplyMasks(ticket, fillLateMasks(input, late, results, this.config.vocab));
        } catch {
          // a malformed mask: the native side has failed the step with the reason
        }
      },
      (e: unknown) =>
        this.native.failMasks(ticket, `a deferred mask failed: ${e instanceof Error ? e.message : String(e)}`),
    );
    return step;
  }

  async tokenize(prompt: string | number[]): Promise<number[]> {
    if (Array.isArray(prompt)) {
      for (const t of prompt) {
        if (!Number.isInteger(t) || t < 0 || t >= this.config.vocab)
          throw new EngineError(
            'INVALID_ARGUMENT',
            `token id ${String(t)} is outside the vocabulary of ${this.config.vocab}`,
          );
      }
      return prompt;
    }
    if (typeof prompt !== 'string')
      throw new EngineError('INVALID_ARGUMENT', 'prompt must be a string or an array of token ids');
    if (!this.tokenizer)
      throw new EngineError('TOKENIZER', 'the model directory has no tokenizer.json; pass token ids');
    return this.tokenizer.encode(prompt);
  }

  /** Generates for every request; all requests are decoded together in mixed batches. */
  async generate(requests: GenerateRequest[]): Promise<GenerateOutput[]> {
    this.ensureOpen();
    if (!Array.isArray(requests)) throw new EngineError('INVALID_ARGUMENT', 'generate() takes an array of requests');
    // Adapters are pinned natively and synchronously, before any await, so unloadAdapter() can never
    // race a request: release() refuses a pinned handle with ADAPTER_IN_USE.
    const adapters = requests.map((r) => {
      if (r.adapter === undefined) return undefined;
      const a = this.adapters.get(r.adapter);
      if (!a) throw new EngineError('ADAPTER_NOT_FOUND', `adapter ${r.adapter} is not loaded`);
      return a.handle;
    });
    for (const h of adapters) h?.pin();
    try {
      const prepared = await Promise.all(
        requests.map(async (r, i) => ({
          prompt: await this.tokenize(r.prompt),
          adapter: adapters[i],
          sampling: resolveSampling(r.sampling, this.config.vocab),
          r,
        })),
      );
      const results = await runGeneration(
        prepared.map((p) => ({
          prompt: p.prompt,
          adapter: p.r.adapter,
          sampling: p.sampling,
          returnPromptLogits: p.r.returnPromptLogits === true,
          constraint: p.r.constraint,
        })),
        { vocab: this.config.vocab, maxPositions: this.config.maxPositions, scheduler: this.scheduler },
      );
      return await Promise.all(
        results.map(async (res, i) => ({
          tokens: res.tokens,
          text: this.tokenizer ? await this.tokenizer.decode(res.tokens) : '',
          finishReason: res.finishReason,
          promptTokens: prepared[i]!.prompt,
          ...(res.promptLogits ? { promptLogits: res.promptLogits } : {}),
          ...(res.logprobs ? { logprobs: res.logprobs } : {}),
        })),
      );
    } finally {
      for (const h of adapters) h?.unpin();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.stepChain;
    await this.native.close();
  }
}
