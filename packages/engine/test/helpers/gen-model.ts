// Writes small random Hugging Face models and PEFT adapters for tests, deterministically from a seed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors, f32ToBf16, MODULE_PARENT, type ModuleName, type TensorToWrite } from '@loraplex/formats';

export { mulberry32 } from '../../../formats/test/helpers/random.js';

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function randn(rand: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12),
      v = rand();
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v) * std;
  }
  return out;
}

export interface GenModelOptions {
  arch?: 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM' | 'Qwen3ForCausalLM';
  vocab?: number;
  hidden?: number;
  intermediate?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  tie?: boolean;
  dtype?: 'F32' | 'BF16' | 'F16';
  seed?: number;
  slidingWindow?: number;
  ropeScaling?: Record<string, unknown>;
  maxPositions?: number;
}

export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const f = new Float32Array(1),
    u = new Uint32Array(f.buffer);
  for (let i = 0; i < src.length; i++) {
    f[0] = src[i]!;
    const x = u[0]!,
      sign = (x >>> 16) & 0x8000,
      e = ((x >>> 23) & 0xff) - 127 + 15,
      m = x & 0x7fffff;
    if (e <= 0) out[i] = sign | (e < -10 ? 0 : (m | 0x800000) >> (14 - e));
    else if (e >= 31) out[i] = sign | 0x7c00;
    else out[i] = sign | (e << 10) | (m >> 13);
  }
  return out;
}

export function tensor(data: Float32Array, shape: number[], dtype: 'F32' | 'BF16' | 'F16' = 'F32'): TensorToWrite {
  const bytes = dtype === 'F32' ? data : dtype === 'BF16' ? f32ToBf16(data) : f32ToF16(data);
  return { dtype, shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

/** Writes config.json, generation_config.json and model.safetensors into dir; returns the tensors (float32). */
export function writeModel(dir: string, o: GenModelOptions = {}): Map<string, { shape: number[]; data: Float32Array }> {
  const arch = o.arch ?? 'LlamaForCausalLM';
  const V = o.vocab ?? 96,
    H = o.hidden ?? 40,
    I = o.intermediate ?? 72,
    L = o.layers ?? 2,
    nh = o.heads ?? 4,
    nkv = o.kvHeads ?? 2;
  const hd = o.headDim ?? H / nh;
  const rand = rng(o.seed ?? 7);
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], std: number, mean = 0): void => {
    const d = randn(
      rand,
      shape.reduce((a, b) => a * b, 1),
      std,
    );
    if (mean) for (let i = 0; i < d.length; i++) d[i]! += mean;
    t.set(name, { shape, data: d });
  };
  add('model.embed_tokens.weight', [V, H], 0.5);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [H], 0.1, 1);
    add(`${p}.post_attention_layernorm.weight`, [H], 0.1, 1);
    add(`${p}.self_attn.q_proj.weight`, [nh * hd, H], 0.2);
    add(`${p}.self_attn.k_proj.weight`, [nkv * hd, H], 0.2);
    add(`${p}.self_attn.v_proj.weight`, [nkv * hd, H], 0.2);
    add(`${p}.self_attn.o_proj.weight`, [H, nh * hd], 0.2);
    if (arch === 'Qwen2ForCausalLM') {
      add(`${p}.self_attn.q_proj.bias`, [nh * hd], 0.1);
      add(`${p}.self_attn.k_proj.bias`, [nkv * hd], 0.1);
      add(`${p}.self_attn.v_proj.bias`, [nkv * hd], 0.1);
    }
    if (arch === 'Qwen3ForCausalLM') {
      add(`${p}.self_attn.q_norm.weight`, [hd], 0.1, 1);
      add(`${p}.self_attn.k_norm.weight`, [hd], 0.1, 1);
    }
    add(`${p}.mlp.gate_proj.weight`, [I, H], 0.2);
    add(`${p}.mlp.up_proj.weight`, [I, H], 0.2);
    add(`${p}.mlp.down_proj.weight`, [H, I], 0.2);
  }
  add('model.norm.weight', [H], 0.1, 1);
  if (!o.tie) add('lm_head.weight', [V, H], 0.3);
  mkdirSync(dir, { recursive: true });
  const config: Record<string, unknown> = {
    architectures: [arch],
    model_type: arch.replace('ForCausalLM', '').toLowerCase(),
    vocab_size: V,
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: nh,
    num_key_value_heads: nkv,
    hidden_act: 'silu',
    max_position_embeddings: o.maxPositions ?? 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: o.tie ?? false,
    torch_dtype: 'float32',
    bos_token_id: 1,
    eos_token_id: 2,
  };
  if (o.headDim !== undefined || arch === 'Qwen3ForCausalLM') config.head_dim = hd; // Qwen3Config's default is 128
  if (o.slidingWindow !== undefined) config.sliding_window = o.slidingWindow;
  if (o.ropeScaling) config.rope_scaling = o.ropeScaling;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
  const out: Record<string, TensorToWrite> = {};
  for (const [name, v] of t) out[name] = tensor(v.data, v.shape, o.dtype ?? 'F32');
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(out, { format: 'pt' }));
  return t;
}

