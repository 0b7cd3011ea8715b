// Every refusal of model and adapter loading, and corrupted files: a clear EngineError with the
// right code, never a crash, and the engine keeps working afterwards.
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, EngineError } from '../src/index.js';
import { encodeSafetensors } from '@loraplex/formats';
import { adapterDir, modelDir, type FixtureModel } from './helpers/fixtures.js';
import { writeAdapter, writeAdapterFiles, writeModel } from './helpers/gen-model.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-bad-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(EngineError);
  expect((err as EngineError).code).toBe(code);
  if (message) expect((err as EngineError).message).toMatch(message);
}

function copyModel(name: string, from: FixtureModel = 'llama'): string {
  const d = join(tmp, name);
  cpSync(modelDir(from), d, { recursive: true });
  return d;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
}

/** Rewrites model.safetensors through a transformation of its tensors. */
function editWeights(
  dir: string,
  edit: (t: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }>) => void,
): void {
  const buf = readFileSync(join(dir, 'model.safetensors'));
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString()) as Record<
    string,
    { dtype: 'F32'; shape: number[]; data_offsets: [number, number] }
  >;
  const t: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    t[k] = {
      dtype: v.dtype,
      shape: v.shape,
      data: new Uint8Array(buf.subarray(8 + len + v.data_offsets[0], 8 + len + v.data_offsets[1])),
    };
  }
  edit(t);
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(t));
}

