// A deliberately naive float64 forward pass of a Llama-family model (no cache, no batching, no
// paging), used as an independent reference for features the hf-tiny fixtures do not cover
// (sliding window, rope scaling, explicit head_dim, GQA ratios, tied embeddings, Qwen3 q/k norms, LoRA patterns).
// It is itself checked against the transformers fixtures.

export type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

export interface RefConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  rmsEps: number;
  invFreq: Float32Array;
  slidingWindow: number;
  tie: boolean;
  bias: boolean;
  /** Per-head RMSNorm of q and k (self_attn.q_norm / k_norm) before rotary. */
  qkNorm?: boolean;
  /** Round every base-weight matmul input to bfloat16 first (a bfloat16 model on AVX512-BF16). */
  bf16Inputs?: boolean;
}

const f32 = new Float32Array(1),
  u32 = new Uint32Array(f32.buffer);
/** float32 rounding, then bfloat16 round-to-nearest-even. */
function roundBf16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  u32[0] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
  return f32[0]!;
}

/** LoRA deltas: for module name (e.g. model.layers.0.self_attn.q_proj) A [r, in], B [out, r] and scaling. */
export type RefLora = Map<string, { A: Float32Array; B: Float32Array; r: number; scale: number }>;

function matvec(W: Float32Array, rows: number, cols: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let o = 0; o < rows; o++) {
    let s = 0;
    for (let i = 0; i < cols; i++) s += W[o * cols + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

/** Logits [T, vocab] for every position of the prompt. */
export function referenceLogits(t: Tensors, c: RefConfig, tokens: number[], lora?: RefLora): Float64Array[] {
  const get = (n: string): Float32Array => {
    const v = t.get(n);
    if (!v) throw new Error(`reference: missing ${n}`);
    return v.data;
  };
  const H = c.hidden,
    hd = c.headDim,
    nh = c.heads,
    nkv = c.kvHeads,
    Q = nh * hd,
    KV = nkv * hd,
    half = hd / 2;
  const baseIn = (x: Float64Array): Float64Array => (c.bf16Inputs ? x.map(roundBf16) : x);
  const proj = (name: string, x: Float64Array, rows: number, cols: number): Float64Array => {
    const y = matvec(get(`${name}.weight`), rows, cols, baseIn(x));
    if (c.bias && t.has(`${name}.bias`)) {
      const b = get(`${name}.bias`);
      for (let i = 0; i < rows; i++) y[i]! += b[i]!;
    }
    const l = lora?.get(name);
    if (l) {
      const v = matvec(l.A, l.r, cols, x);
      const d = matvec(l.B, rows, l.r, v);
      for (let i = 0; i < rows; i++) y[i]! += l.scale * d[i]!;
    }
    return y;
  };
  const headNorm = (v: Float64Array, heads: number, w: Float32Array): void => {
    for (let h = 0; h < heads; h++) v.set(rmsnorm(v.subarray(h * hd, (h + 1) * hd), w, c.rmsEps), h * hd);
  };
  const rope = (v: Float64Array, pos: number, heads: number): void => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(pos * c.invFreq[i]!);
        const cs = Math.cos(ang),
          sn = Math.sin(ang);
        const a = v[h * hd + i]!,
          b = v[h * hd + i + half]!;
        v[h * hd + i] = a * cs - b * sn;
        v[h * hd + i + half] = b * cs + a * sn;
      }
    }
  };
  const emb = get('model.embed_tokens.weight');
  let xs = tokens.map((tok) => Float64Array.from(emb.subarray(tok * H, (tok + 1) * H)));
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    const hs = xs.map((x) => rmsnorm(x, get(`${p}.input_layernorm.weight`), c.rmsEps));
    const qs = hs.map((h, pos) => {
      const q = proj(`${p}.self_attn.q_proj`, h, Q, H);
      if (c.qkNorm) headNorm(q, nh, get(`${p}.self_attn.q_norm.weight`));
      rope(q, pos, nh);
      return q;
    });
    const ks = hs.map((h, pos) => {
      const k = proj(`${p}.self_attn.k_proj`, h, KV, H);
      if (c.qkNorm) headNorm(k, nkv, get(`${p}.self_attn.k_norm.weight`));
      rope(k, pos, nkv);
      return k;
    });
    const vs = hs.map((h) => proj(`${p}.self_attn.v_proj`, h, KV, H));
    xs = xs.map((x, i) => {
      const att = new Float64Array(Q);
      for (let h = 0; h < nh; h++) {
        const kvh = Math.floor(h / (nh / nkv));
        const first = c.slidingWindow > 0 ? Math.max(0, i - c.slidingWindow + 1) : 0;
        const scores: number[] = [];
        for (let j = first; j <= i; j++) {
          let s = 0;
          for (let d = 0; d < hd; d++) s += qs[i]![h * hd + d]! * ks[j]![kvh * hd + d]!;
          scores.push(s / Math.sqrt(hd));
        }
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = first; j <= i; j++)
          for (let d = 0; d < hd; d++) att[h * hd + d]! += (e[j - first]! / sum) * vs[j]![kvh * hd + d]!;
      }
      const o = proj(`${p}.self_attn.o_proj`, att, H, Q);
      return x.map((v, k) => v + o[k]!);
    });
    xs = xs.map((x) => {
      const h = rmsnorm(x, get(`${p}.post_attention_layernorm.weight`), c.rmsEps);
      const g = proj(`${p}.mlp.gate_proj`, h, c.intermediate, H);
      const u = proj(`${p}.mlp.up_proj`, h, c.intermediate, H);
      const a = g.map((v, k) => (v / (1 + Math.exp(-v))) * u[k]!);
      const d = proj(`${p}.mlp.down_proj`, a, H, c.intermediate);
      return x.map((v, k) => v + d[k]!);
    });
  }
  const head = c.tie ? emb : get('lm_head.weight');
  return xs.map((x) => matvec(head, c.vocab, H, baseIn(rmsnorm(x, get('model.norm.weight'), c.rmsEps))));
}

export function maxAbsDiff64(a: Float32Array, rows: Float64Array[]): number {
  let m = 0,
    k = 0;
  for (const r of rows) for (const v of r) m = Math.max(m, Math.abs(a[k++]! - v));
  return m;
}
