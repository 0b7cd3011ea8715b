#!/usr/bin/env node
// A deliberately naive pure-JS forward pass of a HF LlamaForCausalLM directory (float32 weights,
// float64 accumulation), written straight from the HF modeling code: RMSNorm, rotate-half RoPE,
// causal GQA attention, SwiGLU MLP, untied lm_head, optional PEFT LoRA (y += alpha/r * B(Ax)).
// It is the ground truth that check-gguf.mjs compares llama.cpp against, and can serve the
// engine's own correctness checks. Slow (one matvec per weight per token): use small configs.
//
//   node bench/reference-forward.mjs --model DIR --prompt 400,401,402 --tokens 8 [--adapter DIR]
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSafetensors } from './safetensors.mjs';

const LORA_MODULES = {
  q_proj: 'self_attn.q_proj',
  k_proj: 'self_attn.k_proj',
  v_proj: 'self_attn.v_proj',
  o_proj: 'self_attn.o_proj',
  gate_proj: 'mlp.gate_proj',
  up_proj: 'mlp.up_proj',
  down_proj: 'mlp.down_proj',
};

/** Loads all weights as Float32Array (bf16 widened exactly) plus an optional PEFT adapter. */
export function loadReferenceModel(dir, { adapter } = {}) {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const st = openSafetensors(join(dir, 'model.safetensors'));
  const w = (n) => st.readF32(n);
  const L = [];
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    L.push({
      inNorm: w(p + 'input_layernorm.weight'),
      postNorm: w(p + 'post_attention_layernorm.weight'),
      q_proj: w(p + 'self_attn.q_proj.weight'),
      k_proj: w(p + 'self_attn.k_proj.weight'),
      v_proj: w(p + 'self_attn.v_proj.weight'),
      o_proj: w(p + 'self_attn.o_proj.weight'),
      gate_proj: w(p + 'mlp.gate_proj.weight'),
      up_proj: w(p + 'mlp.up_proj.weight'),
      down_proj: w(p + 'mlp.down_proj.weight'),
      lora: {},
    });
  }
  const model = {
    cfg,
    embed: w('model.embed_tokens.weight'),
    norm: w('model.norm.weight'),
    lmHead: w('lm_head.weight'),
    layers: L,
  };
  st.close();
  if (adapter) {
    const acfg = JSON.parse(readFileSync(join(adapter, 'adapter_config.json'), 'utf8'));
    const scale = (acfg.lora_alpha ?? acfg.r) / (acfg.use_rslora ? Math.sqrt(acfg.r) : acfg.r);
    const ast = openSafetensors(join(adapter, 'adapter_model.safetensors'));
    for (let i = 0; i < L.length; i++) {
      for (const [key, mod] of Object.entries(LORA_MODULES)) {
        const base = `base_model.model.model.layers.${i}.${mod}`;
        if (!ast.tensors.has(`${base}.lora_A.weight`)) continue;
        L[i].lora[key] = {
          A: ast.readF32(`${base}.lora_A.weight`),
          B: ast.readF32(`${base}.lora_B.weight`),
          r: acfg.r,
          scale,
        };
      }
    }
    ast.close();
  }
  return model;
}

