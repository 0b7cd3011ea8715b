// Model features checked against an independent naive reference (itself checked against
// transformers): GQA ratios, explicit head_dim, q/k/v biases, tied embeddings, Mistral's sliding
// window, llama3 rope scaling, sharded and bf16/f16 weights, and PEFT config semantics.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, readModelConfig, type ModelConfig } from '../src/index.js';
import { bf16ToF32, encodeSafetensors, f16ToF32, f32ToBf16, readSafetensorsHeader } from '@loraplex/formats';
import { loadAddon } from '../src/native.js';
import { ADAPTERS, adapterDir, modelDir, type FixtureModel } from './helpers/fixtures.js';
import { f32ToF16, moduleDims, rng, tensor, writeAdapter, writeModel } from './helpers/gen-model.js';
import {
  maxAbsDiff64,
  referenceLogits,
  type RefConfig,
  type RefLora,
  type Tensors,
} from './helpers/reference-forward.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-feat-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function refConfig(c: ModelConfig): RefConfig {
  return {
    hidden: c.hidden,
    intermediate: c.intermediate,
    layers: c.layers,
    heads: c.heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    vocab: c.vocab,
    rmsEps: c.rmsEps,
    invFreq: c.invFreq,
    slidingWindow: c.slidingWindow,
    tie: c.tieEmbeddings,
    bias: c.qkvBias,
    qkNorm: c.qkNorm,
  };
}

async function readTensors(file: string): Promise<Tensors> {
  const h = await readSafetensorsHeader(file);
  const buf = readFileSync(file);
  const out: Tensors = new Map();
  for (const [name, t] of h.tensors) {
    const bytes = new Uint8Array(buf.subarray(t.offset, t.offset + t.byteLength));
    const data =
      t.dtype === 'F32'
        ? new Float32Array(bytes.buffer)
        : t.dtype === 'BF16'
          ? bf16ToF32(new Uint16Array(bytes.buffer))
          : Float32Array.from(new Uint16Array(bytes.buffer), f16ToF32);
    out.set(name, { shape: t.shape, data });
  }
  return out;
}

/** Engine prompt logits for one prompt (optionally with an adapter). */
async function engineLogits(
  dir: string,
  prompt: number[],
  adapter?: string,
  loraDtype: 'auto' | 'bfloat16' = 'auto',
): Promise<Float32Array> {
  const e = await Engine.load(dir, { backend: 'cpu', maxAdapters: 1, maxLoraRank: 32, threads: 2, loraDtype });
  try {
    if (adapter) await e.loadAdapter('a', adapter);
    const [out] = await e.generate([
      { prompt, adapter: adapter ? 'a' : undefined, sampling: { maxTokens: 0 }, returnPromptLogits: true },
    ]);
    return out!.promptLogits!;
  } finally {
    await e.close();
  }
}

function loraFrom(t: Tensors, scales: Record<string, number>): RefLora {
  const l: RefLora = new Map();
  for (const [name, a] of t) {
    if (!name.endsWith('lora_A.weight')) continue;
    const mod = name.replace('base_model.model.', '').replace('.lora_A.weight', '');
    const b = t.get(name.replace('lora_A', 'lora_B'))!;
    const short = mod.split('.').pop()!;
    l.set(mod, { A: a.data, B: b.data, r: a.shape[0]!, scale: scales[mod] ?? scales[short]! });
  }
  return l;
}

