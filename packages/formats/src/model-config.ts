// Reads a Hugging Face config.json (+ generation_config.json) into the engine's model config,
// refusing what the engine cannot run exactly.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EngineError } from './errors.js';

export type Architecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM' | 'Qwen3ForCausalLM';
const SUPPORTED: Architecture[] = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'];

export interface ModelConfig {
  architecture: Architecture;
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  rmsEps: number;
  ropeTheta: number;
  /** Rotary inverse frequencies [headDim / 2], with rope_scaling applied. */
  invFreq: Float32Array;
  slidingWindow: number;
  maxPositions: number;
  tieEmbeddings: boolean;
  qkvBias: boolean;
  /** Per-head RMSNorm of queries and keys (Qwen3: self_attn.q_norm / k_norm [headDim]) before rotary. */
  qkNorm: boolean;
  torchDtype: string | undefined;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
}

function cfgError(msg: string): EngineError {
  return new EngineError('MODEL_CONFIG', msg);
}

async function readJson(path: string, optional: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (optional && (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw cfgError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw cfgError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

function posInt(c: Record<string, unknown>, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw cfgError(`config.json: ${key} must be a positive integer, got ${JSON.stringify(c[key])}`);
  return v;
}

function posNum(c: Record<string, unknown>, key: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0))
    throw cfgError(`config.json: ${key} must be a positive number, got ${JSON.stringify(c[key])}`);
  return v;
}

function idList(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'number') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'number')) return v as number[];
  throw cfgError(`eos_token_id must be a number or a list of numbers, got ${JSON.stringify(v)}`);
}

/** Rotary inverse frequencies as HF computes them (float32), then rope_scaling. */
export function ropeInvFreq(headDim: number, theta: number, scaling: unknown): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, Math.fround((2 * i) / headDim));
  if (scaling === undefined || scaling === null) return inv;
  if (typeof scaling !== 'object') throw cfgError('rope_scaling must be an object');
  const s = scaling as Record<string, unknown>;
  const type = (s.rope_type ?? s.type) as string | undefined;
  if (type === 'default') return inv;
  const factor = s.factor;
  if (typeof factor !== 'number' || !(factor > 0)) throw cfgError('rope_scaling.factor must be a positive number');
  if (type === 'linear') return inv.map((f) => f / factor);
  if (type === 'llama3') {
    const low = s.low_freq_factor,
      high = s.high_freq_factor,
      orig = s.original_max_position_embeddings;
    if (typeof low !== 'number' || typeof high !== 'number' || typeof orig !== 'number' || !(high > low)) {
      throw cfgError(
        'rope_scaling of type llama3 needs low_freq_factor < high_freq_factor and original_max_position_embeddings',
      );
    }
    const lowWavelen = orig / low,
      highWavelen = orig / high;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (orig / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw cfgError(`rope_scaling type ${JSON.stringify(type)} is not supported (supported: default, linear, llama3)`);
}

/** Where rope_theta and rope scaling live: top level (transformers 4) or rope_parameters (transformers 5). */
function ropeParameters(c: Record<string, unknown>): { theta: Record<string, unknown>; scaling: unknown } {
  const p = c.rope_parameters;
  if (p === undefined || p === null) return { theta: c, scaling: c.rope_scaling };
  if (typeof p !== 'object' || Array.isArray(p)) throw cfgError('config.json: rope_parameters must be an object');
  const params = p as Record<string, unknown>;
  if (c.rope_scaling !== undefined && c.rope_scaling !== null)
    throw cfgError('config.json has both rope_parameters and rope_scaling');
  // rope_parameters also carries rope_theta, which ropeInvFreq ignores.
  return { theta: params.rope_theta === undefined ? c : params, scaling: params };
}

export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const c = await readJson(join(dir, 'config.json'), false);
  if (!c) throw cfgError(`${dir} has no config.json`);
  return parseModelConfig(c, await readJson(join(dir, 'generation_config.json'), true));
}

/** A model's config.json (and generation_config.json) as parsed JSON objects -> ModelConfig. */
export function parseModelConfig(c: Record<string, unknown>, gen?: Record<string, unknown>): ModelConfig {
  const archs = c.architectures;
  const architecture = (Array.isArray(archs) ? archs[0] : undefined) as Architecture | undefined;
  if (!architecture || !SUPPORTED.includes(architecture)) {
    throw new EngineError(
      'UNSUPPORTED_ARCHITECTURE',
      `architecture ${JSON.stringify(archs)} is not supported; supported: ${SUPPORTED.join(', ')}`,
    );
  }
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw cfgError(`hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const hidden = posInt(c, 'hidden_size');
  const heads = posInt(c, 'num_attention_heads');
  const kvHeads = posInt(c, 'num_key_value_heads', heads);
  if (heads % kvHeads !== 0)
    throw cfgError(`num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  // Without head_dim, transformers' Qwen3Config uses 128 (not hidden / heads as the others do).
  const defaultHeadDim = architecture === 'Qwen3ForCausalLM' ? 128 : hidden / heads;
  const headDim = c.head_dim === undefined || c.head_dim === null ? defaultHeadDim : posInt(c, 'head_dim');
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw cfgError(`head_dim ${headDim} must be an even integer`);
  // transformers >= 5 writes rope_theta and the scaling into rope_parameters; older configs keep them top level.
  const rope = ropeParameters(c);
  const ropeTheta = posNum(rope.theta, 'rope_theta', 10000);
  if (c.attention_bias === true || c.mlp_bias === true) {
    // Qwen3's attention_bias also puts a bias on o_proj, which the engine has no place for.
    throw cfgError(`attention_bias / mlp_bias on ${architecture} models are not supported`);
  }
  let slidingWindow = 0;
  if (architecture === 'MistralForCausalLM' && typeof c.sliding_window === 'number') slidingWindow = c.sliding_window;
  const qwen = architecture === 'Qwen2ForCausalLM' || architecture === 'Qwen3ForCausalLM';
  if (qwen && c.use_sliding_window === true) throw cfgError(`${architecture} use_sliding_window is not supported`);
  if (qwen && Array.isArray(c.layer_types) && c.layer_types.some((t) => t !== 'full_attention')) {
    throw cfgError(`layer_types ${JSON.stringify(c.layer_types)}: only full_attention layers are supported`);
  }
  const eos = new Set<number>([...idList(c.eos_token_id), ...idList(gen?.eos_token_id)]);
  return {
    architecture,
    vocab: posInt(c, 'vocab_size'),
    hidden,
    intermediate: posInt(c, 'intermediate_size'),
    layers: posInt(c, 'num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    rmsEps: posNum(c, 'rms_norm_eps', 1e-6),
    ropeTheta,
    invFreq: ropeInvFreq(headDim, ropeTheta, rope.scaling),
    slidingWindow,
    maxPositions: posInt(c, 'max_position_embeddings', 4096),
    tieEmbeddings: c.tie_word_embeddings === true,
    qkvBias: architecture === 'Qwen2ForCausalLM',
    qkNorm: architecture === 'Qwen3ForCausalLM',
    torchDtype: typeof c.torch_dtype === 'string' ? c.torch_dtype : typeof c.dtype === 'string' ? c.dtype : undefined,
    bosTokenId:
      typeof (gen?.bos_token_id ?? c.bos_token_id) === 'number'
        ? ((gen?.bos_token_id ?? c.bos_token_id) as number)
        : undefined,
    eosTokenIds: [...eos],
  };
}
