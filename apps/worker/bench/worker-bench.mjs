#!/usr/bin/env node
// Worker benchmark: a real worker (in-process, over HTTP on a loopback port) on a small random Llama
// with 128 random LoRA adapters and 8 adapter slots, so 32 and 128 distinct adapters churn slots.
//
//   pnpm --filter @loraplex/worker bench [-- --quick] [-- --write]
//   node apps/worker/bench/worker-bench.mjs [--quick] [--clients 16] [--requests 192] [--threads N]
//        [--cache DIR] [--regen] [--write [--doc FILE]]
//
// 1. Throughput / TTFT against distinct adapters N = 1, 8, 32, 128: a fresh worker per N, a fixed
//    number of concurrent streaming clients, each request's adapter drawn Zipf(s = 1.1) over N
//    (deterministic); a cold pass (no adapter resident) then a warm pass (same requests again).
// 2. Step time with and without a concurrent adapter load: a steady decode batch on one adapter;
//    windows with a loop loading other adapters through the worker's AdapterManager alternate with
//    quiet windows, side by side in one run. Goal (issue 4): p99 slower by at most 10%.
// The model and adapters are generated once into <repo>/.bench/worker (git-ignored) and reused.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  benchPrompt,
  countParams,
  generateAdapters,
  generateModel,
  GENERATOR_VERSION,
  resolveConfig,
} from '../../../packages/engine/bench/gen-model.mjs';
import { machine } from '../../../scripts/bench-machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../..');
const WORKER_ENTRY = join(repoRoot, 'apps/worker/dist/index.js');
const MODEL = { hidden: 384, layers: 4, heads: 6, kvHeads: 6, intermediate: 1024, vocab: 4096, maxPos: 2048 };
const N_ADAPTERS = 128,
  RANK = 8,
  ALPHA = 16,
  SLOTS = 8,
  ZIPF_S = 1.1;

