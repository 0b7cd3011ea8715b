#!/usr/bin/env node
// Benchmark driver: loraplex vs llama.cpp (node-llama-cpp, prebuilt CPU build) on the same random
// Llama model (134M params) in float32 and bfloat16, same thread count, same prompts.
//
//   pnpm --filter @loraplex/engine bench [--threads N --tokens 32 --write]   (or: pnpm bench -- --write)
//   node bench/engine-bench.mjs [--threads N] [--tokens 32] [--prompt 16] [--prefill 512]
//        [--repeat 2] [--dtypes float32,bfloat16] [--cache DIR] [--write [--doc FILE]]
//        [--skip-llama] [--skip-loraplex] [--regen]
//
// Models, adapters and GGUFs are generated once into the git-ignored cache (default
// <repo>/.bench/) and reused while their stamp (generator version + config) matches. Each engine
// is measured in its own child process, one after the other (never concurrently), so peak RSS is
// per engine and one engine's crash does not lose the other's numbers.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generateModel, generateAdapters, resolveConfig, countParams, GENERATOR_VERSION } from './gen-model.mjs';
import { writeGgufFromHf } from './gguf.mjs';
import { ENGINE_ENTRY, NOT_BUILT } from './loraplex-runner.mjs';
import { machine } from '../../../scripts/bench-machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../..');
const N_ADAPTERS = 8,
  RANK = 16,
  ALPHA = 32;

