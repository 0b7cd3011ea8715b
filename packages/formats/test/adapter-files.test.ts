// The adapter path without the engine: a PEFT directory read, parsed and checked against a base
// model's config.json by this package alone (what the worker's host tier and the API's upload
// validation do), and each refusal with the engine's error code.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildAdapter,
  encodeSafetensors,
  EngineError,
  loadAdapterDir,
  parseAdapterFiles,
  parseModelConfig,
  readAdapterFiles,
  readModelConfig,
  ropeInvFreq,
  type TensorToWrite,
} from '../src/index.js';
import { contiguousTensor, writeTorchCheckpoint } from './helpers/torch-checkpoint-writer.js';

const MODEL_JSON = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 64,
  intermediate_size: 96,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  num_hidden_layers: 2,
  vocab_size: 128,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};
const model = parseModelConfig(MODEL_JSON);
const RANK = 4;
const CONFIG = { peft_type: 'LORA', r: RANK, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] };

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-formats-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** lora_A [r, in] and lora_B [out, r] for q_proj and v_proj of every layer (head_dim 16: q out 64, v out 32). */
function loraTensors(rank = RANK): Array<[string, number[]]> {
  const out: Array<[string, number[]]> = [];
  for (let l = 0; l < model.layers; l++) {
    for (const [mod, outDim] of [
      ['q_proj', 64],
      ['v_proj', 32],
    ] as const) {
      const prefix = `base_model.model.model.layers.${l}.self_attn.${mod}`;
      out.push([`${prefix}.lora_A.weight`, [rank, 64]], [`${prefix}.lora_B.weight`, [outDim, rank]]);
    }
  }
  return out;
}

function adapterDir(name: string, files: { config?: unknown; safetensors?: Uint8Array; bin?: Uint8Array }): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  if (files.config !== undefined) {
    const text = typeof files.config === 'string' ? files.config : JSON.stringify(files.config);
    writeFileSync(join(dir, 'adapter_config.json'), text);
  }
  if (files.safetensors) writeFileSync(join(dir, 'adapter_model.safetensors'), files.safetensors);
  if (files.bin) writeFileSync(join(dir, 'adapter_model.bin'), files.bin);
  return dir;
}

function safetensors(shapes: Array<[string, number[]]>): Uint8Array {
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of shapes) {
    const values = new Float32Array(shape[0]! * shape[1]!).fill(0.5);
    tensors[name] = { dtype: 'F32', shape, data: new Uint8Array(values.buffer) };
  }
  return encodeSafetensors(tensors);
}

async function refusal(p: Promise<unknown>): Promise<EngineError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(EngineError);
  return e as EngineError;
}

