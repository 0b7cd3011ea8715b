// Sampling inside the engine: seeds, truncation (top-k, top-p, min-p), temperature as a
// distribution, penalties, stop ids, the allowed-token bitmask and log-probabilities.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, resolveSampling, type StepItem, type TokenConstraint } from '../src/index.js';
import { modelDir } from './helpers/fixtures.js';

const P0 = [22, 506, 217, 201, 137];
const V = 512;
let engine: Engine;
beforeAll(async () => {
  engine = await Engine.load(modelDir('llama'), { backend: 'cpu', maxAdapters: 1, maxLoraRank: 8, threads: 2 });
});
afterAll(async () => engine?.close());

const gen = (sampling: object, prompt = P0, extra: object = {}) =>
  engine.generate([{ prompt, sampling: { maxTokens: 12, ignoreEos: true, ...sampling }, ...extra }]).then((o) => o[0]!);

function logSoftmax(row: Float32Array): Float64Array {
  let mx = -Infinity;
  for (const v of row) mx = Math.max(mx, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - mx);
  const lse = mx + Math.log(s);
  return Float64Array.from(row, (v) => v - lse);
}

async function lastLogits(prompt: number[]): Promise<Float32Array> {
  const [o] = await engine.generate([{ prompt, sampling: { maxTokens: 0 }, returnPromptLogits: true }]);
  return o!.promptLogits!.slice((prompt.length - 1) * V);
}

