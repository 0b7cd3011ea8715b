#!/usr/bin/env node
// loraplex side of the benchmark, run as its own process (like llama-cpp-runner.mjs) so the peak
// RSS it reports is the engine's alone. Exits with code 3 if the engine is not built.
//
//   node bench/loraplex-runner.mjs --model DIR --adapters DIR/a0,DIR/a1,... [--threads N]
//        [--tokens 32] [--prompt 16] [--prefill 512] [--repeat 2] [--json]
//
// engine.generate() has no per-phase timing, so phases are separated by difference: the same
// requests are timed with maxTokens 1 (prefill + one sample) and with maxTokens 1 + N; the
// difference is N decode steps. Both are best-of-`repeat` after a warm-up.
//   decode tok/s = batch * N / (T(1 + N) - T(1))
//   prefill tok/s = prefillLen / T(1) for one 512-token prompt.
// Prompts are benchPrompt(...) ids, identical to the llama.cpp runner's.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchPrompt } from './gen-model.mjs';

// LORAPLEX_BENCH_ENGINE points the harness at another build (or a stub, to test the harness itself).
export const ENGINE_ENTRY = process.env.LORAPLEX_BENCH_ENGINE
  ? resolve(process.env.LORAPLEX_BENCH_ENGINE)
  : fileURLToPath(new URL('../dist/index.js', import.meta.url));
export const NOT_BUILT = 3;

export async function runLoraplexBench({
  model,
  adapters = [],
  threads = availableParallelism(),
  tokens = 32,
  promptLen = 16,
  prefillLen = 512,
  batch = 8,
  repeat = 2,
  rank = 16,
  log = () => {},
}) {
  const { Engine } = await import(pathToFileURL(ENGINE_ENTRY).href);
  const vocab = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')).vocab_size;
  const engine = await Engine.load(model, {
    backend: 'cpu',
    maxAdapters: Math.max(batch, adapters.length),
    maxLoraRank: rank,
    threads,
  });
  const result = { engine: 'loraplex', model, threads, tokens, promptLen, prefillLen, batch };
  try {
    const ids = [];
    for (let i = 0; i < adapters.length; i++) {
      await engine.loadAdapter(`a${i}`, adapters[i]);
      ids.push(`a${i}`);
    }
    const req = (prompt, adapter, maxTokens) => ({
      prompt,
      ...(adapter ? { adapter } : {}),
      sampling: { maxTokens, temperature: 0, ignoreEos: true },
    });
    /** Best-of-`repeat` wall time of one generate() call; checks every request produced maxTokens. */
    const timeGen = async (prompts, adapterIds, maxTokens) => {
      let best = Infinity,
        out;
      for (let r = 0; r < repeat; r++) {
        const reqs = prompts.map((p, i) => req(p, adapterIds?.[i], maxTokens));
        const t0 = performance.now();
        out = await engine.generate(reqs);
        best = Math.min(best, (performance.now() - t0) / 1000);
        out.forEach((o, i) => {
          if (o.tokens.length !== maxTokens)
            throw new Error(`request ${i}: got ${o.tokens.length} tokens, asked for ${maxTokens} with ignoreEos`);
        });
      }
      return { s: best, out };
    };
    /** Decode tok/s for one request set, by the maxTokens 1 vs 1 + N difference. */
    const decode = async (prompts, adapterIds) => {
      await engine.generate(prompts.map((p, i) => req(p, adapterIds?.[i], Math.min(4, tokens)))); // warm-up
      const one = await timeGen(prompts, adapterIds, 1);
      const many = await timeGen(prompts, adapterIds, 1 + tokens);
      const dt = many.s - one.s;
      if (!(dt > 0)) throw new Error(`decode time difference ${dt}s is not positive; increase --tokens`);
      return { tokPerS: (prompts.length * tokens) / dt, out: many.out };
    };

    const p1 = [benchPrompt(0, promptLen, vocab)];
    const d1 = await decode(p1);
    result.decode1 = d1.tokPerS;
    // tokens[1..] are the N decode steps, same positions as the llama.cpp runner's decode1Tokens.
    result.decode1Tokens = d1.out[0].tokens.slice(0, tokens);
    log(`loraplex decode b1: ${result.decode1.toFixed(1)} tok/s`);

    const pp = [benchPrompt(100, prefillLen, vocab)];
    await engine.generate([req(pp[0], undefined, 1)]); // warm-up (buffers sized for 512 tokens)
    result.prefill = prefillLen / (await timeGen(pp, undefined, 1)).s;
    log(`loraplex prefill ${prefillLen}: ${result.prefill.toFixed(1)} tok/s`);

    if (batch > 1) {
      const pb = Array.from({ length: batch }, (_, i) => benchPrompt(i + 1, promptLen, vocab));
      result.decodeBatch = (await decode(pb)).tokPerS;
      log(`loraplex decode b${batch} base: ${result.decodeBatch.toFixed(1)} tok/s`);
      if (ids.length >= batch) {
        result.decodeBatchLora = (await decode(pb, ids.slice(0, batch))).tokPerS;
        result.loraRatio = result.decodeBatchLora / result.decodeBatch;
        log(
          `loraplex decode b${batch} with ${batch} adapters: ${result.decodeBatchLora.toFixed(1)} tok/s (ratio ${result.loraRatio.toFixed(3)})`,
        );
      }
    }
  } finally {
    await engine.close();
  }
  result.peakRssMiB = process.resourceUsage().maxRSS / 1024; // KiB on Linux
  return result;
}

function main() {
  const { values: v } = parseArgs({
    options: {
      model: { type: 'string' },
      adapters: { type: 'string', default: '' },
      threads: { type: 'string' },
      tokens: { type: 'string', default: '32' },
      prompt: { type: 'string', default: '16' },
      prefill: { type: 'string', default: '512' },
      batch: { type: 'string', default: '8' },
      repeat: { type: 'string', default: '2' },
      rank: { type: 'string', default: '16' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (v.help || !v.model) {
    console.log(
      'usage: node bench/loraplex-runner.mjs --model HF_DIR [--adapters d0,d1,...] [--threads N] [--tokens 32] [--prompt 16] [--prefill 512] [--batch 8] [--repeat 2] [--json]',
    );
    process.exit(v.help ? 0 : 2);
  }
  if (!existsSync(ENGINE_ENTRY)) {
    console.error(`loraplex: ${ENGINE_ENTRY} not found; build the engine first (pnpm --filter @loraplex/engine build)`);
    process.exit(NOT_BUILT);
  }
  const log = v.json ? (m) => console.error(m) : (m) => console.log(m);
  runLoraplexBench({
    model: resolve(v.model),
    adapters: v.adapters ? v.adapters.split(',').map((d) => resolve(d)) : [],
    threads: v.threads ? Number(v.threads) : availableParallelism(),
    tokens: Number(v.tokens),
    promptLen: Number(v.prompt),
    prefillLen: Number(v.prefill),
    batch: Number(v.batch),
    repeat: Number(v.repeat),
    rank: Number(v.rank),
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