const argv = process.argv.slice(2);
if (argv[0] === '--') argv.shift(); // `pnpm ... bench -- --write` forwards the separator
const { values: v } = parseArgs({
  args: argv,
  options: {
    quick: { type: 'boolean' },
    clients: { type: 'string' },
    requests: { type: 'string' },
    threads: { type: 'string' },
    cache: { type: 'string' },
    regen: { type: 'boolean' },
    write: { type: 'boolean' },
    doc: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (v.help) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 8)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
  process.exit(0);
}
const plan = {
  threads: v.threads ? Number(v.threads) : availableParallelism(),
  clients: Number(v.clients ?? (v.quick ? 8 : 16)),
  requests: Number(v.requests ?? (v.quick ? 32 : 256)),
  adapterCounts: [1, 8, 32, 128],
  promptLen: 32,
  maxTokens: 32,
  // Step-time phase: batch of decoding sequences, qualifying steps per window, quiet/load window pairs.
  stepBatch: 8,
  window: v.quick ? 15 : 100,
  rounds: v.quick ? 2 : 6,
  warmup: 10,
};
const cache = resolve(v.cache ?? join(repoRoot, '.bench', 'worker'));
const config = resolveConfig(MODEL);
const log = (m) => console.error(m);

// ---- inputs ---------------------------------------------------------------------------------

function cached(path, key, make) {
  const stampFile = `${path}.stamp.json`;
  const want = JSON.stringify(key);
  if (!v.regen && existsSync(path) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === want) return;
  make();
  writeFileSync(stampFile, want);
}

function prepare() {
  mkdirSync(cache, { recursive: true });
  const base = { generator: GENERATOR_VERSION, config };
  const model = join(cache, 'llama-small-f32');
  const adapters = join(cache, `adapters-r${RANK}`);
  const t0 = performance.now();
  cached(model, base, () => {
    log(`generating the model in ${model}`);
    generateModel({ out: model, dtype: 'float32', ...MODEL });
  });
  cached(adapters, { ...base, n: N_ADAPTERS, rank: RANK, alpha: ALPHA }, () => {
    log(`generating ${N_ADAPTERS} rank-${RANK} adapters in ${adapters}`);
    generateAdapters({ out: adapters, count: N_ADAPTERS, rank: RANK, alpha: ALPHA, ...MODEL });
  });
  log(`inputs ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (cache ${cache})`);
  return { model, adapters };
}

// ---- helpers --------------------------------------------------------------------------------

function mulberry32(seed) {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` adapter names drawn Zipf(s) over a0..a(n-1): rank k has weight 1 / k^s. */
function zipfAdapters(n, count, seed) {
  const cdf = [];
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf.push((sum += 1 / k ** ZIPF_S));
  const rnd = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const x = rnd() * sum;
    let lo = 0;
    while (cdf[lo] < x) lo++;
    return `a${lo}`;
  });
}

const pct = (xs, p) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};

async function adapterLoads(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n'))
    if (line.startsWith('loraplex_adapter_loads_total{') && line.includes('result="ok"'))
      n += Number(line.split(' ').pop());
  return n;
}

/** One streaming completion; resolves to its time to first token and completion tokens. */
async function streamCompletion(url, body, signal) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buf = '',
    ttft,
    tokens = 0;
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event
        .split('\n')
        .find((l) => l.startsWith('data:'))
        ?.slice(5)
        .trim();
      if (!data || data === '[DONE]') continue;
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(JSON.stringify(msg.error));
      if (ttft === undefined && msg.choices?.length > 0) ttft = performance.now() - t0;
      if (msg.usage) tokens = msg.usage.completion_tokens;
    }
  }
  return { ttft, tokens };
}

// ---- phase 1: throughput and TTFT against distinct adapters --------------------------------

async function throughputPass(url, requests) {
  let next = 0,
    tokens = 0;
  const ttfts = [];
  const loads0 = await adapterLoads(url);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: plan.clients }, async () => {
      while (next < requests.length) {
        const r = await streamCompletion(url, requests[next++]);
        ttfts.push(r.ttft);
        tokens += r.tokens;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return {
    seconds,
    tokens,
    tokS: tokens / seconds,
    reqS: requests.length / seconds,
    ttftP50: pct(ttfts, 0.5),
    ttftP99: pct(ttfts, 0.99),
    loads: (await adapterLoads(url)) - loads0,
  };
}

async function throughput(startWorker, inputs) {
  const rows = [];
  for (const n of plan.adapterCounts) {
    const names = zipfAdapters(n, plan.requests, 1000 + n);
    const requests = names.map((model, i) => ({
      model,
      prompt: benchPrompt(i, plan.promptLen, config.vocab),
      max_tokens: plan.maxTokens,
      temperature: 0,
      ignore_eos: true,
    }));
    const w = await startWorker({
      model: inputs.model,
      adapterDir: inputs.adapters,
      backend: 'cpu',
      threads: plan.threads,
      maxAdapters: SLOTS,
      maxLoraRank: 16,
      port: 0,
    });
    const url = `http://127.0.0.1:${w.port}`;
    try {
      for (const pass of ['cold', 'warm']) {
        log(
          `[throughput] ${n} adapter(s), ${pass} pass: ${plan.requests} requests, ${plan.clients} clients, ${new Set(names).size} distinct`,
        );
        rows.push({ n, pass, distinct: new Set(names).size, ...(await throughputPass(url, requests)) });
      }
    } finally {
      await w.drain();
    }
  }
  return rows;
}

// ---- phase 2: step time with and without a concurrent adapter load ------------------------

