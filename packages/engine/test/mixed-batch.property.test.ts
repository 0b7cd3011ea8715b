// Property: however sequences are mixed into steps (random adapters or none, random prompt
// lengths, prefill chunks and decode tokens in the same step, adapters loaded and evicted between
// steps), every sequence gets exactly the greedy tokens it gets when run alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, resolveSampling, type StepItem } from '../src/index.js';
import { TEST_BACKEND } from './helpers/backend.js';
import { ADAPTERS, DORA_ADAPTERS, adapterDir, modelDir } from './helpers/fixtures.js';
import { rng, writeAdapter, writeModel } from './helpers/gen-model.js';

interface Sim {
  prompt: number[];
  adapter: string | undefined;
  maxTokens: number;
  blocks: number[];
  computed: number;
  out: number[];
}

async function randomSchedule(
  engine: Engine,
  adapterDirs: Record<string, string>,
  seed: number,
  n: number,
): Promise<void> {
  const rand = rng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const names = Object.keys(adapterDirs);
  const vocab = engine.config.vocab;
  const greedy = resolveSampling({ temperature: 0, maxTokens: 1 }, vocab);
  const sims: Sim[] = Array.from({ length: n }, () => ({
    prompt: Array.from({ length: int(1, 40) }, () => int(0, vocab - 1)),
    adapter: rand() < 0.25 ? undefined : names[int(0, names.length - 1)],
    maxTokens: int(1, 10),
    blocks: [],
    computed: 0,
    out: [],
  }));
  const active = (): Sim[] => sims.filter((s) => s.out.length < s.maxTokens);
  const loaded = new Set(engine.listAdapters().map((a) => a.name));
  while (active().length > 0) {
    // Between steps: evict a loaded adapter no pending sequence needs, and load the ones that are needed.
    const needed = new Set(
      active()
        .map((s) => s.adapter)
        .filter((a): a is string => !!a),
    );
    for (const a of [...loaded]) {
      if (!needed.has(a) && rand() < 0.5) {
        await engine.unloadAdapter(a);
        loaded.delete(a);
      }
    }
    const pick = active().filter(() => rand() < 0.7);
    const chosen = pick.length > 0 ? pick : [active()[0]!];
    for (const s of chosen) {
      if (s.adapter && !loaded.has(s.adapter)) {
        if (engine.info().freeSlots === 0) {
          const victim = [...loaded].find((a) => !chosen.some((c) => c.adapter === a));
          if (!victim) continue;
          await engine.unloadAdapter(victim);
          loaded.delete(victim);
        }
        await engine.loadAdapter(s.adapter, adapterDirs[s.adapter]!);
        loaded.add(s.adapter);
      }
    }
    const items: StepItem[] = [];
    const owners: Sim[] = [];
    for (const s of chosen) {
      if (s.adapter && !loaded.has(s.adapter)) continue;
      let tokens: number[];
      if (s.computed < s.prompt.length)
        tokens = s.prompt.slice(s.computed, s.computed + int(1, s.prompt.length - s.computed));
      else tokens = [s.out[s.out.length - 1]!];
      engine.extendBlocks(s.blocks, s.computed + tokens.length);
      const sample = s.computed + tokens.length >= s.prompt.length;
      items.push({
        tokens,
        startPosition: s.computed,
        blockTable: s.blocks,
        adapterSlot: s.adapter ? engine.adapterSlot(s.adapter) : -1,
        sample,
        allLogits: false,
        sampling: greedy,
      });
      owners.push(s);
    }
    if (items.length === 0) continue;
    const res = await engine.runStep(items);
    res.forEach((r, i) => {
      const s = owners[i]!;
      s.computed += items[i]!.tokens.length;
      if (r.token !== undefined) s.out.push(r.token);
      if (s.out.length >= s.maxTokens) engine.releaseBlocks(s.blocks);
    });
  }
  // Reference: each sequence alone.
  for (const s of sims) {
    if (s.adapter && !engine.listAdapters().some((a) => a.name === s.adapter)) {
      if (engine.info().freeSlots === 0) await engine.unloadAdapter(engine.listAdapters()[0]!.name);
      await engine.loadAdapter(s.adapter, adapterDirs[s.adapter]!);
    }
    const [alone] = await engine.generate([
      { prompt: s.prompt, adapter: s.adapter, sampling: { temperature: 0, maxTokens: s.maxTokens, ignoreEos: true } },
    ]);
    expect(s.out, `sequence with adapter ${s.adapter ?? 'none'} and prompt length ${s.prompt.length}`).toEqual(
      alone!.tokens,
    );
  }
  expect(engine.kvUsage().freeBlocks).toBe(engine.kvUsage().totalBlocks);
}

