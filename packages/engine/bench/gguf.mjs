#!/usr/bin/env node
// Converts a (generated) Llama HF directory into a GGUF v3 file for llama.cpp, so both engines run
// the very same weights. Mirrors what llama.cpp's convert_hf_to_gguf.py does for LlamaForCausalLM,
// reimplemented here (no Python/torch on this machine):
//   - GGUF v3 layout: magic "GGUF", u32 version, u64 tensor count, u64 kv count, key/values,
//     tensor infos (name, n_dims, dims innermost-first, ggml type, offset), padding to
//     general.alignment (32), then tensor data, each tensor starting at a multiple of 32.
//   - q_proj/k_proj rows are permuted: HF applies RoPE "rotate-half" (pairs i, i + d/2), llama.cpp's
//     llama arch applies it to adjacent pairs (2i, 2i + 1). Within each head, new row 2j+p takes old
//     row p*d/2 + j (the converter's reshape(n_head, 2, d/2, in).swapaxes(1, 2)); k uses n_kv_heads.
//   - 1-D tensors (norm weights) are always stored as F32, 2-D ones keep the source type.
//
//   node bench/gguf.mjs --model .bench/model-f32 --out .bench/model-f32.gguf [--outtype auto|f32|bf16]
import { openSync, closeSync, readFileSync, statSync } from 'node:fs';
import { join, resolve, basename } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSafetensors, writeAll, f32ToBf16, bf16ToF32, f16ToF32 } from './safetensors.mjs';
import { vocabTokens, UNK_ID, BOS_ID, EOS_ID, FIRST_BYTE_ID, FIRST_NORMAL_ID } from './gen-model.mjs';

// ggml tensor types (ggml.h enum ggml_type) and llama_ftype values used in general.file_type.
export const GGML_TYPE = { F32: 0, F16: 1, BF16: 30 };
const TYPE_SIZE = { 0: 4, 1: 2, 30: 2 };
const FILE_TYPE = { F32: 0 /* ALL_F32 */, BF16: 32 /* MOSTLY_BF16 */ };
// GGUF metadata value types.
const V = {
  U8: 0,
  I8: 1,
  U16: 2,
  I16: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  U64: 10,
  I64: 11,
  F64: 12,
};
// llama_token_type values for tokenizer.ggml.token_type.
const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 };
const ALIGN = 32;

/** Append-only little-endian byte builder for the GGUF header. */
class Bytes {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }
  push(buf) {
    this.chunks.push(buf);
    this.length += buf.length;
  }
  u32(x) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(x);
    this.push(b);
  }
  i32(x) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(x);
    this.push(b);
  }
  u64(x) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(x));
    this.push(b);
  }
  f32(x) {
    const b = Buffer.alloc(4);
    b.writeFloatLE(x);
    this.push(b);
  }
  bool(x) {
    this.push(Buffer.from([x ? 1 : 0]));
  }
  str(s) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  toBuffer() {
    return Buffer.concat(this.chunks, this.length);
  }
}

/** Writes one key/value; `type` is a V.* code, or [V.ARRAY, elemType] for arrays. */
function writeKv(out, key, type, value) {
  out.str(key);
  if (Array.isArray(type)) {
    out.u32(V.ARRAY);
    out.u32(type[1]);
    out.u64(value.length);
    if (type[1] === V.F32) {
      const b = Buffer.alloc(4 * value.length);
      value.forEach((x, i) => b.writeFloatLE(x, 4 * i));
      out.push(b);
    } else if (type[1] === V.I32) {
      const b = Buffer.alloc(4 * value.length);
      value.forEach((x, i) => b.writeInt32LE(x, 4 * i));
      out.push(b);
    } else if (type[1] === V.STRING) for (const s of value) out.str(s);
    else throw new Error(`array type ${type[1]} not supported`);
    return;
  }
  out.u32(type);
  if (type === V.U32) out.u32(value);
  else if (type === V.F32) out.f32(value);
  else if (type === V.STRING) out.str(value);
  else if (type === V.BOOL) out.bool(value);
  else throw new Error(`value type ${type} not supported`);
}

