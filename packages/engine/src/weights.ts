// Finds a model's safetensors files (single or sharded), maps Hugging Face tensor names onto the
// engine's canonical keys and checks every shape against the config before anything is mapped.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { readSafetensorsHeader, type ModelConfig, type TensorInfo } from '@loraplex/formats';
import { EngineError } from './errors.js';
import type { NativeTensorRef } from './native.js';

export interface ModelWeights {
  files: string[];
  tensors: NativeTensorRef[];
  dtypes: Set<string>;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Lists the safetensors files of a model directory. */
export async function findWeightFiles(dir: string): Promise<string[]> {
  const single = join(dir, 'model.safetensors');
  if (await exists(single)) return [single];
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (!(await exists(indexPath))) {
    const hasBin =
      (await exists(join(dir, 'pytorch_model.bin'))) || (await exists(join(dir, 'pytorch_model.bin.index.json')));
    throw new EngineError(
      'MISSING_TENSOR',
      `${dir} has no model.safetensors or model.safetensors.index.json${hasBin ? ' (PyTorch .bin model weights are not supported; convert them to safetensors)' : ''}`,
    );
  }
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8')) as typeof index;
  } catch (e) {
    throw new EngineError('MODEL_CONFIG', `${indexPath} is not valid JSON: ${(e as Error).message}`);
  }
  if (!index.weight_map || typeof index.weight_map !== 'object')
    throw new EngineError('MODEL_CONFIG', `${indexPath} has no weight_map`);
  const root = resolve(dir);
  const files = [...new Set(Object.values(index.weight_map))].map((f) => {
    const p = resolve(root, String(f));
    if (!p.startsWith(root + sep))
      throw new EngineError('MODEL_CONFIG', `${indexPath} points outside the model directory: ${f}`);
    return p;
  });
  return files.sort();
}

const LAYER_NAMES: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm',
  'post_attention_layernorm.weight': 'ffn_norm',
  'self_attn.q_proj.weight': 'q',
  'self_attn.k_proj.weight': 'k',
  'self_attn.v_proj.weight': 'v',
  'self_attn.o_proj.weight': 'o',
  'mlp.gate_proj.weight': 'gate',
  'mlp.up_proj.weight': 'up',
  'mlp.down_proj.weight': 'down',
  'self_attn.q_proj.bias': 'q_bias',
  'self_attn.k_proj.bias': 'k_bias',
  'self_attn.v_proj.bias': 'v_bias',
  'self_attn.q_norm.weight': 'q_norm',
  'self_attn.k_norm.weight': 'k_norm',
};

function expectedShape(key: string, c: ModelConfig): number[] {
  const H = c.hidden,
    Q = c.heads * c.headDim,
    KV = c.kvHeads * c.headDim,
    I = c.intermediate;
  const name = key.startsWith('layers.') ? key.slice(key.indexOf('.', 7) + 1) : key;
  const shapes: Record<string, number[]> = {
    embed: [c.vocab, H],
    lm_head: [c.vocab, H],
    final_norm: [H],
    attn_norm: [H],
    ffn_norm: [H],
    q: [Q, H],
    k: [KV, H],
    v: [KV, H],
    o: [H, Q],
    gate: [I, H],
    up: [I, H],
    down: [H, I],
    q_bias: [Q],
    k_bias: [KV],
    v_bias: [KV],
    q_norm: [c.headDim],
    k_norm: [c.headDim],
  };
  return shapes[name]!;
}

