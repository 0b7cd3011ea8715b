// The host sampler (native/cpu/sampler.cc) on logits rows the test chooses, through the addon's
// sampleLogits entry: drawn frequencies against the exact (float64) softmax after temperature,
// top-k, min-p and top-p truncation (chi-square), the support of every truncation, ties broken by
// index, greedy limits, and one (seed, draw) always giving one token, at small and Llama 3 sized
// vocabularies. The CUDA sampler is held to the same tokens by test-gpu/kernel_tests.cc.
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../src/native.js';
import { mulberry32 } from './helpers/gen-model.js';

interface Trunc {
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
}

/** Exact probabilities of the sampler's rules (see sample_truncated in cpu/sampler.cc), in float64. */
function truncatedProbs(logits: Float32Array, t: Trunc): Map<number, number> {
  const order = [...logits.keys()]
    .filter((i) => logits[i] !== -Infinity)
    .sort((a, b) => logits[b]! - logits[a]! || a - b);
  const k = t.topK && t.topK < order.length ? t.topK : order.length;
  const cand = order.slice(0, k);
  const mx = logits[cand[0]!]!;
  const w = cand.map((i) => Math.exp((logits[i]! - mx) / t.temperature));
  const z = w.reduce((a, b) => a + b, 0);
  let keep = cand.length;
  if (t.minP) {
    const first = w.findIndex((x) => x < t.minP!);
    if (first >= 0) keep = Math.max(1, first);
  }
  if (t.topP !== undefined && t.topP < 1) {
    let cum = 0;
    for (let n = 0; n < keep; n++) {
      cum += w[n]!;
      if (cum >= t.topP * z) {
        keep = n + 1;
        break;
      }
    }
  }
  const total = w.slice(0, keep).reduce((a, b) => a + b, 0);
  return new Map(cand.slice(0, keep).map((i, n) => [i, w[n]! / total]));
}

/** Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty). */
const chi2Crit = (df: number): number => df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;

/** Chi-square of `tokens` against `probs`, over bins of expected count >= 5 (the rest pooled). */
function chiSquare(tokens: Int32Array, probs: Map<number, number>): { stat: number; df: number; outside: number } {
  const counts = new Map<number, number>();
  let outside = 0;
  for (const t of tokens) {
    if (!probs.has(t)) outside++;
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  const n = tokens.length;
  const bins: Array<[number, number]> = []; // [observed, expected]
  let poolO = 0,
    poolE = 0;
  for (const [tok, p] of probs) {
    const o = counts.get(tok) ?? 0;
    if (p * n >= 5) bins.push([o, p * n]);
    else ((poolO += o), (poolE += p * n));
  }
  if (poolE > 0) bins.push([poolO, poolE]);
  const stat = bins.reduce((s, [o, e]) => s + (o - e) ** 2 / e, 0);
  return { stat, df: Math.max(1, bins.length - 1), outside };
}

const addon = loadAddon();
// Ties at 1.5 (indices 1 and 2), a masked entry, a wide spread.
const SMALL = Float32Array.from([2, 1.5, 1.5, 1, 0.5, 0, -0.5, -1, -2, -3, -Infinity, -5, 0.25, -0.75, 1.25, 3]);

describe('host sampler distribution', () => {
  it.each<Trunc>([
    { temperature: 1 },
    { temperature: 0.7, topK: 4 },
    { temperature: 1, topP: 0.8 },
    { temperature: 1.3, minP: 0.1 },
    { temperature: 1, topK: 9, topP: 0.93, minP: 0.02 },
    { temperature: 2.5, topK: 3 },
  ])('matches the exact truncated softmax %o', (t) => {
    const probs = truncatedProbs(SMALL, t);
    const tokens = addon.sampleLogits(SMALL, { ...t, seed: 1234 }, 0, 20_000);
    const { stat, df, outside } = chiSquare(tokens, probs);
    expect(outside).toBe(0);
    expect(stat, `chi2 ${stat.toFixed(1)} with ${df} df`).toBeLessThan(chi2Crit(df));
    // Every token of the support shows up: the truncation is not tighter than specified.
    expect(new Set(tokens).size).toBe(probs.size);
  });

  it('ties are ordered by index; top_k 1, min_p 1 and a tiny top_p are greedy', () => {
    const flat = new Float32Array(50).fill(0.5);
    expect(new Set(addon.sampleLogits(flat, { temperature: 1, topK: 3, seed: 5 }, 0, 2000))).toEqual(
      new Set([0, 1, 2]),
    );
    const tieTop = Float32Array.from([1, 3, 0, 3, 2]);
    for (const s of [{ topK: 1 }, { topP: 1e-6 }])
      expect(new Set(addon.sampleLogits(tieTop, { temperature: 4, seed: 9, ...s }, 0, 500))).toEqual(new Set([1]));
    // min_p 1 keeps exactly the tokens whose weight equals the maximum's: both tied maxima.
    expect(new Set(addon.sampleLogits(tieTop, { temperature: 4, seed: 9, minP: 1 }, 0, 500))).toEqual(new Set([1, 3]));
  });

  it('one (seed, draw) gives one token, whatever the draws around it', () => {
    const t = { temperature: 1, topP: 0.9, seed: 77 };
    const run = addon.sampleLogits(SMALL, t, 0, 200);
    for (const d of [0, 17, 199]) expect(addon.sampleLogits(SMALL, t, d, 1)[0]).toBe(run[d]);
    expect([...addon.sampleLogits(SMALL, { ...t, seed: 78 }, 0, 200)]).not.toEqual([...run]);
  });

  it('Llama 3 sized vocabulary: top_p / top_k / min_p draws follow the exact distribution', () => {
    const V = 128_256;
    const rand = mulberry32(11);
    // Normal logits (Box-Muller) with a handful of strong tokens, so both head and tail matter.
    const row = Float32Array.from(
      { length: V },
      () => 2.2 * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()),
    );
    for (let j = 0; j < 6; j++) row[Math.floor(rand() * V)] = 11 + j * 0.4;
    for (const t of [
      { temperature: 1, topP: 0.9 },
      { temperature: 0.8, topK: 40 },
      { temperature: 1.2, minP: 0.05, topP: 0.95 },
    ] as Trunc[]) {
      const probs = truncatedProbs(row, t);
      const tokens = addon.sampleLogits(row, { ...t, seed: 31 }, 0, 1500);
      const { stat, df, outside } = chiSquare(tokens, probs);
      expect(outside, JSON.stringify(t)).toBe(0);
      expect(stat, `${JSON.stringify(t)}: chi2 ${stat.toFixed(1)} with ${df} df`).toBeLessThan(chi2Crit(df));
    }
  });

  it('rejects bad arguments', () => {
    expect(() => addon.sampleLogits(SMALL, { temperature: 1, topP: 0, seed: 1 }, 0, 1)).toThrow(/out of range/);
    expect(() => addon.sampleLogits(new Float32Array(0), { temperature: 1, seed: 1 }, 0, 1)).toThrow(/out of range/);
  });
});