describe('the naive reference agrees with transformers', () => {
  it.each(['llama', 'qwen2', 'qwen3'] as FixtureModel[])('%s base and lora_all_r8', async (m) => {
    const cfg = await readModelConfig(modelDir(m));
    const t = await readTensors(join(modelDir(m), 'model.safetensors'));
    const prompt = [437, 489, 451, 484, 463, 291, 300, 170, 350, 276, 410];
    const eng = await engineLogits(modelDir(m), prompt);
    expect(maxAbsDiff64(eng, referenceLogits(t, refConfig(cfg), prompt))).toBeLessThan(1e-4);
    const at = await readTensors(join(adapterDir(m, 'lora_all_r8'), 'adapter_model.safetensors'));
    const engA = await engineLogits(modelDir(m), prompt, adapterDir(m, 'lora_all_r8'));
    expect(
      maxAbsDiff64(
        engA,
        referenceLogits(
          t,
          refConfig(cfg),
          prompt,
          loraFrom(at, { q_proj: 2, k_proj: 2, v_proj: 2, o_proj: 2, gate_proj: 2, up_proj: 2, down_proj: 2 }),
        ),
      ),
    ).toBeLessThan(1e-4);
  });
});

describe('architectures and config features', () => {
  const prompt = Array.from({ length: 19 }, (_, i) => (i * 37 + 5) % 90);
  const cases: Array<[string, Parameters<typeof writeModel>[1]]> = [
    [
      'mistral sliding window 5, GQA 3:1',
      { arch: 'MistralForCausalLM', heads: 6, kvHeads: 2, hidden: 48, slidingWindow: 5 },
    ],
    [
      'llama3 rope scaling, explicit head_dim 12 != hidden/heads',
      {
        heads: 4,
        kvHeads: 4,
        hidden: 40,
        headDim: 12,
        ropeScaling: {
          rope_type: 'llama3',
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 16,
        },
      },
    ],
    ['linear rope scaling, MQA', { heads: 4, kvHeads: 1, ropeScaling: { type: 'linear', factor: 2 } }],
    ['qwen2 biases, tied embeddings', { arch: 'Qwen2ForCausalLM', tie: true }],
    [
      'qwen3 q/k norms, head_dim 16 != hidden/heads, tied embeddings',
      { arch: 'Qwen3ForCausalLM', tie: true, heads: 4, kvHeads: 2, headDim: 16 },
    ],
    ['qwen3 q/k norms, GQA 3:1, untied', { arch: 'Qwen3ForCausalLM', heads: 6, kvHeads: 2, hidden: 48 }],
  ];
  it.each(cases)('%s', async (name, opts) => {
    const dir = join(tmp, name.replace(/\W+/g, '_'));
    const t = writeModel(dir, { ...opts, seed: name.length });
    const cfg = await readModelConfig(dir);
    const ref = referenceLogits(t, refConfig(cfg), prompt);
    expect(maxAbsDiff64(await engineLogits(dir, prompt), ref)).toBeLessThan(2e-4);
  });

  it('qwen3 with head_dim 16 != hidden/heads: LoRA on all seven modules (q/k/v/o sized by heads * head_dim)', async () => {
    const dir = join(tmp, 'qwen3-lora'),
      a = join(tmp, 'qwen3-lora-adapter');
    const H = 40,
      I = 72,
      nh = 4,
      nkv = 2,
      hd = 16;
    const t = writeModel(dir, {
      arch: 'Qwen3ForCausalLM',
      hidden: H,
      intermediate: I,
      heads: nh,
      kvHeads: nkv,
      headDim: hd,
      seed: 31,
    });
    const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
    const at = writeAdapter(a, { dims: { H, I, Q: nh * hd, KV: nkv * hd }, r: 4, alpha: 8, targets, seed: 32 });
    const want = referenceLogits(
      t,
      refConfig(await readModelConfig(dir)),
      prompt,
      loraFrom(at, Object.fromEntries(targets.map((m) => [m, 2]))),
    );
    expect(maxAbsDiff64(await engineLogits(dir, prompt, a), want)).toBeLessThan(2e-4);
  });

  it('llama3 inv_freq: high frequencies kept, low ones divided by factor, the band between interpolated', async () => {
    const dir = join(tmp, 'rope3');
    writeModel(dir, {
      heads: 2,
      kvHeads: 2,
      hidden: 64,
      headDim: 32,
      ropeScaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    });
    const inv = (await readModelConfig(dir)).invFreq;
    const plain = Array.from({ length: 16 }, (_, i) => 1 / Math.pow(10000, (2 * i) / 32));
    plain.forEach((f, i) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < 16) expect(inv[i]).toBeCloseTo(f, 6);
      else if (wavelen > 64) expect(inv[i]).toBeCloseTo(f / 8, 9);
      else (expect(inv[i]!).toBeGreaterThan(f / 8), expect(inv[i]!).toBeLessThan(f));
    });
  });

  it('rope_parameters (transformers 5) give the same rotary frequencies as top-level rope_theta / rope_scaling', async () => {
    const dir = join(tmp, 'rope-params');
    const scaling = {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 64,
    };
    writeModel(dir, { heads: 2, kvHeads: 2, hidden: 64, headDim: 32, ropeScaling: scaling });
    const top = await readModelConfig(dir);
    const path = join(dir, 'config.json');
    const c = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    delete c.rope_theta;
    delete c.rope_scaling;
    writeFileSync(path, JSON.stringify({ ...c, rope_parameters: { ...scaling, rope_theta: 10000 } }));
    const nested = await readModelConfig(dir);
    expect(nested.ropeTheta).toBe(10000);
    expect(nested.invFreq).toEqual(top.invFreq);
    writeFileSync(path, JSON.stringify({ ...c, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } }));
    expect((await readModelConfig(dir)).ropeTheta).toBe(5e5);
  });

  it('sharded safetensors with an index load identically', async () => {
    const dir = join(tmp, 'sharded');
    cpSync(modelDir('llama'), dir, { recursive: true });
    const t = await readTensors(join(dir, 'model.safetensors'));
    rmSync(join(dir, 'model.safetensors'));
    const names = [...t.keys()];
    const shards = [names.slice(0, 9), names.slice(9)];
    const weightMap: Record<string, string> = {};
    shards.forEach((s, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeFileSync(
        join(dir, file),
        encodeSafetensors(Object.fromEntries(s.map((n) => [n, tensor(t.get(n)!.data, t.get(n)!.shape)]))),
      );
      for (const n of s) weightMap[n] = file;
    });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const prompt = [22, 506, 217, 201, 137];
    expect(await engineLogits(dir, prompt)).toEqual(await engineLogits(modelDir('llama'), prompt));
  });

  it.each(['BF16', 'F16'] as const)(
    '%s weights compute like float32 weights holding the same values',
    async (dtype) => {
      const dir = join(tmp, `half-${dtype}`),
        ref = join(tmp, `half-${dtype}-f32`);
      writeModel(dir, { dtype, seed: 3 });
      const t = await readTensors(join(dir, 'model.safetensors')); // widened values
      writeModel(ref, { seed: 3 });
      writeFileSync(
        join(ref, 'model.safetensors'),
        encodeSafetensors(Object.fromEntries([...t].map(([n, v]) => [n, tensor(v.data, v.shape)]))),
      );
      const prompt = [5, 17, 33, 2, 80, 64];
      const a = await engineLogits(dir, prompt);
      if (dtype === 'BF16' && loadAddon().cpuBf16DotProducts) {
        // AVX512-BF16: activations are rounded to bfloat16 at every matmul input, as transformers' bf16 path does.
        const cfg = { ...refConfig(await readModelConfig(dir)), bf16Inputs: true };
        const want = referenceLogits(t, cfg, prompt);
        expect(maxAbsDiff64(a, want)).toBeLessThan(2e-3);
        expect(maxAbsDiff64(a, referenceLogits(t, refConfig(await readModelConfig(dir)), prompt))).toBeGreaterThan(
          4e-3,
        );
      } else {
        const b = await engineLogits(ref, prompt);
        let m = 0;
        for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
        expect(m).toBeLessThan(1e-5);
      }
      // and the conversions themselves are exact for representable values
      expect(Array.from(bf16ToF32(f32ToBf16(new Float32Array([1.5, -0.25, 3.0]))))).toEqual([1.5, -0.25, 3.0]);
      expect(Array.from(f32ToF16(new Float32Array([1.5, -0.25, 3.0])), f16ToF32)).toEqual([1.5, -0.25, 3.0]);
    },
  );

  it('generation_config.json eos ids stop generation unless ignoreEos', async () => {
    const dir = join(tmp, 'eos');
    cpSync(modelDir('llama'), dir, { recursive: true });
    // greedy tokens of p0 on the base model: 350, 214, 169, ...
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [169, 2] }));
    const e = await Engine.load(dir, { backend: 'cpu', threads: 1 });
    try {
      const [stop, go] = await e.generate([
        { prompt: [22, 506, 217, 201, 137], sampling: { temperature: 0, maxTokens: 12 } },
        { prompt: [22, 506, 217, 201, 137], sampling: { temperature: 0, maxTokens: 12, ignoreEos: true } },
      ]);
      expect(stop!.tokens).toEqual([350, 214, 169]);
      expect(stop!.finishReason).toBe('eos');
      expect(go!.tokens).toHaveLength(12);
      expect(e.eosTokenIds.has(4)).toBe(true); // tokenizer_config eos_token <|im_end|>
    } finally {
      await e.close();
    }
  });
});