/** HF tensor name -> GGUF tensor name (llama.cpp's tensor_mapping for LLAMA). */
export function ggufTensorName(hf) {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
  const map = {
    input_layernorm: 'attn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    post_attention_layernorm: 'ffn_norm',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  if (!m || !(m[2] in map)) throw new Error(`no GGUF name for HF tensor ${hf}`);
  return `blk.${m[1]}.${map[m[2]]}.weight`;
}

/**
 * Reorders rows from HF rotate-half layout to llama.cpp's interleaved-pair layout, head by head.
 * Works on raw bytes (any element size), so BF16 data is permuted without conversion.
 */
export function permuteRopeRows(bytes, rows, rowBytes, nHead) {
  const hd = rows / nHead,
    half = hd / 2;
  if (!Number.isInteger(hd) || hd % 2) throw new Error(`cannot split ${rows} rows into ${nHead} heads of even size`);
  const out = new Uint8Array(bytes.length);
  for (let h = 0; h < nHead; h++) {
    for (let j = 0; j < half; j++) {
      for (let p = 0; p < 2; p++) {
        const src = (h * hd + p * half + j) * rowBytes;
        out.set(bytes.subarray(src, src + rowBytes), (h * hd + 2 * j + p) * rowBytes);
      }
    }
  }
  return out;
}

/** Converts raw tensor bytes from a safetensors dtype to a ggml type. */
function convert(bytes, srcDtype, dstType) {
  if ((srcDtype === 'F32' && dstType === GGML_TYPE.F32) || (srcDtype === 'BF16' && dstType === GGML_TYPE.BF16))
    return bytes;
  let f32;
  if (srcDtype === 'F32') f32 = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  else if (srcDtype === 'BF16') f32 = bf16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
  else if (srcDtype === 'F16') f32 = f16ToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2));
  else throw new Error(`unsupported source dtype ${srcDtype}`);
  if (dstType === GGML_TYPE.F32) return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  if (dstType === GGML_TYPE.BF16) {
    const b = f32ToBf16(f32);
    return new Uint8Array(b.buffer);
  }
  throw new Error(`unsupported target type ${dstType}`);
}

/** Tokenizer metadata llama.cpp accepts as an SPM ("llama") vocabulary. */
function tokenizerKvs(vocab) {
  const tokens = vocabTokens(vocab);
  const scores = new Array(vocab).fill(0);
  const types = new Array(vocab).fill(TOKEN_TYPE.NORMAL);
  types[UNK_ID] = TOKEN_TYPE.UNKNOWN;
  types[BOS_ID] = TOKEN_TYPE.CONTROL;
  types[EOS_ID] = TOKEN_TYPE.CONTROL;
  for (let b = 0; b < 256; b++) types[FIRST_BYTE_ID + b] = TOKEN_TYPE.BYTE;
  // SPM merges pieces by score; decreasing scores make the synthetic vocabulary well ordered.
  for (let i = FIRST_NORMAL_ID; i < vocab; i++) scores[i] = -(i - FIRST_NORMAL_ID);
  return [
    ['tokenizer.ggml.model', V.STRING, 'llama'],
    ['tokenizer.ggml.tokens', [V.ARRAY, V.STRING], tokens],
    ['tokenizer.ggml.scores', [V.ARRAY, V.F32], scores],
    ['tokenizer.ggml.token_type', [V.ARRAY, V.I32], types],
    ['tokenizer.ggml.bos_token_id', V.U32, BOS_ID],
    ['tokenizer.ggml.eos_token_id', V.U32, EOS_ID],
    ['tokenizer.ggml.unknown_token_id', V.U32, UNK_ID],
    ['tokenizer.ggml.add_bos_token', V.BOOL, true],
    ['tokenizer.ggml.add_eos_token', V.BOOL, false],
  ];
}

/**
 * Writes `outPath` from the HF directory `modelDir`. outtype: 'auto' keeps the source type of 2-D
 * tensors, 'f32' / 'bf16' force one. permuteQK=false exists only for check-gguf.mjs's negative control.
 */