describe('random mixed batches equal single runs', () => {
  it.each([1, 2, 3])('hf-tiny llama, schedule seed %i', async (seed) => {
    const engine = await Engine.load(modelDir('llama'), {
      backend: TEST_BACKEND,
      maxAdapters: 2,
      maxLoraRank: 16,
      kvCacheTokens: 4096,
      blockSize: 4,
      threads: 2,
    });
    try {
      await randomSchedule(engine, Object.fromEntries(ADAPTERS.map((a) => [a, adapterDir('llama', a)])), seed, 12);
    } finally {
      await engine.close();
    }
  });

  // DoRA rows (a per-output-row scale of base + delta) mixed with plain LoRA rows and base rows.
  it.each([4, 5])('hf-tiny-v2 llama_dora (DoRA, LoRA and base rows), schedule seed %i', async (seed) => {
    const engine = await Engine.load(modelDir('llama_dora'), {
      backend: TEST_BACKEND,
      maxAdapters: 2,
      maxLoraRank: 16,
      kvCacheTokens: 4096,
      blockSize: 4,
      threads: 2,
    });
    try {
      await randomSchedule(
        engine,
        Object.fromEntries(DORA_ADAPTERS.map((a) => [a, adapterDir('llama_dora', a)])),
        seed,
        12,
      );
    } finally {
      await engine.close();
    }
  });

  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'lp-prop-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Odd sizes (not multiples of the SIMD width), GQA 6:1, explicit head_dim, qkv biases, sliding window,
  // Qwen3's q/k norms, adapters of four different ranks including a rank_pattern.
  it.each([
    ['Qwen2ForCausalLM', 11],
    ['MistralForCausalLM', 12],
    ['Qwen3ForCausalLM', 13],
  ] as const)('generated %s model, schedule seed %i', async (arch, seed) => {
    const mdir = join(dir, arch);
    const H = 36,
      nh = 6,
      nkv = 1,
      hd = 10,
      I = 50;
    writeModel(mdir, {
      arch,
      vocab: 101,
      hidden: H,
      intermediate: I,
      layers: 3,
      heads: nh,
      kvHeads: nkv,
      headDim: hd,
      seed,
      slidingWindow: arch === 'MistralForCausalLM' ? 7 : undefined,
    });
    const dims = { H, I, Q: nh * hd, KV: nkv * hd };
    const all = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    const adapters: Record<string, string> = {};
    [
      { r: 1, targets: ['q_proj'] },
      { r: 3, targets: all },
      { r: 8, targets: ['v_proj', 'down_proj', 'gate_proj'], rankPattern: { gate_proj: 2 } },
      { r: 13, targets: ['o_proj', 'up_proj', 'k_proj'], rslora: true },
    ].forEach((o, i) => {
      const d = join(mdir, `adapter${i}`);
      writeAdapter(d, { ...o, dims, layers: 3, seed: seed * 10 + i });
      adapters[`a${i}`] = d;
    });
    const engine = await Engine.load(mdir, {
      backend: TEST_BACKEND,
      maxAdapters: 3,
      maxLoraRank: 16,
      kvCacheTokens: 2048,
      blockSize: 3,
      threads: 2,
    });
    try {
      await randomSchedule(engine, adapters, seed, 14);
    } finally {
      await engine.close();
    }
  });
});