export async function readModelWeights(dir: string, config: ModelConfig): Promise<ModelWeights> {
  const files = await findWeightFiles(dir);
  const byKey = new Map<string, { info: TensorInfo; file: number; hfName: string }>();
  for (let f = 0; f < files.length; f++) {
    const header = await readSafetensorsHeader(files[f]!);
    for (const [name, info] of header.tensors) {
      let key: string | undefined;
      const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
      if (name === 'model.embed_tokens.weight') key = 'embed';
      else if (name === 'model.norm.weight') key = 'final_norm';
      else if (name === 'lm_head.weight') key = config.tieEmbeddings ? undefined : 'lm_head';
      else if (/rotary_emb\.inv_freq$/.test(name))
        key = undefined; // recomputed from the config
      else if (m && LAYER_NAMES[m[2]!]) {
        const layer = Number(m[1]);
        if (layer >= config.layers)
          throw new EngineError(
            'TENSOR_SHAPE',
            `${name}: layer ${layer} does not exist (num_hidden_layers is ${config.layers})`,
          );
        key = `layers.${layer}.${LAYER_NAMES[m[2]!]}`;
      } else {
        throw new EngineError(
          'MISSING_TENSOR',
          `unexpected tensor ${name} in ${files[f]} (not part of a ${config.architecture})`,
        );
      }
      if (!key) continue;
      if (key.endsWith('_bias') && !config.qkvBias)
        throw new EngineError(
          'MISSING_TENSOR',
          `unexpected tensor ${name}: ${config.architecture} has no q/k/v biases`,
        );
      if (/\.[qk]_norm$/.test(key) && !config.qkNorm) {
        throw new EngineError(
          'MISSING_TENSOR',
          `unexpected tensor ${name}: ${config.architecture} has no query/key norms`,
        );
      }
      if (!['F32', 'F16', 'BF16'].includes(info.dtype))
        throw new EngineError('TENSOR_SHAPE', `${name} has dtype ${info.dtype}; weights must be F32, F16 or BF16`);
      const want = expectedShape(key, config);
      if (want.join(',') !== info.shape.join(',')) {
        throw new EngineError(
          'TENSOR_SHAPE',
          `${name} has shape [${info.shape.join(', ')}], but config.json implies [${want.join(', ')}]`,
        );
      }
      if (byKey.has(key)) throw new EngineError('MISSING_TENSOR', `tensor ${name} appears twice`);
      byKey.set(key, { info, file: f, hfName: name });
    }
  }
  const required = ['embed', 'final_norm', ...(config.tieEmbeddings ? [] : ['lm_head'])];
  const perLayer = ['attn_norm', 'ffn_norm', 'q', 'k', 'v', 'o', 'gate', 'up', 'down'];
  if (config.qkvBias) perLayer.push('q_bias', 'k_bias', 'v_bias');
  if (config.qkNorm) perLayer.push('q_norm', 'k_norm');
  for (let l = 0; l < config.layers; l++) for (const n of perLayer) required.push(`layers.${l}.${n}`);
  const missing = required.filter((k) => !byKey.has(k));
  if (missing.length > 0) {
    const hf = missing.slice(0, 5).map(hfNameOf).join(', ');
    throw new EngineError(
      'MISSING_TENSOR',
      `${dir}: missing ${missing.length} tensor(s), e.g. ${hf}${config.tieEmbeddings ? '' : ' (if the model ties its embeddings, set tie_word_embeddings in config.json)'}`,
    );
  }
  const tensors: NativeTensorRef[] = [];
  const dtypes = new Set<string>();
  for (const [key, t] of byKey) {
    tensors.push({
      key,
      file: t.file,
      offset: t.info.offset,
      dtype: t.info.dtype as NativeTensorRef['dtype'],
      shape: t.info.shape,
    });
    dtypes.add(t.info.dtype);
  }
  if (config.tieEmbeddings) {
    const e = byKey.get('embed')!;
    tensors.push({
      key: 'lm_head',
      file: e.file,
      offset: e.info.offset,
      dtype: e.info.dtype as NativeTensorRef['dtype'],
      shape: e.info.shape,
    });
  }
  return { files, tensors, dtypes };
}

function hfNameOf(key: string): string {
  if (key === 'embed') return 'model.embed_tokens.weight';
  if (key === 'final_norm') return 'model.norm.weight';
  if (key === 'lm_head') return 'lm_head.weight';
  const m = /^layers\.(\d+)\.(.+)$/.exec(key)!;
  const hf = Object.entries(LAYER_NAMES).find(([, v]) => v === m[2])![0];
  return `model.layers.${m[1]}.${hf}`;
}