describe('PEFT config semantics against the reference', () => {
  const H = 40,
    I = 72,
    nh = 4,
    nkv = 2,
    hd = 10;
  const dims = { H, I, Q: nh * hd, KV: nkv * hd };
  const prompt = [3, 14, 15, 92, 65, 35, 89, 79];
  let dir: string;
  let t: Tensors;
  let cfg: RefConfig;
  beforeAll(async () => {
    dir = join(tmp, 'peft-base');
    t = writeModel(dir, { hidden: H, intermediate: I, heads: nh, kvHeads: nkv, seed: 21 });
    cfg = refConfig(await readModelConfig(dir));
  });

  it('rank_pattern and alpha_pattern give per-module rank and scaling; rslora uses sqrt(r)', async () => {
    const a = join(tmp, 'patterns');
    const at = writeAdapter(a, {
      dims,
      r: 4,
      alpha: 8,
      targets: ['q_proj', 'v_proj', 'down_proj'],
      rankPattern: { v_proj: 2 },
      alphaPattern: { 'layers\\.1\\.mlp\\.down_proj': 32 },
      seed: 5,
    });
    const scales = { q_proj: 2, v_proj: 4, down_proj: 2, 'model.layers.1.mlp.down_proj': 8 };
    expect(
      maxAbsDiff64(await engineLogits(dir, prompt, a), referenceLogits(t, cfg, prompt, loraFrom(at, scales))),
    ).toBeLessThan(1e-4);
    const rs = join(tmp, 'rslora');
    const rt = writeAdapter(rs, { dims, r: 9, alpha: 6, targets: ['o_proj', 'gate_proj'], rslora: true, seed: 6 });
    expect(
      maxAbsDiff64(
        await engineLogits(dir, prompt, rs),
        referenceLogits(t, cfg, prompt, loraFrom(rt, { o_proj: 2, gate_proj: 2 })),
      ),
    ).toBeLessThan(1e-4);
  });

  it('target_modules as a regex string, layers_to_transform, fan_in_fan_out', async () => {
    const a = join(tmp, 'regex');
    const at = writeAdapter(a, { dims, r: 3, alpha: 3, targets: ['k_proj', 'up_proj'], seed: 7 });
    const cfgPath = join(a, 'adapter_config.json');
    const c = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgPath, JSON.stringify({ ...c, target_modules: '.*\\.(k_proj|up_proj)', fan_in_fan_out: true }));
    const want = referenceLogits(t, cfg, prompt, loraFrom(at, { k_proj: 1, up_proj: 1 }));
    expect(maxAbsDiff64(await engineLogits(dir, prompt, a), want)).toBeLessThan(1e-4);
    // layers_to_transform: only layer 1 is adapted, so layer-0 tensors must be absent from the file too.
    const l1 = join(tmp, 'layer1');
    const lt = writeAdapter(l1, { dims, r: 3, alpha: 6, targets: ['q_proj'], seed: 8 });
    lt.delete('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    lt.delete('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    const { writeAdapterFiles } = await import('./helpers/gen-model.js');
    writeAdapterFiles(
      l1,
      { peft_type: 'LORA', r: 3, lora_alpha: 6, target_modules: ['q_proj'], layers_to_transform: [1] },
      lt,
    );
    expect(
      maxAbsDiff64(await engineLogits(dir, prompt, l1), referenceLogits(t, cfg, prompt, loraFrom(lt, { q_proj: 2 }))),
    ).toBeLessThan(1e-4);
  });

  it('float16 and bfloat16 adapter weights are widened exactly', async () => {
    const a = join(tmp, 'half-adapter');
    const at = writeAdapter(a, { dims, r: 2, alpha: 2, targets: ['q_proj'], seed: 9 });
    const rand = rng(1);
    const out: Record<string, ReturnType<typeof tensor>> = {};
    const rounded: Tensors = new Map();
    for (const [n, v] of at) {
      const dtype = rand() < 0.5 ? 'BF16' : 'F16';
      out[n] = tensor(v.data, v.shape, dtype);
      rounded.set(n, {
        shape: v.shape,
        data: dtype === 'BF16' ? bf16ToF32(f32ToBf16(v.data)) : Float32Array.from(f32ToF16(v.data), f16ToF32),
      });
    }
    writeFileSync(join(a, 'adapter_model.safetensors'), encodeSafetensors(out));
    expect(
      maxAbsDiff64(
        await engineLogits(dir, prompt, a),
        referenceLogits(t, cfg, prompt, loraFrom(rounded, { q_proj: 1 })),
      ),
    ).toBeLessThan(1e-4);
    expect(moduleDims('q_proj', dims)).toEqual([H, nh * hd]);
  });

  it('a bfloat16 LoRA pool computes with the adapter weights rounded to bfloat16', async () => {
    const a = join(tmp, 'bf16-pool');
    const at = writeAdapter(a, { dims, r: 5, alpha: 10, targets: ['q_proj', 'o_proj', 'down_proj'], seed: 10 });
    const rounded: Tensors = new Map(
      [...at].map(([n, v]) => [n, { shape: v.shape, data: bf16ToF32(f32ToBf16(v.data)) }]),
    );
    const got = await engineLogits(dir, prompt, a, 'bfloat16');
    expect(
      maxAbsDiff64(got, referenceLogits(t, cfg, prompt, loraFrom(rounded, { q_proj: 2, o_proj: 2, down_proj: 2 }))),
    ).toBeLessThan(1e-4);
    expect(
      maxAbsDiff64(got, referenceLogits(t, cfg, prompt, loraFrom(at, { q_proj: 2, o_proj: 2, down_proj: 2 }))),
    ).toBeGreaterThan(1e-6);
  });

  it('every fixture adapter loads into a pool slot sized by its own rank', async () => {
    const e = await Engine.load(modelDir('llama'), {
      backend: 'cpu',
      maxAdapters: 3,
      maxLoraRank: 16,
      loraPoolRanks: 28,
      threads: 1,
    });
    try {
      await e.loadAdapter('r16', adapterDir('llama', 'lora_qkvo_r16_rslora'));
      await e.loadAdapter('r8', adapterDir('llama', 'lora_all_r8'));
      expect(e.info().freeLoraPages).toBe(4);
      await e.loadAdapter('r4', adapterDir('llama', 'lora_qv_r4')); // fits exactly: 16 + 8 + 4 = 28 pages
      expect(e.info().freeLoraPages).toBe(0);
      await e.unloadAdapter('r8');
      await expect(e.loadAdapter('r16b', adapterDir('llama', 'lora_qkvo_r16_rslora'))).rejects.toMatchObject({
        code: 'ADAPTER_POOL_FULL',
      });
      await e.loadAdapter('r8b', adapterDir('llama', ADAPTERS[0]));
    } finally {
      await e.close();
    }
  });
});