/** y = W x for W [out, in] row-major. */
function matvec(W, x, out) {
  const n = x.length,
    y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    const base = o * n;
    for (let i = 0; i < n; i++) s += W[base + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** Base projection plus LoRA delta when the layer has one for this module. */
function proj(layer, key, x, out) {
  const y = matvec(layer[key], x, out);
  const l = layer.lora[key];
  if (l) {
    const ax = matvec(l.A, x, l.r);
    const bax = matvec(l.B, ax, out);
    for (let o = 0; o < out; o++) y[o] += l.scale * bax[o];
  }
  return y;
}

function rmsnorm(x, w, eps) {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * inv * w[i];
  return y;
}

/** HF rotate-half RoPE on each head of `v` (in place): pairs (i, i + d/2) share frequency i. */
function rope(v, nHeads, hd, pos, theta) {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const ang = pos / Math.pow(theta, (2 * i) / hd);
    const c = Math.cos(ang),
      s = Math.sin(ang);
    for (let h = 0; h < nHeads; h++) {
      const a = h * hd + i,
        b = a + half;
      const x0 = v[a],
        x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x1 * c + x0 * s;
    }
  }
}

/** An incremental decoding session with a KV cache: step(token) returns the next-token logits. */
export function createSession(model) {
  const c = model.cfg;
  const H = c.hidden_size,
    nH = c.num_attention_heads,
    nKv = c.num_key_value_heads ?? nH;
  const hd = c.head_dim ?? H / nH,
    I = c.intermediate_size,
    V = c.vocab_size,
    eps = c.rms_norm_eps;
  const theta = c.rope_theta ?? 10000,
    group = nH / nKv;
  const kCache = model.layers.map(() => []),
    vCache = model.layers.map(() => []);
  let pos = 0;
  return {
    get position() {
      return pos;
    },
    step(token) {
      let x = Float64Array.from(model.embed.subarray(token * H, (token + 1) * H));
      model.layers.forEach((layer, li) => {
        const h = rmsnorm(x, layer.inNorm, eps);
        const q = proj(layer, 'q_proj', h, nH * hd);
        const k = proj(layer, 'k_proj', h, nKv * hd);
        const v = proj(layer, 'v_proj', h, nKv * hd);
        rope(q, nH, hd, pos, theta);
        rope(k, nKv, hd, pos, theta);
        kCache[li].push(k);
        vCache[li].push(v);
        const T = kCache[li].length,
          attn = new Float64Array(nH * hd),
          scale = 1 / Math.sqrt(hd);
        for (let head = 0; head < nH; head++) {
          const kvh = Math.floor(head / group),
            sc = new Float64Array(T);
          let max = -Infinity;
          for (let t = 0; t < T; t++) {
            let s = 0;
            for (let d = 0; d < hd; d++) s += q[head * hd + d] * kCache[li][t][kvh * hd + d];
            sc[t] = s * scale;
            if (sc[t] > max) max = sc[t];
          }
          let sum = 0;
          for (let t = 0; t < T; t++) {
            sc[t] = Math.exp(sc[t] - max);
            sum += sc[t];
          }
          for (let t = 0; t < T; t++) {
            const p = sc[t] / sum,
              vt = vCache[li][t];
            for (let d = 0; d < hd; d++) attn[head * hd + d] += p * vt[kvh * hd + d];
          }
        }
        const o = proj(layer, 'o_proj', attn, H);
        for (let i = 0; i < H; i++) x[i] += o[i];
        const h2 = rmsnorm(x, layer.postNorm, eps);
        const g = proj(layer, 'gate_proj', h2, I),
          u = proj(layer, 'up_proj', h2, I);
        for (let i = 0; i < I; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
        const d = proj(layer, 'down_proj', g, H);
        for (let i = 0; i < H; i++) x[i] += d[i];
      });
      pos++;
      return matvec(model.lmHead, rmsnorm(x, model.norm, eps), V);
    },
  };
}

export function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/**
 * Greedy decoding (no EOS stop, like ignoreEos). Returns the generated tokens and, for every
 * position, the logits that predicted the next token: logits[0] follows the prompt's last token.
 */
export function referenceGreedy(model, prompt, maxTokens) {
  const s = createSession(model);
  let logits;
  const promptLogits = [];
  for (const t of prompt) {
    logits = s.step(t);
    promptLogits.push(logits);
  }
  const tokens = [],
    stepLogits = [logits];
  for (let i = 0; i < maxTokens; i++) {
    const next = argmax(logits);
    tokens.push(next);
    if (i + 1 < maxTokens) {
      logits = s.step(next);
      stepLogits.push(logits);
    }
  }
  return { tokens, logits: stepLogits, promptLogits };
}

function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      prompt: { type: 'string', default: '400,401,402,403' },
      tokens: { type: 'string', default: '8' },
      adapter: { type: 'string' },
    },
  });
  if (!v.model) {
    console.log('usage: node bench/reference-forward.mjs --model HF_DIR [--prompt ids] [--tokens N] [--adapter DIR]');
    process.exit(2);
  }
  const model = loadReferenceModel(resolve(v.model), { adapter: v.adapter && resolve(v.adapter) });
  const prompt = v.prompt.split(',').map(Number);
  const t0 = performance.now();
  const r = referenceGreedy(model, prompt, Number(v.tokens));
  console.log(
    JSON.stringify({
      prompt,
      tokens: r.tokens,
      firstLogitsTop: r.logits[0][r.tokens[0]],
      ms: Math.round(performance.now() - t0),
    }),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
