#!/usr/bin/env node
// Sampled vs greedy decoding on a generated model with Llama 3's 128,256-token vocabulary: decode
// tokens/s with temperature 0 and with temperature 1 + top_p 0.9 (seeded), at batch 1 and 8, both
// measured in the same run, alternating, best of --repeat (ratios are what count on a shared box).
//
//   node bench/sampling-bench.mjs [--threads N] [--tokens 48] [--repeat 3] [--vocab 128256]
//        [--hidden 256] [--layers 4] [--top-p 0.9] [--top-k 0] [--min-p 0] [--cache DIR]
//
// Decode tok/s comes from the maxTokens 1 vs 1 + N difference, like loraplex-runner.mjs.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateModel, resolveConfig, benchPrompt, GENERATOR_VERSION } from './gen-model.mjs';
import { ENGINE_ENTRY } from './loraplex-runner.mjs';
import { machine } from '../../../scripts/bench-machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: v } = parseArgs({
  options: {
    threads: { type: 'string' },
    tokens: { type: 'string', default: '48' },
    repeat: { type: 'string', default: '3' },
    vocab: { type: 'string', default: '128256' },
    hidden: { type: 'string', default: '256' },
    layers: { type: 'string', default: '4' },
    'top-p': { type: 'string', default: '0.9' },
    'top-k': { type: 'string', default: '0' },
    'min-p': { type: 'string', default: '0' },
    cache: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (v.help) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 9)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
  process.exit(0);
}
const threads = v.threads ? Number(v.threads) : availableParallelism();
const tokens = Number(v.tokens),
  repeat = Number(v.repeat);
const hidden = Number(v.hidden);
const config = resolveConfig({
  vocab: Number(v.vocab),
  hidden,
  layers: Number(v.layers),
  heads: hidden / 64,
  kvHeads: hidden / 64,
  intermediate: Math.round((hidden * 8) / 3 / 16) * 16,
});
const cache = resolve(v.cache ?? join(here, '../../../.bench'));
const dir = join(cache, `sampling-v${config.vocab}-h${config.hidden}-l${config.layers}`);
const stamp = JSON.stringify({ generator: GENERATOR_VERSION, config });
if (!existsSync(`${dir}.stamp.json`) || readFileSync(`${dir}.stamp.json`, 'utf8') !== stamp) {
  mkdirSync(cache, { recursive: true });
  console.error(`generating ${dir}`);
  generateModel({ out: dir, dtype: 'float32', ...config });
  writeFileSync(`${dir}.stamp.json`, stamp);
}

const { Engine } = await import(pathToFileURL(ENGINE_ENTRY).href);
const engine = await Engine.load(dir, { backend: 'cpu', maxAdapters: 1, maxLoraRank: 8, threads });
const sampled = { temperature: 1, topP: Number(v['top-p']), topK: Number(v['top-k']), minP: Number(v['min-p']) };
const modes = { greedy: { temperature: 0 }, sampled };

/** Wall and process CPU seconds of one generate() of `batch` prompts with `maxTokens` each. */
async function timeGen(batch, sampling, maxTokens) {
  const reqs = Array.from({ length: batch }, (_, i) => ({
    prompt: benchPrompt(i + 1, 16, config.vocab),
    sampling: { ...sampling, seed: 1000 + i, maxTokens, ignoreEos: true },
  }));
  const c0 = process.cpuUsage(),
    t0 = performance.now();
  const out = await engine.generate(reqs);
  const s = (performance.now() - t0) / 1000,
    c = process.cpuUsage(c0);
  for (const o of out)
    if (o.tokens.length !== maxTokens) throw new Error(`got ${o.tokens.length} tokens, asked for ${maxTokens}`);
  return { s, cpu: (c.user + c.system) / 1e6 };
}

const rows = [];
try {
  for (const batch of [1, 8]) {
    const inf = () => ({ one: Infinity, many: Infinity, cpuOne: Infinity, cpuMany: Infinity });
    const best = { greedy: inf(), sampled: inf() };
    for (const [name, s] of Object.entries(modes)) await timeGen(batch, s, 4); // warm-up
    for (let r = 0; r < repeat; r++)
      for (const [name, s] of Object.entries(modes)) {
        const one = await timeGen(batch, s, 1),
          many = await timeGen(batch, s, 1 + tokens),
          b = best[name];
        b.one = Math.min(b.one, one.s);
        b.many = Math.min(b.many, many.s);
        b.cpuOne = Math.min(b.cpuOne, one.cpu);
        b.cpuMany = Math.min(b.cpuMany, many.cpu);
      }
    const tps = (name) => (batch * tokens) / (best[name].many - best[name].one);
    // CPU seconds per decoded token: steadier than wall time on a shared machine.
    const cpuPerTok = (name) => (best[name].cpuMany - best[name].cpuOne) / (batch * tokens);
    const g = tps('greedy'),
      smp = tps('sampled');
    const row = {
      batch,
      greedy: g,
      sampled: smp,
      ratio: g / smp,
      cpuMsPerTokGreedy: cpuPerTok('greedy') * 1e3,
      cpuMsPerTokSampled: cpuPerTok('sampled') * 1e3,
    };
    row.cpuRatio = row.cpuMsPerTokSampled / row.cpuMsPerTokGreedy;
    rows.push(row);
    console.error(
      `batch ${batch}: greedy ${g.toFixed(1)} tok/s, sampled ${smp.toFixed(1)} tok/s, wall ratio ${row.ratio.toFixed(3)}; ` +
        `CPU ms/token greedy ${row.cpuMsPerTokGreedy.toFixed(2)}, sampled ${row.cpuMsPerTokSampled.toFixed(2)}, ratio ${row.cpuRatio.toFixed(3)}`,
    );
  }
} finally {
  await engine.close();
}
console.log(
  JSON.stringify(
    { machine: machine(), date: new Date().toISOString().slice(0, 10), threads, tokens, repeat, config, sampled, rows },
    null,
    2,
  ),
);
