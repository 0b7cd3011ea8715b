// The step API: one forward pass over a mixed batch. Each item is one sequence's slice for this
// step (a prompt chunk or one decode token) with its own adapter slot, block table and sampling.
// This is what Engine.generate and the worker's scheduler both drive.
import type { NativeStepInput, NativeStepOutput } from './native.js';
import type { ResolvedSampling } from './sampling.js';

export interface StepItem {
  /** Tokens whose keys/values this step computes, at positions startPosition... */
  tokens: ArrayLike<number>;
  startPosition: number;
  /** Block table covering at least startPosition + tokens.length positions. */
  blockTable: ArrayLike<number>;
  /** Adapter slot, or -1 for the base model. */
  adapterSlot: number;
  /** Sample one token after the last position. */
  sample: boolean;
  /** Return the logits of every position of this item. */
  allLogits: boolean;
  sampling?: ResolvedSampling;
  /** Index of this draw in the sequence (with the seed, it fixes the random number). */
  draw?: number;
  /** Penalty history: prompt then generated tokens; generated tokens start at generatedStart. */
  history?: { tokens: ArrayLike<number>; generatedStart: number };
  /** Allowed-token bitmask (ceil(vocab/32) words), or null for all tokens. */
  mask?: Uint32Array | null;
  /**
   * The mask computed while the forward pass runs (JSON mode): called once the native step has
   * started; the sampler waits for its result (null: all tokens). Takes the place of `mask`.
   */
  maskLater?: () => Promise<Uint32Array | null>;
}

/** The deferred masks of a step: mask slot in NativeStepInput.masks and the function computing it. */
export interface LateMask {
  slot: number;
  get: () => Promise<Uint32Array | null>;
}

export interface TopLogprob {
  token: number;
  logprob: number;
}

export interface StepItemResult {
  token?: number;
  /** Log-probability of the chosen token under the raw distribution (NaN unless sampling.logprobs is set). */
  logprob?: number;
  top?: TopLogprob[];
  /** [tokens.length, vocab] when allLogits was set. */
  logits?: Float32Array;
}

/** A step's native input and its deferred masks (in the mask slots reserved for them). */
export interface BuiltStep {
  input: NativeStepInput;
  late: LateMask[];
}

export function buildStepInput(items: StepItem[], vocab: number): BuiltStep {
  const S = items.length;
  let T = 0,
    B = 0,
    Hn = 0;
  const words = Math.ceil(vocab / 32);
  let numMasks = 0;
  for (const it of items) {
    T += it.tokens.length;
    B += it.blockTable.length;
    Hn += it.history?.tokens.length ?? 0;
    if (it.mask || (it.maskLater && it.sample)) numMasks++;
  }
  const inp: NativeStepInput = {
    tokens: new Int32Array(T),
    positions: new Int32Array(T),
    segOffsets: new Int32Array(S + 1),
    segSlot: new Int32Array(S),
    blockOffsets: new Int32Array(S + 1),
    blockTable: new Int32Array(B),
    segSample: new Uint8Array(S),
    segAllLogits: new Uint8Array(S),
    histOffsets: new Int32Array(S + 1),
    histTokens: new Int32Array(Hn),
    histGeneratedStart: new Int32Array(S),
    segMask: new Int32Array(S),
    masks: new Uint32Array(numMasks * words),
    sampling: {
      temperature: new Float32Array(S),
      topK: new Int32Array(S),
      topP: new Float32Array(S).fill(1),
      minP: new Float32Array(S),
      repetitionPenalty: new Float32Array(S).fill(1),
      presencePenalty: new Float32Array(S),
      frequencyPenalty: new Float32Array(S),
      seed: new Float64Array(S),
      draw: new Int32Array(S),
      topLogprobs: new Int32Array(S),
      wantLogprob: new Uint8Array(S),
    },
  };
  const late: LateMask[] = [];
  let t = 0,
    b = 0,
    h = 0,
    mi = 0;
  for (let s = 0; s < S; s++) {
    const it = items[s]!;
    for (let i = 0; i < it.tokens.length; i++, t++) {
      inp.tokens[t] = it.tokens[i]!;
      inp.positions[t] = it.startPosition + i;
    }
    inp.segOffsets[s + 1] = t;
    for (let i = 0; i < it.blockTable.length; i++) inp.blockTable[b++] = it.blockTable[i]!;
    inp.blockOffsets[s + 1] = b;
    inp.segSlot[s] = it.adapterSlot;
    inp.segSample[s] = it.sample ? 1 : 0;
    inp.segAllLogits[s] = it.allLogits ? 1 : 0;
    if (it.history) {
      for (let i = 0; i < it.history.tokens.length; i++) inp.histTokens[h++] = it.history.tokens[i]!;
      inp.histGeneratedStart[s] = it.history.generatedStart;
    }
    inp.histOffsets[s + 1] = h;
    if (it.maskLater && it.sample) {
      late.push({ slot: mi, get: it.maskLater });
      inp.segMask[s] = mi++; // placeholder words, filled in by the late mask
    } else if (it.mask) {
      inp.masks.set(it.mask.subarray(0, words), mi * words);
      inp.segMask[s] = mi++;
    } else {
      inp.segMask[s] = -1;
    }
    const p = it.sampling;
    if (p) {
      const sp = inp.sampling;
      sp.temperature[s] = p.temperature;
      sp.topK[s] = p.topK;
      sp.topP[s] = p.topP;
      sp.minP[s] = p.minP;
      sp.repetitionPenalty[s] = p.repetitionPenalty;
      sp.presencePenalty[s] = p.presencePenalty;
      sp.frequencyPenalty[s] = p.frequencyPenalty;
      sp.seed[s] = p.seed;
      sp.draw[s] = it.draw ?? 0;
      sp.topLogprobs[s] = p.logprobs ?? 0;
      sp.wantLogprob![s] = p.logprobs !== undefined ? 1 : 0;
    }
  }
  return { input: inp, late };
}

/** The full masks array of a step: the immediate masks as given, the late ones written into their slots. */
export function fillLateMasks(
  input: NativeStepInput,
  late: LateMask[],
  results: Array<Uint32Array | null>,
  vocab: number,
): Uint32Array {
  const words = Math.ceil(vocab / 32);
  const masks = input.masks.slice();
  late.forEach((l, i) => {
    const m = results[i];
    if (m) masks.set(m.subarray(0, words), l.slot * words);
    else masks.fill(0xffffffff, l.slot * words, (l.slot + 1) * words);
  });
  return masks;
}

export function splitStepOutput(items: StepItem[], out: NativeStepOutput, vocab: number): StepItemResult[] {
  const results: StepItemResult[] = [];
  let row = 0;
  for (let s = 0; s < items.length; s++) {
    const it = items[s]!;
    const r: StepItemResult = {};
    if (it.allLogits) {
      const n = it.tokens.length;
      r.logits = out.logits.slice(row * vocab, (row + n) * vocab);
      row += n;
    }
    if (it.sample) {
      r.token = out.token[s]!;
      r.logprob = out.logprob[s]!;
      const n = it.sampling?.logprobs ?? 0;
      if (n > 0) {
        r.top = [];
        for (let i = 0; i < n; i++)
          r.top.push({ token: out.topIds[s * out.maxTop + i]!, logprob: out.topLogprobs[s * out.maxTop + i]! });
      }
    }
    results.push(r);
  }
  return results;
}