async function stepTimes(startWorker, inputs) {
  const B = plan.stepBatch;
  // Outlasts the measurement (steps between windows, while a load settles, are not counted): as long
  // as the context allows (2048 positions, 16-token prompt).
  const maxTokens = Math.max(plan.warmup + plan.rounds * 2 * plan.window + 64, 2048 - 17);
  // A KV cache that holds the whole batch, so no step is a preemption's re-prefill.
  const w = await startWorker({
    model: inputs.model,
    adapterDir: inputs.adapters,
    backend: 'cpu',
    threads: plan.threads,
    maxAdapters: SLOTS,
    maxLoraRank: 16,
    kvCacheTokens: B * 2048,
    port: 0,
  });
  const url = `http://127.0.0.1:${w.port}`;
  const { engine, adapters } = w.worker;
  const times = { quiet: [], load: [] };
  // Event-loop delay per phase: JS work on the main thread (e.g. reading an adapter) delays every step's completion.
  const loopDelay = { quiet: monitorEventLoopDelay({ resolution: 1 }), load: monitorEventLoopDelay({ resolution: 1 }) };
  let phase = 'warmup',
    inWindow = 0,
    round = 0,
    loads = 0,
    loadSeconds = 0,
    loaderStop,
    settled;
  let done;
  const finished = new Promise((res) => (done = res));

  // The loader: loads a1..a127 round and round (slots full: each load evicts an idle adapter).
  const startLoader = () => {
    let stop = false,
      k = 0;
    loaderStop = () => (stop = true);
    settled = (async () => {
      while (!stop) {
        const t0 = performance.now();
        await adapters.require(`a${1 + (k++ % (N_ADAPTERS - 1))}`);
        loadSeconds += (performance.now() - t0) / 1000;
        loads++;
      }
    })();
  };
  const next = (p) => {
    loopDelay[phase]?.disable();
    phase = p;
    loopDelay[phase]?.enable();
    inWindow = 0;
  };
  const original = engine.runStep.bind(engine);
  engine.runStep = async (items) => {
    const t0 = performance.now(),
      during = phase;
    try {
      return await original(items);
    } finally {
      const ms = performance.now() - t0;
      // Only the steady shape counts: B decode tokens of the one adapter (no prefill chunk).
      const steady =
        items.length === B && items.every((it) => it.tokens.length === 1 && it.adapterSlot === items[0].adapterSlot);
      if (steady && during === phase && phase !== 'settling' && phase !== 'done') {
        if (phase !== 'warmup') times[phase].push(ms);
        if (++inWindow >= (phase === 'warmup' ? plan.warmup : plan.window)) {
          if (phase === 'warmup') next('quiet');
          else if (phase === 'quiet') {
            next('load');
            startLoader();
          } else {
            next('settling');
            loaderStop();
            void settled.then(() => {
              if (++round >= plan.rounds) {
                next('done');
                done();
              } else next('quiet');
            });
          }
        }
      }
    }
  };
  log(
    `[step time] ${B} sequences decoding on a0; ${plan.rounds} x (${plan.window} quiet steps, ${plan.window} steps while loading adapters)`,
  );
  const ac = new AbortController();
  await adapters.require('a0');
  const clients = Array.from({ length: B }, (_, i) =>
    streamCompletion(
      url,
      {
        model: 'a0',
        prompt: benchPrompt(10_000 + i, 16, config.vocab),
        max_tokens: maxTokens,
        temperature: 0,
        ignore_eos: true,
      },
      ac.signal,
    ).catch(() => undefined),
  );
  // The decode batch forms once all B prefills are done; the first quiet window follows warm-up.
  await Promise.race([
    finished,
    Promise.all(clients).then(() => {
      throw new Error('the decode batch ended before the measurement did');
    }),
  ]);
  ac.abort();
  await Promise.allSettled(clients);
  engine.runStep = original;
  await w.drain();
  const row = (name, xs, h) => ({
    name,
    steps: xs.length,
    p50: pct(xs, 0.5),
    p99: pct(xs, 0.99),
    mean: xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length),
    loopP99: h.percentile(99) / 1e6,
  });
  return {
    quiet: row('decode only', times.quiet, loopDelay.quiet),
    load: row('decode + adapter loads', times.load, loopDelay.load),
    loads,
    loadMs: (loadSeconds / Math.max(1, loads)) * 1000,
  };
}

// ---- report ---------------------------------------------------------------------------------

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');