describe('sampling', () => {
  it('the same seed gives the same tokens, alone or in any batch; other seeds differ', async () => {
    const a = await gen({ temperature: 1.3, seed: 42 });
    const batch = await engine.generate([
      { prompt: [5, 6, 7], sampling: { maxTokens: 9, temperature: 0.7, seed: 1 } },
      { prompt: P0, sampling: { maxTokens: 12, temperature: 1.3, seed: 42, ignoreEos: true } },
    ]);
    expect(batch[1]!.tokens).toEqual(a.tokens);
    const others = await Promise.all([43, 44, 45].map((seed) => gen({ temperature: 1.3, seed })));
    expect(others.some((o) => o.tokens.join() !== a.tokens.join())).toBe(true);
  });

  it('top_k 1, a tiny top_p and min_p 1 reduce to greedy', async () => {
    const greedy = (await gen({ temperature: 0 })).tokens;
    expect((await gen({ temperature: 5, topK: 1, seed: 3 })).tokens).toEqual(greedy);
    expect((await gen({ temperature: 5, topP: 1e-6, seed: 3 })).tokens).toEqual(greedy);
    expect((await gen({ temperature: 5, minP: 1, seed: 3 })).tokens).toEqual(greedy);
  });

  it('temperature sampling follows softmax(logits / T) and top_k restricts the support', async () => {
    const T = 0.05; // sharpen the tiny model's flat distribution so a few tokens dominate
    const lp = logSoftmax((await lastLogits(P0)).map((v) => v / T));
    const n = 600;
    const counts = new Map<number, number>();
    const topkCounts = new Set<number>();
    const items = (k: number, topK: number): StepItem[] =>
      Array.from({ length: 50 }, (_, i) => ({
        tokens: P0,
        startPosition: 0,
        blockTable: engine.allocateBlocks(1),
        adapterSlot: -1,
        sample: true,
        allLogits: false,
        sampling: resolveSampling({ temperature: T, topK, seed: k * 1000 + i }, V),
        draw: 0,
      }));
    for (let k = 0; k < n / 50; k++) {
      const its = items(k, 0);
      const res = await engine.runStep(its);
      for (const r of res) counts.set(r.token!, (counts.get(r.token!) ?? 0) + 1);
      its.forEach((it) => engine.releaseBlocks(it.blockTable as number[]));
      const its2 = items(k + 100, 3);
      for (const r of await engine.runStep(its2)) topkCounts.add(r.token!);
      its2.forEach((it) => engine.releaseBlocks(it.blockTable as number[]));
    }
    const top = [...lp.keys()].sort((a, b) => lp[b]! - lp[a]!);
    for (const tok of top.slice(0, 3)) {
      const p = Math.exp(lp[tok]!),
        got = (counts.get(tok) ?? 0) / n;
      expect(Math.abs(got - p), `token ${tok}: p=${p} observed=${got}`).toBeLessThan(
        4 * Math.sqrt((p * (1 - p)) / n) + 0.01,
      );
    }
    expect([...topkCounts].every((t) => top.slice(0, 3).includes(t))).toBe(true);
  });

  it('stop token ids end generation with finishReason stop', async () => {
    const greedy = (await gen({ temperature: 0 })).tokens;
    const o = await gen({ temperature: 0, stopTokenIds: [greedy[4]!] });
    expect(o.tokens).toEqual(greedy.slice(0, greedy.indexOf(greedy[4]!) + 1));
    expect(o.finishReason).toBe('stop');
  });

  it('repetition, presence and frequency penalties change the argmax as specified', async () => {
    const hist = [...P0, 350, 350, 214];
    const raw = await lastLogits(hist);
    const cases = [
      { repetitionPenalty: 1.8, presencePenalty: 0, frequencyPenalty: 0 },
      { repetitionPenalty: 1, presencePenalty: 1.5, frequencyPenalty: 0 },
      { repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 2 },
    ];
    for (const c of cases) {
      const want = Float64Array.from(raw);
      const seen = new Set(hist);
      for (const t of seen)
        if (c.repetitionPenalty !== 1)
          want[t] = want[t]! > 0 ? want[t]! / c.repetitionPenalty : want[t]! * c.repetitionPenalty;
      const gen3 = [350, 350, 214];
      for (const t of new Set(gen3))
        want[t]! -= c.frequencyPenalty * gen3.filter((x) => x === t).length + c.presencePenalty;
      const argmax = [...want.keys()].reduce((a, b) => (want[b]! > want[a]! ? b : a), 0);
      const table = engine.allocateBlocks(1);
      const [r] = await engine.runStep([
        {
          tokens: hist,
          startPosition: 0,
          blockTable: table,
          adapterSlot: -1,
          sample: true,
          allLogits: false,
          sampling: resolveSampling({ temperature: 0, ...c }, V),
          history: { tokens: hist, generatedStart: P0.length },
        },
      ]);
      engine.releaseBlocks(table);
      expect(r!.token).toBe(argmax);
    }
    // Penalised generation differs from plain greedy on this model (it repeats 3, 3, 3 ...).
    const plain = await gen({ temperature: 0 });
    const pen = await gen({ temperature: 0, frequencyPenalty: 2 });
    expect(pen.tokens).not.toEqual(plain.tokens);
    expect(new Set(pen.tokens).size).toBeGreaterThan(new Set(plain.tokens).size);
  });

  it('the allowed-token bitmask constrains every draw', async () => {
    const allowed = [10, 20, 30, 400];
    const mask = new Uint32Array(V / 32);
    for (const t of allowed) mask[t >> 5]! |= 1 << (t & 31);
    const seenTokens: number[] = [];
    const c: TokenConstraint = { nextMask: () => mask, accept: (t) => void seenTokens.push(t) };
    const greedyOut = await gen({ temperature: 0 }, P0, { constraint: c });
    expect(greedyOut.tokens.every((t) => allowed.includes(t))).toBe(true);
    expect(seenTokens).toEqual(greedyOut.tokens);
    const sampled = await gen({ temperature: 2, seed: 9 }, P0, {
      constraint: { nextMask: () => mask, accept: () => undefined },
    });
    expect(sampled.tokens.every((t) => allowed.includes(t))).toBe(true);
    // A constraint that terminates stops generation.
    let n = 0;
    const o = await gen({ temperature: 0 }, P0, {
      constraint: { nextMask: () => null, accept: () => void n++, isTerminated: () => n >= 2 },
    });
    expect(o.tokens).toHaveLength(2);
    expect(o.finishReason).toBe('stop');
    // An empty mask is an error, not a hang or a crash.
    await expect(
      gen({ temperature: 0 }, P0, { constraint: { nextMask: () => new Uint32Array(V / 32), accept: () => undefined } }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('log-probabilities of the chosen token and the top-n alternatives come from the raw distribution', async () => {
    const o = await gen({ temperature: 0, logprobs: 5, maxTokens: 3 });
    const lp = logSoftmax(await lastLogits(P0));
    const first = o.logprobs![0]!;
    expect(first.token).toBe(o.tokens[0]);
    expect(first.logprob).toBeCloseTo(lp[first.token]!, 4);
    const top = [...lp.keys()].sort((a, b) => lp[b]! - lp[a]!).slice(0, 5);
    expect(first.top.map((x) => x.token)).toEqual(top);
    first.top.forEach((x) => expect(x.logprob).toBeCloseTo(lp[x.token]!, 4));
    expect(o.logprobs).toHaveLength(3);
  });
});