describe('model loading refusals', () => {
  const load = (d: string): Promise<Engine> => Engine.load(d, { backend: 'cpu', threads: 1 });

  it('unsupported architecture', async () => {
    const d = copyModel('arch');
    editConfig(d, (c) => (c.architectures = ['GPT2LMHeadModel']));
    await expectCode(load(d), 'UNSUPPORTED_ARCHITECTURE', /GPT2LMHeadModel/);
  });
  it('missing config.json / malformed config', async () => {
    const d = copyModel('noconfig');
    rmSync(join(d, 'config.json'));
    await expectCode(load(d), 'MODEL_CONFIG', /config\.json/);
    writeFileSync(join(d, 'config.json'), '{"architectures": ["LlamaForCausalLM"], ');
    await expectCode(load(d), 'MODEL_CONFIG', /not valid JSON/);
  });
  it('inconsistent config values', async () => {
    const d = copyModel('heads');
    editConfig(d, (c) => (c.num_key_value_heads = 3));
    await expectCode(load(d), 'MODEL_CONFIG', /multiple of num_key_value_heads/);
    editConfig(d, (c) => {
      c.num_key_value_heads = 2;
      c.rope_scaling = { type: 'yarn', factor: 4 };
    });
    await expectCode(load(d), 'MODEL_CONFIG', /rope_scaling type "yarn"/);
    editConfig(d, (c) => {
      c.rope_scaling = null;
      c.hidden_size = 65;
    });
    await expectCode(load(d), 'MODEL_CONFIG', /head_dim/);
  });
  it('missing tensor, named', async () => {
    const d = copyModel('missing');
    editWeights(d, (t) => delete t['model.layers.1.mlp.up_proj.weight']);
    await expectCode(load(d), 'MISSING_TENSOR', /model\.layers\.1\.mlp\.up_proj\.weight/);
  });
  it('missing lm_head without tied embeddings', async () => {
    const d = copyModel('nolmhead');
    editWeights(d, (t) => delete t['lm_head.weight']);
    await expectCode(load(d), 'MISSING_TENSOR', /lm_head\.weight.*tie_word_embeddings/);
  });
  it('tensor of the wrong shape, and unexpected tensors', async () => {
    const d = copyModel('shape');
    editWeights(d, (t) => (t['model.layers.0.self_attn.k_proj.weight']!.shape = [16, 128]));
    await expectCode(
      load(d),
      'TENSOR_SHAPE',
      /k_proj\.weight has shape \[16, 128\], but config\.json implies \[32, 64\]/,
    );
    const e = copyModel('extra');
    editWeights(
      e,
      (t) => (t['model.layers.0.self_attn.q_proj.bias'] = { dtype: 'F32', shape: [64], data: new Uint8Array(256) }),
    );
    await expectCode(load(e), 'MISSING_TENSOR', /no q\/k\/v biases/);
    const f = copyModel('layer9');
    editWeights(f, (t) => (t['model.layers.9.mlp.up_proj.weight'] = t['model.layers.0.mlp.up_proj.weight']!));
    await expectCode(load(f), 'TENSOR_SHAPE', /layer 9 does not exist/);
  });
  it('Qwen3 query/key norms: required, shaped [head_dim], refused on other architectures; attention_bias refused', async () => {
    const d = copyModel('qwen3-nonorm', 'qwen3');
    editWeights(d, (t) => delete t['model.layers.1.self_attn.k_norm.weight']);
    await expectCode(load(d), 'MISSING_TENSOR', /model\.layers\.1\.self_attn\.k_norm\.weight/);
    const s = copyModel('qwen3-normshape', 'qwen3');
    editWeights(s, (t) => (t['model.layers.0.self_attn.q_norm.weight']!.shape = [16, 2]));
    await expectCode(load(s), 'TENSOR_SHAPE', /q_norm\.weight has shape \[16, 2\], but config\.json implies \[32\]/);
    const l = copyModel('llama-qnorm');
    editWeights(
      l,
      (t) => (t['model.layers.0.self_attn.q_norm.weight'] = { dtype: 'F32', shape: [16], data: new Uint8Array(64) }),
    );
    await expectCode(load(l), 'MISSING_TENSOR', /no query\/key norms/);
    const b = copyModel('qwen3-bias', 'qwen3');
    editConfig(b, (c) => (c.attention_bias = true));
    await expectCode(load(b), 'MODEL_CONFIG', /attention_bias.*Qwen3ForCausalLM/);
    editConfig(b, (c) => {
      c.attention_bias = false;
      c.use_sliding_window = true;
    });
    await expectCode(load(b), 'MODEL_CONFIG', /Qwen3ForCausalLM use_sliding_window/);
    editConfig(b, (c) => {
      c.use_sliding_window = false;
      c.layer_types = ['full_attention', 'sliding_attention'];
    });
    await expectCode(load(b), 'MODEL_CONFIG', /only full_attention/);
    // Qwen3Config's head_dim default is 128, not hidden / heads.
    editConfig(b, (c) => {
      c.layer_types = ['full_attention', 'full_attention'];
      delete c.head_dim;
    });
    await expectCode(load(b), 'TENSOR_SHAPE', /but config\.json implies \[(128|512, 64|256, 64|64, 512)\]/);
    // The norms are modules of the base model but not linear projections: PEFT cannot adapt them either.
    const a = join(tmp, 'qwen3-qnorm-adapter');
    cpSync(adapterDir('qwen3', 'lora_qv_r4'), a, { recursive: true });
    const cfgPath = join(a, 'adapter_config.json');
    writeFileSync(
      cfgPath,
      JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), target_modules: ['q_proj', 'q_norm'] }),
    );
    const engine = await load(modelDir('qwen3'));
    try {
      await expectCode(
        engine.loadAdapter('x', a),
        'ADAPTER_UNSUPPORTED',
        /self_attn\.q_norm is not a linear projection/,
      );
    } finally {
      await engine.close();
    }
  });
  it('truncated safetensors at many cut points', async () => {
    const d = copyModel('trunc');
    const full = readFileSync(join(modelDir('llama'), 'model.safetensors'));
    for (const cut of [0, 5, 8, 100, 2000, full.length - 1]) {
      writeFileSync(join(d, 'model.safetensors'), full.subarray(0, cut));
      await expectCode(load(d), 'INVALID_SAFETENSORS');
    }
  });
  it('corrupted safetensors headers', async () => {
    const d = copyModel('corrupt');
    const full = readFileSync(join(modelDir('llama'), 'model.safetensors'));
    const garbage = Buffer.from(full);
    garbage.fill(0x7b, 8, 40); // '{{{{' : not JSON
    writeFileSync(join(d, 'model.safetensors'), garbage);
    await expectCode(load(d), 'INVALID_SAFETENSORS', /not valid JSON/);
    const huge = Buffer.from(full);
    huge.writeBigUInt64LE(2n ** 62n, 0);
    writeFileSync(join(d, 'model.safetensors'), huge);
    await expectCode(load(d), 'INVALID_SAFETENSORS', /header length/);
    const hdr = (h: object): Buffer => {
      const j = Buffer.from(JSON.stringify(h));
      const b = Buffer.alloc(8 + j.length + 64);
      b.writeBigUInt64LE(BigInt(j.length), 0);
      j.copy(b, 8);
      return b;
    };
    writeFileSync(
      join(d, 'model.safetensors'),
      hdr({
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
      }),
    );
    await expectCode(load(d), 'INVALID_SAFETENSORS', /overlap/);
    writeFileSync(join(d, 'model.safetensors'), hdr({ a: { dtype: 'F32', shape: [5], data_offsets: [0, 16] } }));
    await expectCode(load(d), 'INVALID_SAFETENSORS', /needs 20 bytes/);
    writeFileSync(join(d, 'model.safetensors'), hdr({ a: { dtype: 'Q4', shape: [4], data_offsets: [0, 16] } }));
    await expectCode(load(d), 'INVALID_SAFETENSORS', /unsupported dtype/);
  });
  it('bad engine options', async () => {
    await expectCode(Engine.load(modelDir('llama'), { backend: 'tpu' as 'cpu' }), 'INVALID_ARGUMENT', /backend/);
    await expectCode(Engine.load(modelDir('llama'), { maxLoraRank: 0 }), 'INVALID_ARGUMENT', /maxLoraRank/);
  });
});

