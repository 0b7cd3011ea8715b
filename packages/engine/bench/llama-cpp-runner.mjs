#!/usr/bin/env node
// llama.cpp side of the benchmark, through node-llama-cpp's prebuilt CPU binaries
// (@node-llama-cpp/linux-x64 etc.). We never let it build or download anything: build 'never',
// skipDownload, gpu false. Run it as its own process so its peak RSS is its own.
//
//   node bench/llama-cpp-runner.mjs --model .bench/model-f32.gguf [--threads N] [--tokens 32]
//        [--prompt 16] [--prefill 512] [--batch 8] [--json]
//
// What is timed (wall clock, performance.now()):
//   decode b1: one sequence, prompt[:-1] is prefilled untimed, then the timer covers N decode steps
//              (each step feeds one token and samples one greedily: N tokens generated).
//   decode b8: 8 sequences of one context, each prefilled untimed, then N lockstep steps: every step
//              calls controlledEvaluate() on all 8 sequences in the same tick, which node-llama-cpp
//              merges into a single llama_decode of 8 tokens (it dispatches at once when every
//              sequence has queued). This is what engine.generate() does (one batch per step). We do
//              not use 8 concurrent evaluate() generators: measured here they drift into batches of
//              7 + stragglers and run ~2x slower, which would understate llama.cpp.
//              tok/s = 8N / time.
//   prefill:   one 512-token prompt evaluated in one batch (batchSize 512), no sampling.
import { resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { benchPrompt } from './gen-model.mjs';

let nlc;
/** Imported lazily so `--help` and importers that only need helpers work without the package. */
async function nodeLlamaCpp() {
  nlc ??= await import('node-llama-cpp');
  return nlc;
}

/** Loads the prebuilt CPU backend; throws (never builds or downloads) if it is missing. */
export async function loadLlama({ threads } = {}) {
  const { getLlama } = await nodeLlamaCpp();
  return getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: 'error',
    maxThreads: threads ?? availableParallelism(),
  });
}

/** Context options shared by the bench and the check; threads pinned so both engines use N. */
function ctxOptions(threads, extra) {
  return {
    threads: { ideal: threads, min: threads },
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
    ...extra,
  };
}

const GREEDY_NEXT = { generateNext: { token: true, options: { temperature: 0 } } };

/**
 * Greedy lockstep decoding: each step feeds every sequence its last token in one batch and samples
 * the next. `lastTokens[i]` is the final prompt token of sequence i (the rest already evaluated).
 */
async function lockstepGenerate(seqs, lastTokens, n) {
  const outs = seqs.map(() => []);
  let last = [...lastTokens];
  for (let step = 0; step < n; step++) {
    const res = await Promise.all(seqs.map((s, i) => s.controlledEvaluate([[last[i], GREEDY_NEXT]])));
    last = res.map((r, i) => {
      const t = r[0]?.next?.token;
      if (t == null) throw new Error(`llama.cpp sampled no token for sequence ${i}`);
      outs[i].push(t);
      return t;
    });
  }
  return outs;
}

async function prefill(seq, tokens) {
  await seq.clearHistory();
  if (tokens.length) await seq.evaluateWithoutGeneratingNewTokens(tokens);
}

/** One timed decode measurement over `seqs` (one prompt each); returns tokens/s over all sequences. */
async function timedDecode(seqs, prompts, n) {
  await Promise.all(seqs.map((s, i) => prefill(s, prompts[i].slice(0, -1))));
  const t0 = performance.now();
  const outs = await lockstepGenerate(
    seqs,
    prompts.map((p) => p.at(-1)),
    n,
  );
  const s = (performance.now() - t0) / 1000;
  const total = outs.reduce((a, o) => a + o.length, 0);
  return { tokPerS: total / s, seconds: s, tokens: total, outputs: outs };
}

/**
 * Runs the llama.cpp measurements on one GGUF. `repeat` timed runs each after a warm-up; the best
 * run is reported (least disturbed by the 2-core VM's noise).
 */