function tables(tp, st) {
  const t1 = [
    '| distinct adapters (Zipf 1.1) | pass | adapters drawn | tok/s | req/s | TTFT p50 ms | TTFT p99 ms | adapter loads |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
    ...tp.map(
      (r) =>
        `| ${r.n} | ${r.pass} | ${r.distinct} | ${f(r.tokS)} | ${f(r.reqS, 2)} | ${f(r.ttftP50)} | ${f(r.ttftP99)} | ${r.loads} |`,
    ),
  ];
  const warm = (n) => tp.find((r) => r.n === n && r.pass === 'warm');
  const base = warm(1);
  const t1b = base
    ? [
        '',
        `Warm tok/s relative to 1 adapter: ${plan.adapterCounts.map((n) => `${n}: ${f(warm(n).tokS / base.tokS, 2)}x`).join(', ')}.`,
      ]
    : [];
  const ratio = st.load.p99 / st.quiet.p99;
  const t2 = [
    '| steps of a steady decode batch | steps | p50 ms | p99 ms | mean ms | event-loop delay p99 ms |',
    '|---|---:|---:|---:|---:|---:|',
    ...[st.quiet, st.load].map(
      (r) => `| ${r.name} | ${r.steps} | ${f(r.p50, 2)} | ${f(r.p99, 2)} | ${f(r.mean, 2)} | ${f(r.loopP99, 1)} |`,
    ),
    `| loads / quiet | — | ${f(st.load.p50 / st.quiet.p50, 2)}x | ${f(ratio, 2)}x | ${f(st.load.mean / st.quiet.mean, 2)}x | — |`,
    '',
    `${st.loads} adapter loads (rank ${RANK}, all 7 projections) during the load windows, ${f(st.loadMs, 1)} ms each on average including the eviction that made room. Goal: p99 with loads at most 1.10x the quiet p99 (${ratio <= 1.1 ? 'met' : 'not met'}: ${f(ratio, 2)}x).`,
  ];
  return [...t1, ...t1b, '', ...t2].join('\n');
}

function writeDoc(docPath, markdown) {
  const date = new Date().toISOString().slice(0, 10);
  const m = machine();
  const key = `worker ${date} ${m}`.replace(/[^A-Za-z0-9.-]+/g, '-');
  const cmd = `node ${relative(repoRoot, fileURLToPath(import.meta.url))} ${argv.join(' ')}`.trim();
  const section = [
    `<!-- bench:${key} -->`,
    `## Worker — ${date} — ${m}`,
    '',
    `- Command: \`${cmd}\` (from the repository root; \`pnpm --filter @loraplex/worker bench\` runs the same script)`,
    `- Machine: ${m}; engine threads ${plan.threads}; Node ${process.version}; worker and clients in one process, HTTP over loopback`,
    `- Model: random Llama float32, ${(countParams(config) / 1e6).toFixed(1)}M params (hidden ${config.hidden}, ${config.layers} layers, ${config.heads}/${config.kvHeads} heads, ffn ${config.intermediate}, vocab ${config.vocab}); ${N_ADAPTERS} random rank-${RANK} adapters on all 7 projections; --max-adapters ${SLOTS}`,
    `- Throughput: ${plan.requests} streaming requests per pass (${plan.promptLen}-token prompts, ${plan.maxTokens} greedy tokens, ignore_eos), ${plan.clients} concurrent clients, adapter per request drawn Zipf(s = ${ZIPF_S}) over N; a fresh worker per N, cold pass (no adapter resident) then warm pass (the same requests); adapter files are in the OS page cache in both`,
    `- Step time: ${plan.stepBatch} sequences decoding on one adapter; ${plan.rounds} side-by-side rounds of ${plan.window} steps without and ${plan.window} steps with a loop loading other adapters (AdapterManager.require, slots full, so each load evicts one); engine.runStep wall time of steady ${plan.stepBatch}-token decode steps`,
    '',
    markdown,
    `<!-- /bench:${key} -->`,
  ].join('\n');
  let doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const re = new RegExp(`<!-- bench:${key} -->[\\s\\S]*?<!-- /bench:${key} -->`);
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(docPath, doc);
  log(`wrote section "${key}" to ${docPath}`);
}

// ---- main -----------------------------------------------------------------------------------

if (!existsSync(WORKER_ENTRY)) {
  log(
    `${relative(repoRoot, WORKER_ENTRY)} not found: build it first (pnpm --filter @loraplex/engine run build:ts && pnpm --filter @loraplex/worker build)`,
  );
  process.exit(2);
}
const { startWorker } = await import(pathToFileURL(WORKER_ENTRY).href);
const inputs = prepare();
const t0 = performance.now();
const tp = await throughput(startWorker, inputs);
const st = await stepTimes(startWorker, inputs);
const md = tables(tp, st);
console.log(
  `\n${machine()}, ${plan.threads} engine threads, ${((performance.now() - t0) / 1000).toFixed(0)} s${v.quick ? ' (quick)' : ''}\n\n${md}\n`,
);
if (v.write) writeDoc(resolve(v.doc ?? join(repoRoot, 'docs/benchmarks.md')), md);