describe('adapter refusals', () => {
  let engine: Engine;
  const dims = { H: 64, I: 172, Q: 64, KV: 32 };
  beforeAll(async () => {
    engine = await Engine.load(modelDir('llama'), { backend: 'cpu', maxAdapters: 4, maxLoraRank: 16, threads: 1 });
  });
  afterAll(async () => engine?.close());

  const fixtureCfg = (): Record<string, unknown> =>
    JSON.parse(readFileSync(join(adapterDir('llama', 'lora_all_r8'), 'adapter_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
  const withConfig = (name: string, edit: (c: Record<string, unknown>) => void): string => {
    const d = join(tmp, name);
    cpSync(adapterDir('llama', 'lora_all_r8'), d, { recursive: true });
    const c = fixtureCfg();
    edit(c);
    writeFileSync(join(d, 'adapter_config.json'), JSON.stringify(c));
    return d;
  };

  it('DoRA, modules_to_save, bias, other PEFT types', async () => {
    // DoRA is served, but use_dora: true on plain LoRA weights lacks the magnitude vectors.
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('dora', (c) => (c.use_dora = true)),
      ),
      'ADAPTER_SHAPE',
      /DoRA.*lora_magnitude_vector/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('mts', (c) => (c.modules_to_save = ['lm_head'])),
      ),
      'ADAPTER_UNSUPPORTED',
      /modules_to_save/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('bias', (c) => (c.bias = 'all')),
      ),
      'ADAPTER_UNSUPPORTED',
      /bias/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('ia3', (c) => (c.peft_type = 'IA3')),
      ),
      'ADAPTER_UNSUPPORTED',
      /IA3/,
    );
  });
  it('DoRA: a missing or misshapen magnitude vector, one on an untargeted module, one without use_dora', async () => {
    const dora = (
      name: string,
      edit: (t: Map<string, { shape: number[]; data: Float32Array }>) => void,
      useDora = true,
    ): string => {
      const d = join(tmp, name);
      const t = writeAdapter(d, { dims, targets: ['q_proj', 'v_proj'], r: 4, extraConfig: { use_dora: useDora } });
      for (let l = 0; l < 2; l++) {
        t.set(`base_model.model.model.layers.${l}.self_attn.q_proj.lora_magnitude_vector`, {
          shape: [64],
          data: new Float32Array(64).fill(1),
        });
        t.set(`base_model.model.model.layers.${l}.self_attn.v_proj.lora_magnitude_vector`, {
          shape: [32],
          data: new Float32Array(32).fill(1),
        });
      }
      edit(t);
      writeAdapterFiles(
        d,
        JSON.parse(readFileSync(join(d, 'adapter_config.json'), 'utf8')) as Record<string, unknown>,
        t,
      );
      return d;
    };
    const v1 = 'base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector';
    await expectCode(
      engine.loadAdapter(
        'x',
        dora('dora-missing', (t) => t.delete(v1)),
      ),
      'ADAPTER_SHAPE',
      /missing lora_magnitude_vector for .*layers\.1.*v_proj/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        dora('dora-shape', (t) => t.set(v1, { shape: [33], data: new Float32Array(33) })),
      ),
      'ADAPTER_SHAPE',
      /magnitude .* shape \[33\], expected \[32\]/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        dora('dora-2d', (t) => t.set(v1, { shape: [4, 8], data: new Float32Array(32) })),
      ),
      'ADAPTER_SHAPE',
      /shape \[4, 8\]/,
    );
    const k0 = 'base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector';
    await expectCode(
      engine.loadAdapter(
        'x',
        dora('dora-untargeted', (t) => t.set(k0, { shape: [32], data: new Float32Array(32).fill(1) })),
      ),
      'ADAPTER_SHAPE',
      /k_proj.*does not target/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        dora('dora-no-flag', () => undefined, false),
      ),
      'ADAPTER_SHAPE',
      /use_dora/,
    );
    // A well-formed one loads, and the engine keeps serving.
    await engine.loadAdapter(
      'dora-ok',
      dora('dora-ok', () => undefined),
    );
    const [out] = await engine.generate([
      { prompt: [1, 2, 3], adapter: 'dora-ok', sampling: { maxTokens: 2, temperature: 0 } },
    ]);
    expect(out!.tokens.length).toBeGreaterThan(0);
    await engine.unloadAdapter('dora-ok');
  });
  it('LoRA on embeddings or lm_head', async () => {
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('emb', (c) => (c.target_modules = ['q_proj', 'embed_tokens'])),
      ),
      'ADAPTER_UNSUPPORTED',
      /embed_tokens/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('head', (c) => (c.target_modules = 'lm_head|.*q_proj')),
      ),
      'ADAPTER_UNSUPPORTED',
      /lm_head/,
    );
    const d = join(tmp, 'embA');
    const t = writeAdapter(d, { dims, targets: ['q_proj'], r: 4 });
    t.set('base_model.model.model.embed_tokens.lora_embedding_A', { shape: [4, 512], data: new Float32Array(2048) });
    writeAdapterFiles(d, { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'] }, t);
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_UNSUPPORTED', /embeddings/);
  });
  it('targets that match nothing or a non-linear module', async () => {
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('none', (c) => (c.target_modules = ['c_attn'])),
      ),
      'ADAPTER_CONFIG',
      /match no module/,
    );
    await expectCode(
      engine.loadAdapter(
        'x',
        withConfig('norm', (c) => (c.target_modules = ['input_layernorm'])),
      ),
      'ADAPTER_UNSUPPORTED',
      /not a linear projection/,
    );
  });
  it('rank above the configured maximum', async () => {
    const d = join(tmp, 'r32');
    writeAdapter(d, { dims, targets: ['q_proj'], r: 32 });
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_UNSUPPORTED', /rank 32, above this engine's maxLoraRank 16/);
  });
  it('shapes that do not fit the base model, and a base model of another shape', async () => {
    const d = join(tmp, 'wrongshape');
    writeAdapter(d, { dims: { ...dims, H: 48 }, targets: ['q_proj', 'v_proj'], r: 4 });
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_SHAPE', /expected \[4, 64\]/);
    const deep = join(tmp, 'deeper');
    writeAdapter(deep, { dims, targets: ['q_proj'], r: 4, layers: 4 });
    await expectCode(engine.loadAdapter('x', deep), 'ADAPTER_SHAPE', /only 2 layers/);
    const rank = withConfig('rankmismatch', (c) => (c.r = 4));
    await expectCode(engine.loadAdapter('x', rank), 'ADAPTER_SHAPE', /rank 4/);
    const missing = join(tmp, 'missingB');
    const t = writeAdapter(missing, { dims, targets: ['q_proj', 'v_proj'], r: 4 });
    t.delete('base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight');
    writeAdapterFiles(missing, { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] }, t);
    await expectCode(
      engine.loadAdapter('x', missing),
      'ADAPTER_SHAPE',
      /missing lora_A\/lora_B weights for model\.layers\.1\.self_attn\.v_proj/,
    );
  });
  it('missing or malformed files', async () => {
    const d = join(tmp, 'empty');
    mkdirSync(d, { recursive: true });
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_CONFIG', /no adapter_config\.json/);
    writeFileSync(join(d, 'adapter_config.json'), '{"r": 8,');
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_CONFIG');
    writeFileSync(join(d, 'adapter_config.json'), JSON.stringify(fixtureCfg()));
    await expectCode(
      engine.loadAdapter('x', d),
      'ADAPTER_CONFIG',
      /neither adapter_model\.safetensors nor adapter_model\.bin/,
    );
    writeFileSync(join(d, 'adapter_config.json'), JSON.stringify({ ...fixtureCfg(), r: -1 }));
    await expectCode(engine.loadAdapter('x', d), 'ADAPTER_CONFIG', /r must be a positive integer/);
  });
  it('truncated and corrupted adapter_model.safetensors', async () => {
    const d = withConfig('trunc', () => undefined);
    const full = readFileSync(join(adapterDir('llama', 'lora_all_r8'), 'adapter_model.safetensors'));
    for (const cut of [3, 8, 64, Math.floor(full.length / 2), full.length - 4]) {
      writeFileSync(join(d, 'adapter_model.safetensors'), full.subarray(0, cut));
      await expectCode(engine.loadAdapter('x', d), 'INVALID_SAFETENSORS');
    }
    const bad = Buffer.from(full);
    bad.write('!!!!', 12);
    writeFileSync(join(d, 'adapter_model.safetensors'), bad);
    await expectCode(engine.loadAdapter('x', d), 'INVALID_SAFETENSORS');
  });
  it('truncated and corrupted adapter_model.bin', async () => {
    const d = join(tmp, 'binbad');
    mkdirSync(d, { recursive: true });
    copyFileSync(join(adapterDir('llama', 'lora_all_r8'), 'adapter_config.json'), join(d, 'adapter_config.json'));
    writeFileSync(join(d, 'adapter_model.bin'), Buffer.from('PK\x03\x04 this is not a real zip archive'));
    await expectCode(engine.loadAdapter('x', d), 'INVALID_CHECKPOINT');
    writeFileSync(
      join(d, 'adapter_model.bin'),
      Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8]),
    );
    await expectCode(engine.loadAdapter('x', d), 'INVALID_CHECKPOINT', /legacy/);
  });
  it('duplicate names, unknown adapters, and the engine still works after all refusals', async () => {
    await engine.loadAdapter('ok', adapterDir('llama', 'lora_qv_r4'));
    await expectCode(engine.loadAdapter('ok', adapterDir('llama', 'lora_qv_r4')), 'ADAPTER_EXISTS');
    await expectCode(engine.unloadAdapter('nope'), 'ADAPTER_NOT_FOUND');
    await expectCode(engine.generate([{ prompt: [1, 2], adapter: 'nope' }]), 'ADAPTER_NOT_FOUND');
    const [out] = await engine.generate([
      { prompt: [22, 506, 217, 201, 137], adapter: 'ok', sampling: { temperature: 0, maxTokens: 3 } },
    ]);
    expect(out!.tokens).toHaveLength(3);
    expect(engine.info().freeSlots).toBe(3);
    await engine.unloadAdapter('ok');
  });
});