export interface GenAdapterOptions {
  r?: number;
  alpha?: number;
  targets?: string[] | string;
  seed?: number;
  rslora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  layers?: number;
  extraConfig?: Record<string, unknown>;
  /** Model dims: hidden, intermediate, heads*headDim, kvHeads*headDim. */
  dims: { H: number; I: number; Q: number; KV: number };
}

export function moduleDims(mod: string, d: GenAdapterOptions['dims']): [number, number] {
  return (
    {
      q_proj: [d.H, d.Q],
      k_proj: [d.H, d.KV],
      v_proj: [d.H, d.KV],
      o_proj: [d.Q, d.H],
      gate_proj: [d.H, d.I],
      up_proj: [d.H, d.I],
      down_proj: [d.I, d.H],
    } as Record<string, [number, number]>
  )[mod]!;
}

/** Writes a PEFT adapter with random A and B for every targeted (list) module in every layer. */
export function writeAdapter(dir: string, o: GenAdapterOptions): Map<string, { shape: number[]; data: Float32Array }> {
  const r = o.r ?? 4,
    targets = Array.isArray(o.targets) ? o.targets : o.targets ? [] : ['q_proj', 'v_proj'];
  const rand = rng(o.seed ?? 11);
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  for (let l = 0; l < (o.layers ?? 2); l++) {
    for (const mod of targets) {
      const name = `base_model.model.model.layers.${l}.${MODULE_PARENT[mod as ModuleName]}.${mod}`;
      const rank =
        Object.entries(o.rankPattern ?? {}).find(([k]) =>
          new RegExp(`^.*\\.${k}$`).test(name.replace('base_model.model.', '')),
        )?.[1] ?? r;
      const [inD, outD] = moduleDims(mod, o.dims);
      t.set(`${name}.lora_A.weight`, { shape: [rank, inD], data: randn(rand, rank * inD, 0.3) });
      t.set(`${name}.lora_B.weight`, { shape: [outD, rank], data: randn(rand, outD * rank, 0.3) });
    }
  }
  writeAdapterFiles(
    dir,
    {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r,
      lora_alpha: o.alpha ?? 2 * r,
      target_modules: o.targets ?? ['q_proj', 'v_proj'],
      lora_dropout: 0,
      bias: 'none',
      use_rslora: o.rslora ?? false,
      rank_pattern: o.rankPattern ?? {},
      alpha_pattern: o.alphaPattern ?? {},
      use_dora: false,
      fan_in_fan_out: false,
      modules_to_save: null,
      ...o.extraConfig,
    },
    t,
  );
  return t;
}

export function writeAdapterFiles(
  dir: string,
  config: Record<string, unknown>,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  const out: Record<string, TensorToWrite> = {};
  for (const [name, v] of tensors) out[name] = tensor(v.data, v.shape);
  writeFileSync(join(dir, 'adapter_model.safetensors'), encodeSafetensors(out));
}