export async function runLlamaBench({
  model: modelPath,
  threads = availableParallelism(),
  tokens = 32,
  promptLen = 16,
  prefillLen = 512,
  batch = 8,
  repeat = 2,
  log = () => {},
}) {
  const llama = await loadLlama({ threads });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const vocab = model.fileInfo.metadata.llama?.vocab_size ?? model.tokens.tokenizer?.length ?? 32000;
  const best = (runs) => runs.reduce((a, b) => (b.tokPerS > a.tokPerS ? b : a));
  const result = {
    engine: 'llama.cpp',
    model: modelPath,
    threads,
    tokens,
    promptLen,
    prefillLen,
    batch,
    llamaCpp: llama.llamaCppRelease,
  };
  try {
    // Batch 1 decode and prefill share a single-sequence context.
    const ctx1 = await model.createContext(
      ctxOptions(threads, {
        sequences: 1,
        contextSize: Math.max(prefillLen, promptLen + tokens) + 64,
        batchSize: Math.max(512, prefillLen),
      }),
    );
    const seq = ctx1.getSequence();
    const p1 = [benchPrompt(0, promptLen, vocab)];
    await timedDecode([seq], p1, Math.min(8, tokens)); // warm-up: page in weights, build graphs
    const d1 = [];
    for (let r = 0; r < repeat; r++) d1.push(await timedDecode([seq], p1, tokens));
    result.decode1 = best(d1).tokPerS;
    result.decode1Tokens = best(d1).outputs[0];
    log(`llama.cpp decode b1: ${result.decode1.toFixed(1)} tok/s`);

    const pp = benchPrompt(100, prefillLen, vocab);
    const pre = [];
    for (let r = 0; r <= repeat; r++) {
      // r = 0 is the warm-up
      await seq.clearHistory();
      const t0 = performance.now();
      await seq.evaluateWithoutGeneratingNewTokens(pp);
      const s = (performance.now() - t0) / 1000;
      if (r > 0) pre.push({ tokPerS: prefillLen / s });
    }
    result.prefill = best(pre).tokPerS;
    log(`llama.cpp prefill ${prefillLen}: ${result.prefill.toFixed(1)} tok/s`);
    await ctx1.dispose();

    if (batch > 1) {
      const ctxB = await model.createContext(
        ctxOptions(threads, { sequences: batch, contextSize: promptLen + tokens + 64, batchSize: 512 }),
      );
      const seqs = Array.from({ length: batch }, () => ctxB.getSequence());
      const pb = seqs.map((_, i) => benchPrompt(i + 1, promptLen, vocab));
      await timedDecode(seqs, pb, Math.min(4, tokens));
      const db = [];
      for (let r = 0; r < repeat; r++) db.push(await timedDecode(seqs, pb, tokens));
      result.decodeBatch = best(db).tokPerS;
      log(`llama.cpp decode b${batch}: ${result.decodeBatch.toFixed(1)} tok/s`);
      await ctxB.dispose();
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  result.peakRssMiB = process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB on Linux
  return result;
}

/**
 * For check-gguf.mjs: teacher-forced logits for every position >= prompt.length - 1 of `tokens`,
 * and llama.cpp's own greedy continuation of `prompt`. exact=true uses an F32 KV cache and no flash
 * attention (which keeps working in F16 even with an F32 cache): then llama.cpp agrees with the
 * float64 reference to ~1e-7 on the tiny model, so any layout error stands out. With the defaults
 * (F16 cache, flash attention) logits differ by ~1e-3 relative.
 */
export async function llamaLogitsAndGreedy({
  model: modelPath,
  prompt,
  tokens,
  greedyTokens,
  threads = availableParallelism(),
  exact = true,
}) {
  const llama = await loadLlama({ threads });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  try {
    const vocab = model.fileInfo.metadata.llama.vocab_size;
    const cache = exact
      ? { flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' }
      : {};
    const ctx = await model.createContext(
      ctxOptions(threads, { sequences: 1, contextSize: tokens.length + greedyTokens + 64, batchSize: 512, ...cache }),
    );
    const seq = ctx.getSequence();
    const input = tokens.map((t, i) => (i >= prompt.length - 1 ? [t, { generateNext: { logits: true } }] : t));
    const res = await seq.controlledEvaluate(input);
    const logits = [];
    for (let i = prompt.length - 1; i < tokens.length; i++) {
      const arr = new Float32Array(vocab);
      for (const [tok, l] of res[i].next.logits) arr[tok] = l;
      logits.push(arr);
    }
    await prefill(seq, prompt.slice(0, -1));
    const [greedy] = await lockstepGenerate([seq], [prompt.at(-1)], greedyTokens);
    await ctx.dispose();
    return { logits, greedy };
  } finally {
    await model.dispose();
    await llama.dispose();
  }
}

function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      threads: { type: 'string' },
      tokens: { type: 'string', default: '32' },
      prompt: { type: 'string', default: '16' },
      prefill: { type: 'string', default: '512' },
      batch: { type: 'string', default: '8' },
      repeat: { type: 'string', default: '2' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (v.help || !v.model) {
    console.log(
      'usage: node bench/llama-cpp-runner.mjs --model FILE.gguf [--threads N] [--tokens 32] [--prompt 16] [--prefill 512] [--batch 8] [--repeat 2] [--json]',
    );
    process.exit(v.help ? 0 : 2);
  }
  const log = v.json ? (m) => console.error(m) : (m) => console.log(m);
  runLlamaBench({
    model: resolve(v.model),
    threads: v.threads ? Number(v.threads) : availableParallelism(),
    tokens: Number(v.tokens),
    promptLen: Number(v.prompt),
    prefillLen: Number(v.prefill),
    batch: Number(v.batch),
    repeat: Number(v.repeat),
    log,
  }).then(
    (r) => {
      if (v.json) console.log('BENCH_RESULT ' + JSON.stringify(r));
      else console.log(`peak RSS ${r.peakRssMiB.toFixed(0)} MiB`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