describe('request refusals', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(modelDir('llama'), {
      backend: 'cpu',
      maxAdapters: 1,
      maxLoraRank: 8,
      kvCacheTokens: 64,
      blockSize: 16,
      threads: 1,
    });
  });
  afterAll(async () => engine?.close());

  it('token ids outside the vocabulary, empty prompts, bad sampling', async () => {
    await expectCode(engine.generate([{ prompt: [1, 512] }]), 'INVALID_ARGUMENT', /outside the vocabulary/);
    await expectCode(engine.generate([{ prompt: [] }]), 'INVALID_ARGUMENT', /at least one token/);
    await expectCode(engine.generate([{ prompt: [1], sampling: { topP: 0 } }]), 'INVALID_ARGUMENT', /topP/);
    await expectCode(
      engine.generate([{ prompt: [1], sampling: { temperature: -1 } }]),
      'INVALID_ARGUMENT',
      /temperature/,
    );
    await expectCode(engine.generate([{ prompt: [1], sampling: { logprobs: 21 } }]), 'INVALID_ARGUMENT', /logprobs/);
  });
  it('a request larger than the KV cache is refused; the cache is intact afterwards', async () => {
    await expectCode(engine.generate([{ prompt: Array(60).fill(5), sampling: { maxTokens: 10 } }]), 'KV_CACHE_FULL');
    expect(engine.kvUsage().freeBlocks).toBe(4);
    expect(() => engine.allocateBlocks(5)).toThrow(/KV cache needs 5 more block/);
    expect(engine.kvUsage().freeBlocks).toBe(4);
    // Requests that fit only one at a time still all complete (they wait for blocks).
    const outs = await engine.generate(
      Array.from({ length: 3 }, () => ({
        prompt: Array(40).fill(7),
        sampling: { maxTokens: 8, temperature: 0, ignoreEos: true },
      })),
    );
    expect(outs.map((o) => o.tokens.length)).toEqual([8, 8, 8]);
    expect(engine.kvUsage().freeBlocks).toBe(4);
  });
  it('the native step validates its inputs', async () => {
    const base = {
      tokens: [1, 2],
      startPosition: 0,
      blockTable: [0],
      adapterSlot: -1,
      sample: false,
      allLogits: false,
    };
    await expectCode(engine.runStep([{ ...base, blockTable: [99] }]), 'INVALID_ARGUMENT', /outside the KV cache/);
    await expectCode(engine.runStep([{ ...base, startPosition: 15 }]), 'INVALID_ARGUMENT', /needs 2 KV blocks/);
    await expectCode(engine.runStep([{ ...base, adapterSlot: 0 }]), 'INVALID_ARGUMENT', /holds no adapter/);
    await expectCode(engine.runStep([{ ...base, tokens: [] }]), 'INVALID_ARGUMENT', /at least one token/);
    await expectCode(engine.runStep([{ ...base, tokens: [1, 9999] }]), 'INVALID_ARGUMENT', /outside the vocabulary/);
  });
  it('the LoRA pool: slots and rank pages run out with a clear error', async () => {
    await engine.loadAdapter('a', adapterDir('llama', 'lora_qv_r4'));
    await expectCode(engine.loadAdapter('b', adapterDir('llama', 'lora_qv_r4')), 'ADAPTER_POOL_FULL', /slots/);
    await engine.unloadAdapter('a');
  });
  it('closed engines refuse work', async () => {
    const e = await Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 });
    await e.close();
    await expectCode(e.generate([{ prompt: [1] }]), 'ENGINE_CLOSED');
  });
});
