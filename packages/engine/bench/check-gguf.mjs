#!/usr/bin/env node
// Validates gguf.mjs (tensor layout, metadata, and above all the Q/K RoPE row permutation) by
// checking that llama.cpp, running the GGUF, computes the same function as reference-forward.mjs
// running the HF safetensors. Exit code 0 = all checks passed.
//
//   node bench/check-gguf.mjs [--dir /work/main/.bench/check] [--threads N] [--skip-full]
//
// Cases (all generated fresh, deterministic):
//   mha-f32, gqa-f32  hidden 64, 2 layers, 4 heads (4 or 2 KV heads), vocab 512: teacher-forced
//                     logits must match to 1e-5 (F32 KV cache, no flash attention) and llama.cpp's greedy tokens must equal ours.
//   gqa-bf16          same weights in bfloat16; llama.cpp also rounds activations to bf16 inside
//                     its matmuls, so only a loose logit tolerance + top-1 agreement is required.
//   no-permute        negative control: the gqa-f32 GGUF written WITHOUT the Q/K permutation must
//                     NOT match; otherwise the check would be blind to the thing it guards.
//   lora-merged       reference-forward's LoRA path (adapter applied unmerged, y += alpha/r * B(Ax))
//                     against llama.cpp running base weights with the adapter merged in
//                     (W + alpha/r * B @ A): validates adapter tensor names/shapes/scale as the
//                     reference reads them, which the engine's LoRA output is later judged by.
//   full-f32          the benchmark's shape (768 hidden, 12 layers, 32000 vocab) for a few tokens.
// Q/K weights use a larger std (--qk-std) so attention is sharp: with std 0.02 the scores are ~0,
// attention is uniform and a RoPE layout error would barely change the output.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  generateModel,
  generateAdapters,
  benchPrompt,
  modelTensorSpecs,
  resolveConfig,
  LORA_TARGETS,
  loraTargetShapes,
} from './gen-model.mjs';
import { openSafetensors, writeSafetensors } from './safetensors.mjs';
import { writeGgufFromHf } from './gguf.mjs';
import { loadReferenceModel, referenceGreedy, argmax } from './reference-forward.mjs';
import { llamaLogitsAndGreedy } from './llama-cpp-runner.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: v } = parseArgs({
  options: { dir: { type: 'string' }, threads: { type: 'string' }, 'skip-full': { type: 'boolean' } },
});
const root = resolve(v.dir ?? join(here, '../../../.bench/check'));
const threads = v.threads ? Number(v.threads) : availableParallelism();
mkdirSync(root, { recursive: true });

const TINY = { hidden: 64, layers: 2, heads: 4, intermediate: 128, vocab: 512, maxPos: 256, qkStd: 0.25, seed: 7 };

const cases = [
  {
    name: 'mha-f32',
    cfg: { ...TINY, kvHeads: 4 },
    dtype: 'float32',
    prompt: 12,
    gen: 16,
    tol: 1e-5,
    exactGreedy: true,
  },
  {
    name: 'gqa-f32',
    cfg: { ...TINY, kvHeads: 2 },
    dtype: 'float32',
    prompt: 12,
    gen: 16,
    tol: 1e-5,
    exactGreedy: true,
  },
  { name: 'gqa-bf16', cfg: { ...TINY, kvHeads: 2 }, dtype: 'bfloat16', prompt: 12, gen: 16, tol: 0.02, minTop1: 0.9 },
  {
    name: 'lora-merged',
    cfg: { ...TINY, kvHeads: 2 },
    dtype: 'float32',
    prompt: 12,
    gen: 16,
    tol: 1e-5,
    exactGreedy: true,
    lora: true,
  },
  {
    name: 'no-permute',
    cfg: { ...TINY, kvHeads: 2 },
    dtype: 'float32',
    prompt: 12,
    gen: 16,
    tol: 1e-5,
    permuteQK: false,
    expectMismatch: true,
  },
];
if (!v['skip-full']) {
  cases.push({
    name: 'full-f32',
    cfg: { qkStd: 0.1, seed: 11 },
    dtype: 'float32',
    prompt: 6,
    gen: 4,
    tol: 1e-4,
    exactGreedy: true,
  });
}

/**
 * Writes `${dir}-merged`: the HF model with one PEFT adapter folded into its weights. The adapter is
 * deliberately strong (std 0.1, r 4, alpha 8) so it visibly changes the output.
 */
