// Loads the native addon and describes its interface. The addon is built by cmake-js into
// build/Release; everything the engine does natively goes through NativeModel.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdapterSpec, ModelConfig } from '@loraplex/formats';
import { EngineError } from './errors.js';

export interface NativeTensorRef {
  key: string;
  file: number;
  offset: number;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
}

export interface NativeModelSpec {
  backend: 'cpu' | 'cuda';
  /** The model's shape as formats parsed it from config.json (what the backends need of it). */
  config: Pick<
    ModelConfig,
    | 'vocab'
    | 'hidden'
    | 'intermediate'
    | 'layers'
    | 'heads'
    | 'kvHeads'
    | 'headDim'
    | 'rmsEps'
    | 'slidingWindow'
    | 'invFreq'
  > & { qkNorm?: boolean };
  files: string[];
  tensors: NativeTensorRef[];
  kvBlocks: number;
  blockSize: number;
  maxAdapters: number;
  maxRank: number;
  loraPages: number;
  threads: number;
  loraDtype: 'F32' | 'BF16';
}

/** One adapter, per (layer, module) in layer-major order of the seven modules: formats builds it. */
export type NativeAdapterSpec = AdapterSpec;

/** The lower-level step: one forward pass over segments (one per sequence) of a mixed batch. */
export interface NativeStepInput {
  tokens: Int32Array; // [T]
  positions: Int32Array; // [T]
  segOffsets: Int32Array; // [S + 1]
  segSlot: Int32Array; // [S] adapter slot (NativeAdapterHandle.slot) or -1
  blockOffsets: Int32Array; // [S + 1]
  blockTable: Int32Array; // concatenated block tables
  segSample: Uint8Array; // [S]
  segAllLogits: Uint8Array; // [S]
  histOffsets: Int32Array; // [S + 1]
  histTokens: Int32Array;
  histGeneratedStart: Int32Array; // [S]
  segMask: Int32Array; // [S] -1 or mask index
  masks: Uint32Array; // [numMasks * ceil(vocab / 32)]
  /** > 0: the masks are placeholders; the step waits before sampling for supplyMasks(maskTicket, ...). */
  maskTicket?: number;
  sampling: {
    temperature: Float32Array;
    topK: Int32Array;
    topP: Float32Array;
    minP: Float32Array;
    repetitionPenalty: Float32Array;
    presencePenalty: Float32Array;
    frequencyPenalty: Float32Array;
    seed: Float64Array;
    draw: Int32Array;
    topLogprobs: Int32Array;
    /** 1 where the chosen token's log-probability is wanted (optional; default all). */
    wantLogprob?: Uint8Array;
  };
}

export interface NativeStepOutput {
  token: Int32Array; // [S], -1 where the segment does not sample
  logprob: Float32Array; // [S]
  topIds: Int32Array; // [S * maxTop]
  topLogprobs: Float32Array; // [S * maxTop]
  maxTop: number;
  logits: Float32Array; // [rows of all-logits segments, vocab]
}

/**
 * One resident adapter: a native object owning its slot and LoRA pool pages until release(). The
 * native side counts its pins: every step pins the slots it reads for its duration, and pin() holds
 * the adapter across steps; release() is refused with ADAPTER_IN_USE while any pin is held. A handle
 * garbage-collected without release() frees its slot.
 */
export interface NativeAdapterHandle {
  /** The slot steps name in segSlot; -1 once released. */
  readonly slot: number;
  /** Rank-row pages of the LoRA pool it occupies. */
  readonly pages: number;
  /** Bytes of the LoRA pool it occupies. */
  readonly bytes: number;
  /** Running steps and holders using it now. */
  readonly pins: number;
  /** Frees the slot and pages: true, or false when already released. Throws ADAPTER_IN_USE while pinned. */
  release(): boolean;
  /** Holds the adapter across steps (ADAPTER_NOT_FOUND once released). */
  pin(): void;
  unpin(): void;
}

export interface NativeModel {
  load(spec: NativeModelSpec): Promise<string>;
  step(input: NativeStepInput): Promise<NativeStepOutput>;
  /** The masks of the deferred step `ticket` (as many words as it reserved); false if no step waits for them. */
  supplyMasks(ticket: number, masks: Uint32Array): boolean;
  /** The masks of the deferred step `ticket` will not come: it fails with MASKS_FAILED. */
  failMasks(ticket: number, message: string): boolean;
  loadAdapter(spec: NativeAdapterSpec): Promise<NativeAdapterHandle>;
  info(): { backend: string | null; bytesAllocated: number; freeLoraPages: number; freeSlots: number; closed: boolean };
  close(): Promise<void>;
}

export interface NativeAddon {
  NativeModel: new () => NativeModel;
  hasCuda: boolean;
  /** The CPU backend multiplies bfloat16 weights by bfloat16-rounded activations (AVX512-BF16). */
  cpuBf16DotProducts: boolean;
  cudaDeviceCount(): number;
  /**
   * The host sampler's tokens for draws firstDraw .. firstDraw + draws - 1 of one row of logits
   * (no penalties or mask): lets tests compare drawn frequencies with an exact softmax.
   */
  sampleLogits(
    logits: Float32Array,
    sampling: { temperature: number; topK?: number; topP?: number; minP?: number; seed: number },
    firstDraw: number,
    draws: number,
  ): Int32Array;
}

let addon: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (addon) return addon;
  const here = dirname(fileURLToPath(import.meta.url));
  // LORAPLEX_NATIVE_ADDON points at another build of the addon (e.g. a CPU-only or debug build).
  const override = process.env.LORAPLEX_NATIVE_ADDON;
  const candidates = override
    ? [override]
    : [
        join(here, '..', 'build', 'Release', 'loraplex_native.node'),
        join(here, '..', 'build', 'Debug', 'loraplex_native.node'),
      ];
  const path = candidates.find((p) => existsSync(p));
  if (!path)
    throw new EngineError(
      'BACKEND_UNAVAILABLE',
      `the native addon is not built (looked for ${candidates[0]}); run \`pnpm --filter @loraplex/engine build\``,
    );
  addon = createRequire(import.meta.url)(path) as NativeAddon;
  return addon;
}