describe('adapter files', () => {
  it('a safetensors adapter: read, parsed and built into per-(layer, module) ranks, scales and stored matrices', async () => {
    const dir = adapterDir('st', { config: CONFIG, safetensors: safetensors(loraTensors()) });
    const files = await readAdapterFiles(dir);
    expect(files.format).toBe('safetensors');
    const { config, tensors } = parseAdapterFiles(files, 'st');
    expect(tensors.size).toBe(8);
    const built = buildAdapter(config, tensors, model, 16);
    expect(built.maxRank).toBe(RANK);
    expect(built.modules.map((m) => m.name)).toEqual([
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
    ]);
    // Seven modules per layer in q, k, v, o, gate, up, down order; untargeted ones stay empty.
    expect([...built.spec.rank]).toEqual([RANK, 0, RANK, 0, 0, 0, 0, RANK, 0, RANK, 0, 0, 0, 0]);
    expect(built.spec.scale[0]).toBe(8 / RANK);
    expect(built.spec.a[0]?.dtype).toBe('F32');
    expect(built.spec.b[2]?.data.byteLength).toBe(32 * RANK * 4);
    expect(built.bytes).toBe(loraTensors().reduce((n, [, s]) => n + s[0]! * s[1]! * 4, 0));
  });

  it('a .bin (torch.save) adapter gives the same modules', async () => {
    const bin = writeTorchCheckpoint(
      loraTensors().map(([name, shape]) => [
        name,
        contiguousTensor('F32', shape, new Uint8Array(shape[0]! * shape[1]! * 4)),
      ]),
    );
    const dir = adapterDir('bin', { config: CONFIG, bin });
    expect((await readAdapterFiles(dir)).format).toBe('bin');
    const built = await loadAdapterDir(dir, model, 16);
    expect(built.modules).toHaveLength(4);
    expect(built.maxRank).toBe(RANK);
  });

  it('refusals carry the engine error codes', async () => {
    const weights = safetensors(loraTensors());
    expect((await refusal(readAdapterFiles(adapterDir('no-config', { safetensors: weights })))).code).toBe(
      'ADAPTER_CONFIG',
    );
    const noWeights = await refusal(readAdapterFiles(adapterDir('no-weights', { config: CONFIG })));
    expect(noWeights.code).toBe('ADAPTER_CONFIG');
    expect(noWeights.message).toMatch(/neither adapter_model\.safetensors nor adapter_model\.bin/);
    const badJson = adapterDir('bad-json', { config: '{', safetensors: weights });
    expect((await refusal(readAdapterFiles(badJson))).code).toBe('ADAPTER_CONFIG');
    const truncated = adapterDir('truncated', {
      config: CONFIG,
      safetensors: weights.subarray(0, weights.byteLength - 1),
    });
    expect((await refusal(loadAdapterDir(truncated, model, 16))).code).toBe('INVALID_SAFETENSORS');
    const garbage = adapterDir('garbage', { config: CONFIG, bin: new Uint8Array([1, 2, 3, 4]) });
    expect((await refusal(loadAdapterDir(garbage, model, 16))).code).toBe('INVALID_CHECKPOINT');
    const wrongRank = adapterDir('wrong-rank', { config: CONFIG, safetensors: safetensors(loraTensors(RANK * 2)) });
    expect((await refusal(loadAdapterDir(wrongRank, model, 16))).code).toBe('ADAPTER_SHAPE');
    const aboveMax = adapterDir('above-max-rank', { config: CONFIG, safetensors: weights });
    expect((await refusal(loadAdapterDir(aboveMax, model, 2))).code).toBe('ADAPTER_UNSUPPORTED');
    // DoRA without its magnitude vectors.
    const dora = adapterDir('dora', { config: { ...CONFIG, use_dora: true }, safetensors: weights });
    const doraErr = await refusal(loadAdapterDir(dora, model, 16));
    expect(doraErr.code).toBe('ADAPTER_SHAPE');
    expect(doraErr.message).toMatch(/DoRA.*lora_magnitude_vector/);
  });

  it('a DoRA adapter: magnitude vectors [out] per module, counted in its bytes', async () => {
    const mags: Array<[string, number[]]> = [];
    for (let l = 0; l < model.layers; l++) {
      mags.push([`base_model.model.model.layers.${l}.self_attn.q_proj.lora_magnitude_vector`, [64, 1]]);
      mags.push([`base_model.model.model.layers.${l}.self_attn.v_proj.lora_magnitude_vector`, [32, 1]]);
    }
    const dir = adapterDir('dora-ok', {
      config: { ...CONFIG, use_dora: true },
      safetensors: safetensors([...loraTensors(), ...mags]),
    });
    const a = await loadAdapterDir(dir, model, 16);
    expect(a.spec.magnitude.filter((m) => m !== null).length).toBe(4);
    expect(a.spec.magnitude[2]!.data.byteLength).toBe(32 * 4); // layer 0 v_proj
    expect(a.spec.magnitude[0]!.data.byteLength).toBe(64 * 4); // layer 0 q_proj
    expect(a.spec.magnitude[1]).toBeNull(); // k_proj: not adapted
    expect(a.bytes).toBe(2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4) * 4 + 2 * (64 + 32) * 4);
    const plain = await loadAdapterDir(
      adapterDir('plain-ok', { config: CONFIG, safetensors: safetensors(loraTensors()) }),
      model,
      16,
    );
    expect(plain.spec.magnitude.every((m) => m === null)).toBe(true);
  });
});

describe('model config', () => {
  it('config.json -> ModelConfig with the rotary inverse frequencies', async () => {
    const dir = join(tmp, 'model');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...MODEL_JSON, eos_token_id: 2 }));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 3], bos_token_id: 1 }));
    const c = await readModelConfig(dir);
    expect(c).toMatchObject({ architecture: 'LlamaForCausalLM', hidden: 64, headDim: 16, kvHeads: 2, layers: 2 });
    expect(c).toMatchObject({ eosTokenIds: [2, 3], bosTokenId: 1 });
    expect(c.invFreq).toHaveLength(8);
    expect(c.invFreq[0]).toBe(1);
    expect(ropeInvFreq(16, 10000, { rope_type: 'linear', factor: 2 })[0]).toBe(0.5);
  });

  it('refusals carry the engine error codes', async () => {
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(EngineError);
        return (e as EngineError).code;
      }
      throw new Error('expected a refusal');
    };
    expect(code(() => parseModelConfig({ ...MODEL_JSON, architectures: ['GPT2LMHeadModel'] }))).toBe(
      'UNSUPPORTED_ARCHITECTURE',
    );
    expect(code(() => parseModelConfig({ ...MODEL_JSON, hidden_act: 'gelu' }))).toBe('MODEL_CONFIG');
    expect(code(() => parseModelConfig({ ...MODEL_JSON, num_key_value_heads: 3 }))).toBe('MODEL_CONFIG');
    expect((await refusal(readModelConfig(join(tmp, 'nowhere')))).code).toBe('MODEL_CONFIG');
  });
});

describe('the package', () => {
  it('depends on no native code: re2js is its only dependency', () => {
    type Deps = Record<string, Record<string, string> | undefined>;
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as Deps;
    expect(Object.keys(pkg.dependencies ?? {})).toEqual(['re2js']);
    expect(pkg.optionalDependencies ?? {}).toEqual({});
  });
});
