// Reads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors or
// adapter_model.bin), checks every tensor against the base model and produces the float32
// per-module A/B matrices the native LoRA pool takes (and, for DoRA, each module's magnitude vector).
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { ModelConfig } from './model-config.js';
import { EngineError } from './errors.js';
import { parseSafetensorsHeader } from './safetensors.js';
import { parseTorchCheckpoint } from './torch-checkpoint.js';
import {
  MODULES,
  parsePeftConfig,
  resolveAdapterModules,
  type ModuleName,
  type PeftLoraConfig,
  type ResolvedModule,
} from './peft-config.js';

/** One stored LoRA matrix, as its file holds it (the engine's native side widens it to float32). */
export interface AdapterTensor {
  dtype: 'F32' | 'F16' | 'BF16';
  data: Uint8Array;
}

/**
 * One adapter, per (layer, module) in layer-major order of the seven modules: the shape the
 * engine's native LoRA pool takes (its NativeAdapterSpec is this structure).
 */
export interface AdapterSpec {
  maxRank: number;
  rank: Int32Array;
  scale: Float32Array;
  a: Array<AdapterTensor | null>; // A [rank, in]
  b: Array<AdapterTensor | null>; // B [out, rank]
  /** DoRA magnitude m [out] per module (null: plain LoRA); the native side computes m / ||W + s B A|| per row. */
  magnitude: Array<AdapterTensor | null>;
}

export interface LoadedAdapter {
  config: PeftLoraConfig;
  modules: ResolvedModule[];
  maxRank: number;
  spec: AdapterSpec;
  bytes: number;
}

interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** An adapter's files as bytes: what the worker's host-memory tier keeps (compact, as stored). */
export interface AdapterFiles {
  /** adapter_config.json */
  config: Uint8Array;
  /** adapter_model.safetensors or adapter_model.bin */
  weights: Uint8Array;
  format: 'safetensors' | 'bin';
}