// `pnpm ... bench -- --write` forwards the `--` separator itself; drop it.
const argv = process.argv.slice(2);
if (argv[0] === '--') argv.shift();
const { values: v } = parseArgs({
  args: argv,
  options: {
    threads: { type: 'string' },
    tokens: { type: 'string', default: '32' },
    prompt: { type: 'string', default: '16' },
    prefill: { type: 'string', default: '512' },
    repeat: { type: 'string', default: '2' },
    dtypes: { type: 'string', default: 'float32,bfloat16' },
    cache: { type: 'string' },
    write: { type: 'boolean' },
    doc: { type: 'string' },
    'skip-llama': { type: 'boolean' },
    'skip-loraplex': { type: 'boolean' },
    regen: { type: 'boolean' },
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
const opt = {
  threads: v.threads ? Number(v.threads) : availableParallelism(),
  tokens: Number(v.tokens),
  promptLen: Number(v.prompt),
  prefillLen: Number(v.prefill),
  repeat: Number(v.repeat),
};
const dtypes = v.dtypes.split(',').map((d) => d.trim());
const cache = resolve(v.cache ?? join(repoRoot, '.bench'));
const config = resolveConfig({});
const log = (m) => console.error(m);

// ---- inputs ---------------------------------------------------------------------------------

/** Runs `make` unless `${path}.stamp.json` records the same key (or --regen). */
function cached(path, key, make) {
  const stampFile = `${path}.stamp.json`;
  const want = JSON.stringify(key);
  if (!v.regen && existsSync(path) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === want) return false;
  make();
  writeFileSync(stampFile, want);
  return true;
}

function prepare() {
  mkdirSync(cache, { recursive: true });
  const base = { generator: GENERATOR_VERSION, config };
  const out = { adapters: [], models: {} };
  const adapterRoot = join(cache, `adapters-r${RANK}`);
  const t0 = performance.now();
  cached(adapterRoot, { ...base, n: N_ADAPTERS, rank: RANK, alpha: ALPHA }, () => {
    log(`generating ${N_ADAPTERS} rank-${RANK} adapters in ${adapterRoot}`);
    generateAdapters({
      out: adapterRoot,
      count: N_ADAPTERS,
      rank: RANK,
      alpha: ALPHA,
      baseModel: 'loraplex-bench-llama',
    });
  });
  out.adapters = Array.from({ length: N_ADAPTERS }, (_, i) => join(adapterRoot, `a${i}`));
  for (const dtype of dtypes) {
    const dir = join(cache, `llama-134m-${dtype}`);
    const gguf = `${dir}.gguf`;
    const regenerated = cached(dir, { ...base, dtype }, () => {
      log(`generating ${dtype} model in ${dir}`);
      generateModel({ out: dir, dtype });
    });
    if (regenerated && existsSync(`${gguf}.stamp.json`)) writeFileSync(`${gguf}.stamp.json`, ''); // force GGUF rewrite
    cached(gguf, { ...base, dtype, gguf: 1 }, () => {
      log(`writing ${gguf}`);
      writeGgufFromHf(dir, gguf, { name: `loraplex-bench-llama-${dtype}` });
    });
    out.models[dtype] = { dir, gguf };
  }
  log(`inputs ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (cache ${cache})`);
  return out;
}

// ---- children -------------------------------------------------------------------------------

/** Spawns a runner, streams its stderr (progress), and returns its BENCH_RESULT or an error. */
function runChild(script, args) {
  return new Promise((res) => {
    const child = spawn(process.execPath, [join(here, script), ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
      process.stderr.write(`  ${d}`.replace(/\n(?=.)/g, '\n  '));
    });
    child.on('close', (code, signal) => {
      const line = stdout.split('\n').find((l) => l.startsWith('BENCH_RESULT '));
      if (code === 0 && line) res({ ok: true, ...JSON.parse(line.slice('BENCH_RESULT '.length)) });
      else
        res({
          ok: false,
          code,
          error: `${script} exited with ${signal ?? code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
        });
    });
  });
}

const common = () => [
  '--threads',
  String(opt.threads),
  '--tokens',
  String(opt.tokens),
  '--prompt',
  String(opt.promptLen),
  '--prefill',
  String(opt.prefillLen),
  '--repeat',
  String(opt.repeat),
  '--batch',
  '8',
];

// ---- report ---------------------------------------------------------------------------------

const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '—');
const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? `${(a / b).toFixed(2)}x` : '—');

/** Common greedy prefix length of the two engines' batch-1 outputs (same prompt, same weights). */
function agreement(a, b) {
  if (!a?.decode1Tokens || !b?.decode1Tokens) return '—';
  let n = 0;
  while (n < a.decode1Tokens.length && a.decode1Tokens[n] === b.decode1Tokens[n]) n++;
  return `${n}/${Math.min(a.decode1Tokens.length, b.decode1Tokens.length)}`;
}

function table(results) {
  const rows = [
    '| dtype | engine | decode b1 tok/s | decode b8 tok/s | decode b8 + 8 LoRA tok/s | LoRA/base b8 (goal ≥ 0.9) | prefill 512 tok/s | peak RSS MiB |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const dtype of dtypes) {
    const { loraplex: lp, llama: lc } = results[dtype];
    const cell = (r, fn) => (r?.ok ? fn(r) : r ? 'error' : 'skipped');
    rows.push(
      `| ${dtype} | loraplex | ${cell(lp, (r) => f(r.decode1))} | ${cell(lp, (r) => f(r.decodeBatch))} | ${cell(lp, (r) => f(r.decodeBatchLora))} | ${cell(lp, (r) => f(r.loraRatio, 3))} | ${cell(lp, (r) => f(r.prefill))} | ${cell(lp, (r) => f(r.peakRssMiB, 0))} |`,
    );
    rows.push(
      `| ${dtype} | llama.cpp | ${cell(lc, (r) => f(r.decode1))} | ${cell(lc, (r) => f(r.decodeBatch))} | — | — | ${cell(lc, (r) => f(r.prefill))} | ${cell(lc, (r) => f(r.peakRssMiB, 0))} |`,
    );
    if (lp?.ok && lc?.ok) {
      rows.push(
        `| ${dtype} | loraplex / llama.cpp | ${ratio(lp.decode1, lc.decode1)} | ${ratio(lp.decodeBatch, lc.decodeBatch)} | ${ratio(lp.decodeBatchLora, lc.decodeBatch)} | — | ${ratio(lp.prefill, lc.prefill)} | ${ratio(lp.peakRssMiB, lc.peakRssMiB)} |`,
      );
    }
  }
  return rows.join('\n');
}

function notes(results) {
  const out = [];
  for (const dtype of dtypes) {
    const { loraplex: lp, llama: lc } = results[dtype];
    for (const [name, r] of [
      ['loraplex', lp],
      ['llama.cpp', lc],
    ])
      if (r && !r.ok) out.push(`- ${dtype} ${name}: ${r.error}`);
    // Random weights give flat logits (top-2 gaps down to ~1e-4), and llama.cpp's default F16 KV
    // cache + flash attention flips such near-ties, so a divergence here is not by itself a bug;
    // check-gguf.mjs is the exact comparison.
    if (lp?.ok && lc?.ok)
      out.push(
        `- ${dtype}: batch-1 greedy tokens of the two engines agree for the first ${agreement(lp, lc)} steps (same weights and prompt; random-weight logits are nearly flat and llama.cpp runs with its default F16 KV cache, so near-ties may flip).`,
      );
  }
  return out;
}

function writeDoc(docPath, markdown, results) {
  const date = new Date().toISOString().slice(0, 10);
  const m = machine();
  const key = `${date} ${m}`.replace(/[^A-Za-z0-9.-]+/g, '-');
  const lc = Object.values(results)
    .map((r) => r.llama)
    .find((r) => r?.ok);
  const cmd = `node ${relative(repoRoot, fileURLToPath(import.meta.url))} ${argv.join(' ')}`.trim();
  const section = [
    `<!-- bench:${key} -->`,
    `## ${date} — ${m}`,
    '',
    `- Command: \`${cmd}\` (from the repository root; \`pnpm --filter @loraplex/engine bench\` runs the same script)`,
    `- Machine: ${m}; ${opt.threads} threads for both engines; Node ${process.version}`,
    `- llama.cpp: node-llama-cpp ${nlcVersion()} prebuilt CPU binaries${lc?.llamaCpp ? ` (llama.cpp ${lc.llamaCpp.release ?? JSON.stringify(lc.llamaCpp)})` : ''}`,
    `- Model: random Llama, ${(countParams(config) / 1e6).toFixed(1)}M params (hidden ${config.hidden}, ${config.layers} layers, ${config.heads}/${config.kvHeads} heads, ffn ${config.intermediate}, vocab ${config.vocab}); ${N_ADAPTERS} random rank-${RANK} LoRA adapters on all 7 projections`,
    `- Decode: ${opt.promptLen}-token prompts, ${opt.tokens} greedy tokens per measurement after a warm-up, best of ${opt.repeat}; prefill: one ${opt.prefillLen}-token prompt`,
    '',
    markdown,
    '',
    ...notes(results),
    `<!-- /bench:${key} -->`,
  ].join('\n');
  let doc = existsSync(docPath)
    ? readFileSync(docPath, 'utf8')
    : '# Benchmarks\n\nCPU benchmarks of `@loraplex/engine` against llama.cpp, written by `packages/engine/bench/engine-bench.mjs --write`. One section per date and machine; a rerun replaces its section.\n';
  const re = new RegExp(`<!-- bench:${key} -->[\\s\\S]*?<!-- /bench:${key} -->`);
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  mkdirSync(dirname(docPath), { recursive: true });
  writeFileSync(docPath, doc);
  log(`wrote section "${key}" to ${docPath}`);
}

function nlcVersion() {
  try {
    return JSON.parse(readFileSync(join(here, '../node_modules/node-llama-cpp/package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

// ---- main -----------------------------------------------------------------------------------

const inputs = prepare();
const haveEngine = existsSync(ENGINE_ENTRY);
if (!haveEngine && !v['skip-loraplex']) {
  log(
    `loraplex: SKIPPED — ${relative(repoRoot, ENGINE_ENTRY)} not found (build it: pnpm --filter @loraplex/engine build)`,
  );
}
const results = {};
for (const dtype of dtypes) {
  const { dir, gguf } = inputs.models[dtype];
  results[dtype] = {};
  if (!v['skip-llama']) {
    log(`[${dtype}] llama.cpp ...`);
    results[dtype].llama = await runChild('llama-cpp-runner.mjs', ['--model', gguf, ...common()]);
  }
  if (haveEngine && !v['skip-loraplex']) {
    log(`[${dtype}] loraplex ...`);
    const r = await runChild('loraplex-runner.mjs', [
      '--model',
      dir,
      '--adapters',
      inputs.adapters.join(','),
      '--rank',
      String(RANK),
      ...common(),
    ]);
    if (!r.ok && r.code === NOT_BUILT) r.error = 'engine not built';
    results[dtype].loraplex = r;
  }
}

const md = table(results);
console.log(
  `\n${machine()}, ${opt.threads} threads, ${opt.tokens} decode tokens, prefill ${opt.prefillLen}\n\n${md}\n`,
);
for (const n of notes(results)) console.log(n);
if (v.write) writeDoc(resolve(v.doc ?? join(repoRoot, 'docs/benchmarks.md')), md, results);
const failed = Object.values(results).some((r) => (r.llama && !r.llama.ok) || (r.loraplex && !r.loraplex.ok));
process.exit(failed ? 1 : 0);