function mergedWithAdapter(dir, cfg) {
  const [adapter] = generateAdapters({ out: `${dir}-adapter`, count: 1, rank: 4, alpha: 8, adapterStd: 0.1, ...cfg });
  const c = resolveConfig(cfg),
    shapes = loraTargetShapes(c),
    scale = 8 / 4;
  const base = openSafetensors(join(dir, 'model.safetensors'));
  const ad = openSafetensors(join(adapter, 'adapter_model.safetensors'));
  const out = `${dir}-merged`;
  mkdirSync(out, { recursive: true });
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join(dir, f), join(out, f));
  const tensors = modelTensorSpecs(c).map(([name, shape]) => ({
    name,
    dtype: 'F32',
    shape,
    produce: () => {
      const w = Float32Array.from(base.readF32(name));
      const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
      const target = m && LORA_TARGETS.find((t) => shapes[t][0] === m[2]);
      if (!target) return w;
      const pre = `base_model.model.model.layers.${m[1]}.${m[2]}`;
      const A = ad.readF32(`${pre}.lora_A.weight`),
        B = ad.readF32(`${pre}.lora_B.weight`);
      const [, O, I] = shapes[target],
        r = A.length / I;
      for (let o = 0; o < O; o++) {
        for (let i = 0; i < I; i++) {
          let d = 0;
          for (let k = 0; k < r; k++) d += B[o * r + k] * A[k * I + i];
          w[o * I + i] += scale * d;
        }
      }
      return w;
    },
  }));
  writeSafetensors(join(out, 'model.safetensors'), tensors);
  base.close();
  ad.close();
  return { merged: out, adapter };
}

let failed = 0;
const rows = [];
for (const c of cases) {
  const t0 = performance.now();
  const dir = join(root, `${c.name}-hf`);
  generateModel({ out: dir, dtype: c.dtype, ...c.cfg });
  const gguf = join(root, `${c.name}.gguf`);
  const lora = c.lora ? mergedWithAdapter(dir, c.cfg) : null;
  writeGgufFromHf(lora ? lora.merged : dir, gguf, { permuteQK: c.permuteQK !== false });

  const vocab = c.cfg.vocab ?? 32000;
  const prompt = benchPrompt(0, c.prompt, vocab);
  const ref = referenceGreedy(loadReferenceModel(dir, { adapter: lora?.adapter }), prompt, c.gen);
  if (lora) {
    // The adapter must matter, or this case would only re-test the base model.
    const plain = referenceGreedy(loadReferenceModel(dir), prompt, 1).logits[0];
    let d = 0;
    for (let t = 0; t < vocab; t++) d = Math.max(d, Math.abs(plain[t] - ref.logits[0][t]));
    console.log(`  (adapter moves first-step logits by up to ${d.toFixed(3)})`);
    if (d < 0.05) {
      console.log('FAIL lora-merged: adapter has no visible effect');
      failed++;
    }
  }
  // Teacher forcing: feed prompt + our greedy tokens, so every position compares like with like
  // even where llama.cpp's own greedy choice might differ.
  const forced = [...prompt, ...ref.tokens.slice(0, -1)];
  const ll = await llamaLogitsAndGreedy({ model: gguf, prompt, tokens: forced, greedyTokens: c.gen, threads });

  let maxDiff = 0,
    maxAbs = 0,
    top1 = 0;
  ref.logits.forEach((r, i) => {
    const l = ll.logits[i];
    for (let t = 0; t < vocab; t++) {
      maxDiff = Math.max(maxDiff, Math.abs(r[t] - l[t]));
      maxAbs = Math.max(maxAbs, Math.abs(r[t]));
    }
    if (argmax(l) === argmax(r)) top1++;
  });
  const top1Rate = top1 / ref.logits.length;
  const greedyEqual = ll.greedy.length === ref.tokens.length && ll.greedy.every((t, i) => t === ref.tokens[i]);
  const matches = maxDiff <= c.tol && (!c.exactGreedy || greedyEqual) && top1Rate >= (c.minTop1 ?? 1);
  const ok = c.expectMismatch ? !matches && maxDiff > 100 * c.tol : matches;
  if (!ok) failed++;
  rows.push({
    case: c.name,
    ok,
    maxDiff,
    maxAbs,
    top1: `${top1}/${ref.logits.length}`,
    greedyEqual,
    s: (performance.now() - t0) / 1000,
  });
  console.log(
    `${ok ? 'PASS' : 'FAIL'} ${c.name}: max |logit diff| ${maxDiff.toExponential(2)} (tol ${c.tol}, max |logit| ${maxAbs.toFixed(3)}), ` +
      `top-1 agree ${top1}/${ref.logits.length}, greedy ${greedyEqual ? 'identical' : 'differs'}` +
      (c.expectMismatch ? ' (negative control: must mismatch)' : ''),
  );
  if (!greedyEqual && !c.expectMismatch)
    console.log(`  reference: ${ref.tokens.join(',')}\n  llama.cpp: ${ll.greedy.join(',')}`);
}
console.log(failed ? `\n${failed} check(s) FAILED` : `\nall ${cases.length} checks passed`);
process.exit(failed ? 1 : 0);
