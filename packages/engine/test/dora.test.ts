// DoRA served unmerged (y = g * (W x + s B A x) + bias, g = m / ||W + s B A|| per output row) against
// the same adapter merged into the base weights, on a generated Qwen2 model: its q/k/v biases must
// stay out of the scale. The real-peft references for DoRA are in fixtures.test.ts (llama_dora).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeSafetensors } from '@loraplex/formats';
import { Engine } from '../src/index.js';
import { TEST_BACKEND, TEST_TOL } from './helpers/backend.js';
import { maxAbsDiff } from './helpers/fixtures.js';
import { randn, rng, tensor, writeAdapter, writeAdapterFiles, writeModel } from './helpers/gen-model.js';

const MODS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const PARENT = (mod: string): string => (['gate_proj', 'up_proj', 'down_proj'].includes(mod) ? 'mlp' : 'self_attn');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'lp-dora-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// On the CPU backend by default; LORAPLEX_TEST_BACKEND=cuda runs it on the CUDA backend (or its emulator).
describe(`DoRA (${TEST_BACKEND} backend)`, () => {
  it('a generated Qwen2 model with biases: unmerged DoRA equals its merged weights, beside base and plain LoRA rows', async () => {
    const H = 36,
      nh = 6,
      nkv = 2,
      hd = 6,
      I = 50,
      L = 2,
      r = 3,
      alpha = 5;
    const base = join(dir, 'base');
    const weights = writeModel(base, {
      arch: 'Qwen2ForCausalLM',
      vocab: 97,
      hidden: H,
      intermediate: I,
      layers: L,
      heads: nh,
      kvHeads: nkv,
      headDim: hd,
      seed: 5,
    });
    const dims = { H, I, Q: nh * hd, KV: nkv * hd };
    const doraDir = join(dir, 'dora');
    const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj'];
    const lora = writeAdapter(doraDir, {
      dims,
      targets,
      r,
      alpha,
      layers: L,
      seed: 9,
      extraConfig: { use_dora: true },
    });
    const rand = rng(3);
    const merged = new Map(weights);
    for (let l = 0; l < L; l++) {
      for (const mod of targets) {
        const name = `model.layers.${l}.${PARENT(mod)}.${mod}`;
        const W = weights.get(`${name}.weight`)!;
        const A = lora.get(`base_model.model.${name}.lora_A.weight`)!.data;
        const B = lora.get(`base_model.model.${name}.lora_B.weight`)!.data;
        const [out, inD] = W.shape as [number, number];
        const mag = new Float32Array(out);
        const Wm = new Float32Array(out * inD);
        for (let o = 0; o < out; o++) {
          let sum = 0;
          for (let i = 0; i < inD; i++) {
            let d = 0;
            for (let j = 0; j < r; j++) d += B[o * r + j]! * A[j * inD + i]!;
            const w = W.data[o * inD + i]! + (alpha / r) * d;
            Wm[o * inD + i] = w;
            sum += w * w;
          }
          const norm = Math.sqrt(sum);
          mag[o] = norm * (1 + 0.5 * randn(rand, 1, 1)[0]!); // away from the norm, as trained magnitudes are
          for (let i = 0; i < inD; i++) Wm[o * inD + i]! *= mag[o]! / norm;
        }
        lora.set(`base_model.model.${name}.lora_magnitude_vector`, { shape: [out], data: mag });
        merged.set(`${name}.weight`, { shape: W.shape, data: Wm });
      }
    }
    const config = JSON.parse(readFileSync(join(doraDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    writeAdapterFiles(doraDir, config, lora);
    const mergedDir = join(dir, 'merged');
    writeModel(mergedDir, {
      arch: 'Qwen2ForCausalLM',
      vocab: 97,
      hidden: H,
      intermediate: I,
      layers: L,
      heads: nh,
      kvHeads: nkv,
      headDim: hd,
      seed: 5,
    });
    const out: Record<string, ReturnType<typeof tensor>> = {};
    for (const [name, v] of merged) out[name] = tensor(v.data, v.shape);
    writeFileSync(join(mergedDir, 'model.safetensors'), encodeSafetensors(out, { format: 'pt' }));
    const plainDir = join(dir, 'plain');
    writeAdapter(plainDir, { dims, targets: MODS, r: 4, layers: L, seed: 10 });

    const opts = { backend: TEST_BACKEND, maxAdapters: 2, maxLoraRank: 8, threads: 2 };
    const engine = await Engine.load(base, opts);
    const ref = await Engine.load(mergedDir, opts);
    try {
      const before = engine.info().bytesAllocated;
      const info = await engine.loadAdapter('dora', doraDir);
      // The adapter's bytes count its magnitude vectors too, and the CPU backend its row scales (one
      // float per magnitude element; the CUDA backend reserves them with the pool).
      expect(info.bytes).toBe([...lora.values()].reduce((n, t) => n + 4 * t.data.length, 0));
      const magFloats = [...lora]
        .filter(([k]) => k.endsWith('lora_magnitude_vector'))
        .reduce((n, [, t]) => n + t.data.length, 0);
      if (TEST_BACKEND === 'cpu') expect(engine.info().bytesAllocated - before).toBe(4 * magFloats);
      await engine.loadAdapter('plain', plainDir);
      // The last prompt is long enough for the CUDA backend's prefill path (unfused segmented expands).
      const prompts = [
        [5, 9, 33, 2, 80, 14, 7],
        [40, 41, 42],
        Array.from({ length: 90 }, (_, i) => (i * 37 + 11) % 97),
      ];
      const req = (prompt: number[], adapter?: string) => ({
        prompt,
        adapter,
        sampling: { maxTokens: 6, temperature: 0, ignoreEos: true },
        returnPromptLogits: true,
      });
      const want = await ref.generate(prompts.map((p) => req(p)));
      const got = await engine.generate([
        req(prompts[0]!, 'dora'),
        req(prompts[1]!),
        req(prompts[1]!, 'plain'),
        req(prompts[1]!, 'dora'),
        req(prompts[2]!, 'dora'),
      ]);
      const pairs: Array<[number, number]> = [
        [0, 0],
        [3, 1],
        [4, 2],
      ];
      for (const [g, w] of pairs) {
        expect(maxAbsDiff(got[g]!.promptLogits!, want[w]!.promptLogits!)).toBeLessThan(TEST_TOL);
        expect(got[g]!.tokens).toEqual(want[w]!.tokens);
      }
      await engine.unloadAdapter('dora');
      if (TEST_BACKEND === 'cpu') expect(engine.info().bytesAllocated).toBe(before); // (CUDA step buffers grow meanwhile)
    } finally {
      await engine.close();
      await ref.close();
    }
  });
});