async function readIfFile(p: string): Promise<Buffer | undefined> {
  try {
    return await readFile(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR') return undefined;
    // The code, not the message: fs messages carry the full path, which clients must not see.
    throw new EngineError('ADAPTER_CONFIG', `${basename(p)} cannot be read (${code ?? 'I/O error'})`);
  }
}

/** Reads adapter_config.json and the weights file of a PEFT directory into memory. */
export async function readAdapterFiles(dir: string): Promise<AdapterFiles> {
  const config = await readIfFile(join(dir, 'adapter_config.json'));
  if (!config) throw new EngineError('ADAPTER_CONFIG', 'the adapter has no adapter_config.json');
  parseConfigBytes(config, 'adapter'); // a bad config is the first thing to report, even with no weights
  const st = await readIfFile(join(dir, 'adapter_model.safetensors'));
  if (st) return { config, weights: st, format: 'safetensors' };
  const bin = await readIfFile(join(dir, 'adapter_model.bin'));
  if (bin) return { config, weights: bin, format: 'bin' };
  throw new EngineError('ADAPTER_CONFIG', 'the adapter has neither adapter_model.safetensors nor adapter_model.bin');
}

function safetensorsTensors(bytes: Uint8Array, label: string): Map<string, RawTensor> {
  if (bytes.byteLength < 8)
    throw new EngineError(
      'INVALID_SAFETENSORS',
      `${label}: ${bytes.byteLength} bytes, too short for a safetensors header`,
    );
  const headerLen = Number(Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64LE(0));
  if (8 + headerLen > bytes.byteLength)
    throw new EngineError(
      'INVALID_SAFETENSORS',
      `${label}: header length ${headerLen} does not fit in a ${bytes.byteLength}-byte file (truncated or not safetensors)`,
    );
  const header = parseSafetensorsHeader(label, bytes.subarray(8, 8 + headerLen), bytes.byteLength);
  const out = new Map<string, RawTensor>();
  for (const [name, t] of header.tensors)
    out.set(name, { dtype: t.dtype, shape: t.shape, data: bytes.subarray(t.offset, t.offset + t.byteLength) });
  return out;
}

function parseConfigBytes(bytes: Uint8Array, label: string): PeftLoraConfig {
  let rawCfg: unknown;
  try {
    rawCfg = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    throw new EngineError('ADAPTER_CONFIG', `${label}/adapter_config.json: ${(e as Error).message}`);
  }
  return parsePeftConfig(rawCfg);
}

/** Parses an adapter's files; `label` (a path or name) prefixes error messages. Validation against a model is separate. */
export function parseAdapterFiles(
  files: AdapterFiles,
  label: string,
): { config: PeftLoraConfig; tensors: Map<string, RawTensor> } {
  const config = parseConfigBytes(files.config, label);
  const tensors =
    files.format === 'safetensors'
      ? safetensorsTensors(files.weights, `${label}/adapter_model.safetensors`)
      : parseTorchCheckpoint(files.weights, `${label}/adapter_model.bin`);
  return { config, tensors };
}

/** Reads only the adapter weights and config; validation against a model is separate. */
export async function readAdapterDir(
  dir: string,
): Promise<{ config: PeftLoraConfig; tensors: Map<string, RawTensor> }> {
  return parseAdapterFiles(await readAdapterFiles(dir), dir);
}

const KEY = /^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$/;

// DoRA magnitudes: peft saves `<module>.lora_magnitude_vector` (peft 0.12, the llama_dora fixture); an adapter-name
// and/or `.weight` suffix (the in-memory names of other peft versions) are accepted too.
const MAGNITUDE_KEY =
  /^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_magnitude_vector(?:\.[\w-]+)?(?:\.weight)?$/;

// Checks one DoRA magnitude vector and stores it in spec; returns its bytes.
function storeMagnitude(
  name: string,
  t: RawTensor,
  k: RegExpExecArray,
  config: PeftLoraConfig,
  model: ModelConfig,
  byName: Map<string, ResolvedModule>,
  dims: (m: ModuleName) => [number, number],
  spec: AdapterSpec,
): number {
  if (!config.useDora)
    throw new EngineError(
      'ADAPTER_SHAPE',
      `tensor ${name}: a DoRA magnitude vector in an adapter whose config has no use_dora: true`,
    );
  const layer = Number(k[1]),
    mod = k[3] as ModuleName;
  if (!MODULES.includes(mod))
    throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: DoRA on ${mod} is not supported`);
  if (layer >= model.layers)
    throw new EngineError(
      'ADAPTER_SHAPE',
      `tensor ${name}: the base model has only ${model.layers} layers (adapter made for another base model?)`,
    );
  if (!byName.get(`${layer}.${mod}`))
    throw new EngineError(
      'ADAPTER_SHAPE',
      `tensor ${name} belongs to a module that adapter_config.json does not target`,
    );
  const out = dims(mod)[1];
  // peft stores [out]; some versions keep a trailing or leading unit axis.
  const elems = t.shape.reduce((x, y) => x * y, 1);
  if (elems !== out || t.shape.filter((d) => d !== 1).length > 1) {
    throw new EngineError(
      'ADAPTER_SHAPE',
      `DoRA magnitude ${name} has shape [${t.shape.join(', ')}], expected [${out}] (one per output row) on this base model`,
    );
  }
  if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
    throw new EngineError(
      'ADAPTER_SHAPE',
      `tensor ${name} has dtype ${t.dtype}; DoRA magnitudes must be F32, F16 or BF16`,
    );
  }
  spec.magnitude[layer * MODULES.length + MODULES.indexOf(mod)] = { dtype: t.dtype, data: t.data };
  return t.data.byteLength;
}

export function buildAdapter(
  config: PeftLoraConfig,
  tensors: Map<string, RawTensor>,
  model: ModelConfig,
  maxRank: number,
  resolved?: ResolvedModule[],
): LoadedAdapter {
  const modules = resolved ?? resolveAdapterModules(config, model, { maxRank });
  const byName = new Map(modules.map((m) => [`${m.layer}.${m.module}`, m]));
  const n = model.layers * MODULES.length;
  const spec: AdapterSpec = {
    maxRank: 0,
    rank: new Int32Array(n),
    scale: new Float32Array(n),
    a: new Array(n).fill(null),
    b: new Array(n).fill(null),
    magnitude: new Array(n).fill(null),
  };
  const dims = (m: ModuleName): [number, number] => {
    const H = model.hidden,
      Q = model.heads * model.headDim,
      KV = model.kvHeads * model.headDim,
      I = model.intermediate;
    return (
      {
        q_proj: [H, Q],
        k_proj: [H, KV],
        v_proj: [H, KV],
        o_proj: [Q, H],
        gate_proj: [H, I],
        up_proj: [H, I],
        down_proj: [I, H],
      } as const
    )[m] as [number, number];
  };
  let bytes = 0;
  for (const [name, t] of tensors) {
    if (/lora_embedding_|embed_tokens|lm_head/.test(name))
      throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: LoRA on embeddings / lm_head is not supported`);
    if (/modules_to_save/.test(name))
      throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: modules_to_save is not supported`);
    const mag = MAGNITUDE_KEY.exec(name);
    if (mag) {
      bytes += storeMagnitude(name, t, mag, config, model, byName, dims, spec);
      continue;
    }
    const k = KEY.exec(name);
    if (!k) throw new EngineError('ADAPTER_SHAPE', `unexpected tensor ${name} in the adapter`);
    const layer = Number(k[1]),
      mod = k[3] as ModuleName;
    if (!MODULES.includes(mod))
      throw new EngineError('ADAPTER_UNSUPPORTED', `tensor ${name}: LoRA on ${mod} is not supported`);
    if (layer >= model.layers)
      throw new EngineError(
        'ADAPTER_SHAPE',
        `tensor ${name}: the base model has only ${model.layers} layers (adapter made for another base model?)`,
      );
    const res = byName.get(`${layer}.${mod}`);
    if (!res)
      throw new EngineError(
        'ADAPTER_SHAPE',
        `tensor ${name} belongs to a module that adapter_config.json does not target`,
      );
    const [inDim, outDim] = dims(mod);
    const want = k[4] === 'A' ? [res.rank, inDim] : [outDim, res.rank];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      throw new EngineError(
        'ADAPTER_SHAPE',
        `tensor ${name} has shape [${t.shape.join(', ')}], expected [${want.join(', ')}] for rank ${res.rank} on this base model`,
      );
    }
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
      throw new EngineError(
        'ADAPTER_SHAPE',
        `tensor ${name} has dtype ${t.dtype}; LoRA weights must be F32, F16 or BF16`,
      );
    }
    const idx = layer * MODULES.length + MODULES.indexOf(mod);
    const stored: AdapterTensor = { dtype: t.dtype, data: t.data };
    if (k[4] === 'A') spec.a[idx] = stored;
    else spec.b[idx] = stored;
    bytes += t.data.byteLength;
  }
  for (const m of modules) {
    const idx = m.layer * MODULES.length + MODULES.indexOf(m.module);
    if (!spec.a[idx] || !spec.b[idx])
      throw new EngineError('ADAPTER_SHAPE', `adapter is missing lora_A/lora_B weights for ${m.name}`);
    if (config.useDora && !spec.magnitude[idx]) {
      throw new EngineError(
        'ADAPTER_SHAPE',
        `DoRA adapter (use_dora: true) is missing lora_magnitude_vector for ${m.name}`,
      );
    }
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
