// Reads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors or
// adapter_model.bin), checks every tensor against the base model and produces the float32
// per-module A/B matrices the native LoRA pool takes.
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelConfig } from '../config.js';
import { EngineError } from '../errors.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { readTorchCheckpoint } from '../io/torch-checkpoint.js';
import type { NativeAdapterSpec, NativeAdapterTensor } from '../native.js';
import { MODULES, parsePeftConfig, resolveAdapterModules, type ModuleName, type PeftLoraConfig, type ResolvedModule } from './peft-config.js';

export interface LoadedAdapter {
  config: PeftLoraConfig;
  modules: ResolvedModule[];
  maxRank: number;
  spec: NativeAdapterSpec;
  bytes: number;
}

interface RawTensor { dtype: string; shape: number[]; data: Uint8Array }

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

async function readSafetensorsAll(path: string): Promise<Map<string, RawTensor>> {
  const header = await readSafetensorsHeader(path);
  const out = new Map<string, RawTensor>();
  const fh = await open(path, 'r');
  try {
    for (const [name, t] of header.tensors) {
      const data = new Uint8Array(t.byteLength);
      await fh.read(data, 0, t.byteLength, t.offset);
      out.set(name, { dtype: t.dtype, shape: t.shape, data });
    }
  } finally {
    await fh.close();
  }
  return out;
}

/** Reads only the adapter weights and config; validation against a model is separate. */
export async function readAdapterDir(dir: string): Promise<{ config: PeftLoraConfig; tensors: Map<string, RawTensor> }> {
  const cfgPath = join(dir, 'adapter_config.json');
  let rawCfg: unknown;
  try {
    rawCfg = JSON.parse(await readFile(cfgPath, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new EngineError('ADAPTER_CONFIG', code === 'ENOENT' ? `${dir} has no adapter_config.json` : `${cfgPath}: ${(e as Error).message}`);
  }
  const config = parsePeftConfig(rawCfg);
  const st = join(dir, 'adapter_model.safetensors');
  const bin = join(dir, 'adapter_model.bin');
  let tensors: Map<string, RawTensor>;
  if (await isFile(st)) tensors = await readSafetensorsAll(st);
  else if (await isFile(bin)) tensors = await readTorchCheckpoint(bin);
  else throw new EngineError('ADAPTER_CONFIG', `${dir} has neither adapter_model.safetensors nor adapter_model.bin`);
  return { config, tensors };
}

const KEY = /^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$/;

export function buildAdapter(config: PeftLoraConfig, tensors: Map<string, RawTensor>, model: ModelConfig, maxRank: number): LoadedAdapter {
  const modules = resolveAdapterModules(config, model, { maxRank });
  const byName = new Map(modules.map((m) => [`${m.layer}.${m.module}`, m]));
  const n = model.layers * MODULES.length;
  const spec: NativeAdapterSpec = { maxRank: 0, rank: new Int32Array(n), scale: new Float32Array(n), a: new Array(n).fill(null), b: new Array(n).fill(null) };
  const dims = (m: ModuleName): [number, number] => {
    const H = model.hidden, Q = model.heads * model.headDim, KV = model.kvHeads * model.headDim, I = model.intermediate;
    return ({ q_proj: [H, Q], k_proj: [H, KV], v_proj: [H, KV], o_proj: [Q, H], gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H] } as const)[m] as [number, number];
  };
  let bytes = 0;
  for (const [name, t] of tensors) {
    if (/lora_embedding_|embed_tokens|lm_head/.test(name)) throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: LoRA on embeddings / lm_head is not supported`);
    if (/lora_magnitude_vector/.test(name)) throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: DoRA adapters are not supported`);
    if (/modules_to_save/.test(name)) throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: modules_to_save is not supported`);
    const k = KEY.exec(name);
    if (!k) throw new EngineError('ADAPTER_SHAPE', `unexpected tensor ${name} in the adapter`);
    const layer = Number(k[1]), mod = k[3] as ModuleName;
    if (!MODULES.includes(mod)) throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: LoRA on ${mod} is not supported`);
    if (layer >= model.layers) throw new EngineError('ADAPTER_SHAPE', `tensor ${name}: the base model has only ${model.layers} layers (adapter made for another base model?)`);
    const res = byName.get(`${layer}.${mod}`);
    if (!res) throw new EngineError('ADAPTER_SHAPE', `tensor ${name} belongs to a module that adapter_config.json does not target`);
    const [inDim, outDim] = dims(mod);
    const want = k[4] === 'A' ? [res.rank, inDim] : [outDim, res.rank];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      throw new EngineError('ADAPTER_SHAPE', `tensor ${name} has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] for rank ${res.rank} on this base model`);
    }
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
      throw new EngineError('ADAPTER_SHAPE', `tensor ${name} has dtype ${t.dtype}; LoRA weights must be F32, F16 or BF16`);
    }
    const idx = layer * MODULES.length + MODULES.indexOf(mod);
    const stored: NativeAdapterTensor = { dtype: t.dtype, data: t.data };
    if (k[4] === 'A') spec.a[idx] = stored;
    else spec.b[idx] = stored;
    bytes += t.data.byteLength;
  }
  for (const m of modules) {
    const idx = m.layer * MODULES.length + MODULES.indexOf(m.module);
    if (!spec.a[idx] || !spec.b[idx]) throw new EngineError('ADAPTER_SHAPE', `adapter is missing lora_A/lora_B weights for ${m.name}`);
    spec.rank[idx] = m.rank;
    spec.scale[idx] = m.scaling;
    spec.maxRank = Math.max(spec.maxRank, m.rank);
  }
  return { config, modules, maxRank: spec.maxRank, spec, bytes };
}

export async function loadAdapterDir(dir: string, model: ModelConfig, maxRank: number): Promise<LoadedAdapter> {
  const { config, tensors } = await readAdapterDir(dir);
  return buildAdapter(config, tensors, model, maxRank);
}