export function writeGgufFromHf(modelDir, outPath, { outtype = 'auto', permuteQK = true, name } = {}) {
  const cfg = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8'));
  if (cfg.model_type !== 'llama') throw new Error(`only llama models are supported, got ${cfg.model_type}`);
  const st = openSafetensors(join(modelDir, 'model.safetensors'));
  try {
    const nHead = cfg.num_attention_heads,
      nKv = cfg.num_key_value_heads ?? nHead;
    const headDim = cfg.head_dim ?? cfg.hidden_size / nHead;
    const infos = [];
    let offset = 0,
      any2d = null;
    for (const t of st.tensors.values()) {
      let type;
      if (t.shape.length === 1 || outtype === 'f32') type = GGML_TYPE.F32;
      else if (outtype === 'bf16') type = GGML_TYPE.BF16;
      else if (t.dtype === 'F32') type = GGML_TYPE.F32;
      else if (t.dtype === 'BF16') type = GGML_TYPE.BF16;
      else throw new Error(`${t.name}: source dtype ${t.dtype} needs --outtype f32 or bf16`);
      if (t.shape.length === 2) any2d = type;
      const n = t.shape.reduce((a, b) => a * b, 1);
      const bytes = n * TYPE_SIZE[type];
      infos.push({ hf: t, name: ggufTensorName(t.name), dims: [...t.shape].reverse(), type, offset, bytes });
      offset += Math.ceil(bytes / ALIGN) * ALIGN;
    }

    const kvs = [
      ['general.architecture', V.STRING, 'llama'],
      ['general.name', V.STRING, name ?? basename(resolve(modelDir))],
      ['general.file_type', V.U32, any2d === GGML_TYPE.BF16 ? FILE_TYPE.BF16 : FILE_TYPE.F32],
      ['general.quantization_version', V.U32, 2],
      ['general.alignment', V.U32, ALIGN],
      ['llama.vocab_size', V.U32, cfg.vocab_size],
      ['llama.context_length', V.U32, cfg.max_position_embeddings],
      ['llama.embedding_length', V.U32, cfg.hidden_size],
      ['llama.block_count', V.U32, cfg.num_hidden_layers],
      ['llama.feed_forward_length', V.U32, cfg.intermediate_size],
      ['llama.attention.head_count', V.U32, nHead],
      ['llama.attention.head_count_kv', V.U32, nKv],
      ['llama.rope.freq_base', V.F32, cfg.rope_theta ?? 10000],
      ['llama.attention.layer_norm_rms_epsilon', V.F32, cfg.rms_norm_eps],
      ['llama.rope.dimension_count', V.U32, headDim],
      ...tokenizerKvs(cfg.vocab_size),
    ];

    const h = new Bytes();
    h.push(Buffer.from('GGUF', 'ascii'));
    h.u32(3);
    h.u64(infos.length);
    h.u64(kvs.length);
    for (const [k, t, v] of kvs) writeKv(h, k, t, v);
    for (const t of infos) {
      h.str(t.name);
      h.u32(t.dims.length);
      for (const d of t.dims) h.u64(d);
      h.u32(t.type);
      h.u64(t.offset);
    }
    const pad = (ALIGN - (h.length % ALIGN)) % ALIGN;
    h.push(Buffer.alloc(pad));

    const fd = openSync(outPath, 'w');
    try {
      writeAll(fd, h.toBuffer());
      for (const t of infos) {
        let data = convert(st.readBytes(t.hf.name), t.hf.dtype, t.type);
        if (permuteQK && /attn_[qk]\.weight$/.test(t.name)) {
          const rows = t.hf.shape[0],
            rowBytes = t.hf.shape[1] * TYPE_SIZE[t.type];
          data = permuteRopeRows(data, rows, rowBytes, t.name.endsWith('attn_q.weight') ? nHead : nKv);
        }
        writeAll(fd, data);
        const tail = (ALIGN - (t.bytes % ALIGN)) % ALIGN;
        if (tail) writeAll(fd, new Uint8Array(tail));
      }
    } finally {
      closeSync(fd);
    }
    return { path: outPath, bytes: statSync(outPath).size, tensors: infos.length };
  } finally {
    st.close();
  }
}

function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      out: { type: 'string' },
      outtype: { type: 'string', default: 'auto' },
      'no-permute': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (v.help || !v.model || !v.out) {
    console.log('usage: node bench/gguf.mjs --model HF_DIR --out FILE.gguf [--outtype auto|f32|bf16]');
    process.exit(v.help ? 0 : 2);
  }
  if (!['auto', 'f32', 'bf16'].includes(v.outtype)) throw new Error(`bad --outtype ${v.outtype}`);
  const t0 = performance.now();
  const r = writeGgufFromHf(resolve(v.model), resolve(v.out), { outtype: v.outtype, permuteQK: !v['no-permute'] });
  console.log(
    `wrote ${r.path}: ${r.tensors} tensors, ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
