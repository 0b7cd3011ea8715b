#!/usr/bin/env node
// Soak benchmark: does memory stay bounded under load (issue 11)? The embedded stack (API + a real
// worker child process on a small generated Llama) in a child process of its own, so the load
// generator's memory is not the API's; N tenants, adapters spread over them, streaming clients that
// alternate OpenAI /v1/completions and LoRAX /generate_stream over every adapter for a fixed time.
//
//   node apps/api/bench/soak.mjs [--duration 300] [--clients 200] [--adapters 50] [--tenants 3]
//        [--max-tokens 16] [--warmup S] [--sample-every S] [--api-heap-mb 1024]
//        [--worker-heap-mb 1024] [--threads 1] [--write [--doc FILE]]
//
// Records errors (goal 0), TTFT p50/p99, the RSS of the API and worker processes sampled over the
// run and its least-squares slope after the warm-up (bytes/min), and checks that the usage rows in
// the database with status 200 count exactly the completed requests (and the others, per status,
// the failed ones: the router records a row for every request). The heap ceilings are passed the way the
// images set them (NODE_OPTIONS=--max-old-space-size). Starts and stops only its own processes (by
// PID) and removes its temp directory.
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  benchPrompt,
  countParams,
  generateAdapters,
  generateModel,
  resolveConfig,
} from '../../../packages/engine/bench/gen-model.mjs';
import { writeBenchSection } from '../../../scripts/bench-doc.mjs';
import { machine } from '../../../scripts/bench-machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../..');
const API_ENTRY = join(repoRoot, 'apps/api/dist/index.js');
const MODEL = { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 172, vocab: 512, maxPos: 512 };
const RANK = 8,
  ALPHA = 16,
  BASE = 'soak-llama';

const argv = process.argv.slice(2);
if (argv[0] === '--') argv.shift();
const { values: v } = parseArgs({
  args: argv,
  options: {
    duration: { type: 'string' },
    clients: { type: 'string' },
    adapters: { type: 'string' },
    tenants: { type: 'string' },
    'max-tokens': { type: 'string' },
    warmup: { type: 'string' },
    'sample-every': { type: 'string' },
    'api-heap-mb': { type: 'string' },
    'worker-heap-mb': { type: 'string' },
    threads: { type: 'string' },
    write: { type: 'boolean' },
    doc: { type: 'string' },
    help: { type: 'boolean' },
    'stack-child': { type: 'string' }, // internal: this file, forked, runs the stack
  },
});
const log = (m) => console.error(m);

// ---- the stack child: API in this process, the worker its child ------------------------------

async function runStackChild(opts) {
  const { startStack } = await import(pathToFileURL(API_ENTRY).href);
  // This process already runs under its own ceiling; the worker it spawns inherits this one.
  process.env.NODE_OPTIONS = `--max-old-space-size=${opts.workerHeapMb}`;
  const stack = await startStack({
    workerCli: join(repoRoot, 'apps/worker/dist/cli.js'),
    model: opts.model,
    servedModelName: BASE,
    dataDir: opts.dataDir,
    port: opts.port,
    workerPort: opts.workerPort,
    log: null,
    workerArgs: [
      '--backend',
      'cpu',
      '--threads',
      String(opts.threads),
      '--adapter-cache-dir',
      join(opts.dataDir, 'worker-cache'),
    ],
  });
  let closing;
  const close = () => (closing ??= stack.close().finally(() => process.exit(0)));
  const { sql } = await import('drizzle-orm');
  process.on('message', (m) => {
    if (m === 'memory') process.send({ type: 'memory', ...process.memoryUsage() });
    else if (m === 'usage') {
      // Usage rows per HTTP status: the router records one for every request, refused ones included.
      void stack.db.execute(sql`select status, count(*)::int as n from usage_events group by status`).then(
        (r) =>
          process.send({
            type: 'usage',
            byStatus: Object.fromEntries(r.rows.map((row) => [String(row.status), Number(row.n)])),
          }),
        (e) => process.send({ type: 'usage', error: String(e) }),
      );
    } else if (m === 'stop') void close();
  });
  process.on('disconnect', () => void close()); // the parent went away
  process.send({ type: 'ready', url: stack.url, adminKey: stack.adminKey, workerPid: stack.workerPid });
}

// ---- helpers ---------------------------------------------------------------------------------

function freePort() {
  return new Promise((res, rej) => {
    const s = net
      .createServer()
      .listen(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => res(port));
      })
      .on('error', rej);
  });
}

const pct = (xs, p) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, p) => a + p.x, 0) / n,
    my = points.reduce((a, p) => a + p.y, 0) / n;
  let sxy = 0,
    sxx = 0;
  for (const p of points) {
    sxy += (p.x - mx) * (p.y - my);
    sxx += (p.x - mx) ** 2;
  }
  return sxx === 0 ? Number.NaN : sxy / sxx;
}

/** Resident set size of a process in bytes (Linux /proc), undefined once it is gone. */
function rssOf(pid) {
  try {
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

async function api(base, key, method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${key}` } };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** One streaming request; resolves to { ttftMs, tokens } or throws with what went wrong. */
async function streamOnce(base, key, route, adapter, prompt, maxTokens) {
  const body =
    route === 'openai'
      ? { model: adapter, prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true }
      : { inputs: prompt, parameters: { adapter_id: adapter, max_new_tokens: maxTokens, ignore_eos_token: true } };
  const t0 = performance.now();
  const res = await fetch(`${base}${route === 'openai' ? '/v1/completions' : '/generate_stream'}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const decoder = new TextDecoder();
  let buf = '',
    ttftMs,
    tokens = 0,
    finished = false;
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const data = buf
        .slice(0, i)
        .split('\n')
        .find((l) => l.startsWith('data:'))
        ?.slice(5)
        .trim();
      buf = buf.slice(i + 2);
      if (!data) continue;
      if (data === '[DONE]') {
        finished = true;
        continue;
      }
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(`stream error: ${JSON.stringify(msg.error).slice(0, 300)}`);
      const token = route === 'openai' ? msg.choices?.length > 0 : msg.token != null;
      if (token) {
        ttftMs ??= performance.now() - t0;
        tokens++;
      }
      if (route === 'lorax' && msg.generated_text != null) finished = true;
    }
  }
  if (!finished) throw new Error('the stream ended without its final event');
  return { ttftMs, tokens };
}

/** A text prompt of `len` word pieces of the generated vocabulary (LoRAX `inputs` is a string). */
const promptText = (i, len, vocab) =>
  benchPrompt(i, len, vocab)
    .map((id) => `w${id}`)
    .join(' ');

// ---- the run ---------------------------------------------------------------------------------

async function main() {
  const plan = {
    duration: Number(v.duration ?? 300),
    clients: Number(v.clients ?? 200),
    adapters: Number(v.adapters ?? 50),
    tenants: Number(v.tenants ?? 3),
    maxTokens: Number(v['max-tokens'] ?? 16),
    promptTokens: 16,
    threads: Number(v.threads ?? 1),
    apiHeapMb: Number(v['api-heap-mb'] ?? 1024),
    workerHeapMb: Number(v['worker-heap-mb'] ?? 1024),
  };
  plan.warmup = Number(v.warmup ?? Math.min(60, plan.duration / 5));
  plan.sampleEvery = Number(v['sample-every'] ?? Math.max(1, Math.min(5, plan.duration / 30)));
  const root = mkdtempSync(join(tmpdir(), 'lpx-soak-'));
  let child,
    workerPid,
    stopping = false;

  // Only what this run started: its stack child, the worker (if the child could not stop it), the temp dir.
  const cleanup = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      if (child.connected) child.send('stop');
      else child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
    if (workerPid !== undefined && rssOf(workerPid) !== undefined) {
      try {
        process.kill(workerPid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(root, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'])
    process.once(sig, () => {
      stopping = true;
      void cleanup().finally(() => process.exit(130));
    });

  try {
    const config = resolveConfig(MODEL);
    const model = join(root, 'model');
    generateModel({ out: model, dtype: 'float32', ...MODEL });
    const adapterDirs = generateAdapters({
      out: join(root, 'adapters'),
      count: plan.adapters,
      rank: RANK,
      alpha: ALPHA,
      baseModel: BASE,
      ...MODEL,
    });

    const [port, workerPort] = [await freePort(), await freePort()];
    child = fork(
      fileURLToPath(import.meta.url),
      [
        '--stack-child',
        JSON.stringify({
          model,
          dataDir: join(root, 'data'),
          port,
          workerPort,
          threads: plan.threads,
          workerHeapMb: plan.workerHeapMb,
        }),
      ],
      {
        env: { ...process.env, NODE_OPTIONS: `--max-old-space-size=${plan.apiHeapMb}` },
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      },
    );
    const ready = await new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('the stack did not start within 180 s')), 180_000);
      child.on('message', (m) => {
        if (m.type === 'ready') {
          clearTimeout(t);
          res(m);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(t);
        rej(new Error(`the stack child exited (${code}) before it was ready`));
      });
    });
    workerPid = ready.workerPid;
    const base = ready.url;
    log(
      `stack at ${base} (API pid ${child.pid}, worker pid ${workerPid}); ${plan.tenants} tenants, ${plan.adapters} adapters`,
    );

    const tenants = [];
    for (let t = 0; t < plan.tenants; t++) {
      const tenant = await api(base, ready.adminKey, 'POST', '/v1/tenants', { name: `soak-${t}` });
      tenants.push({
        id: tenant.id,
        key: (await api(base, ready.adminKey, 'POST', '/v1/keys', { tenant_id: tenant.id })).key,
      });
    }
    const adapters = [];
    for (const [k, dir] of adapterDirs.entries()) {
      const tenant = tenants[k % plan.tenants];
      const form = new FormData();
      form.set('name', `a${k}`);
      for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
        form.set(f, new Blob([readFileSync(join(dir, f))]), f);
      await api(base, tenant.key, 'POST', '/v1/adapters', form);
      adapters.push({ tenant, name: `a${k}` });
    }

    // Memory samples: RSS of both processes from /proc, the API's heap over IPC.
    const samples = [];
    const t0 = performance.now();
    const at = () => (performance.now() - t0) / 1000;
    child.on('message', (m) => {
      if (m.type === 'memory') samples.push({ t: at(), apiHeap: m.heapUsed });
    });
    const load0 = loadavg()[0];
    const sample = () => {
      if (child.connected) child.send('memory');
      samples.push({ t: at(), api: rssOf(child.pid), worker: rssOf(workerPid) });
    };
    sample();
    const sampler = setInterval(sample, plan.sampleEvery * 1000);

    log(
      `load: ${plan.clients} streaming clients for ${plan.duration} s (warm-up ${plan.warmup} s), ${plan.maxTokens} tokens each`,
    );
    const end = t0 + plan.duration * 1000;
    const ttfts = [],
      errors = new Map(),
      failedByStatus = new Map();
    let next = 0,
      completed = 0,
      tokens = 0,
      failed = 0;
    await Promise.all(
      Array.from({ length: plan.clients }, async () => {
        while (performance.now() < end && !stopping) {
          const i = next++;
          const a = adapters[i % adapters.length];
          try {
            const r = await streamOnce(
              base,
              a.tenant.key,
              i % 2 === 0 ? 'openai' : 'lorax',
              a.name,
              promptText(i, plan.promptTokens, config.vocab),
              plan.maxTokens,
            );
            completed++;
            tokens += r.tokens;
            if (r.ttftMs !== undefined) ttfts.push(r.ttftMs);
          } catch (e) {
            failed++;
            const status = /^HTTP (\d{3})\b/.exec(String(e.message))?.[1] ?? 'no status';
            failedByStatus.set(status, (failedByStatus.get(status) ?? 0) + 1);
            const key = String(e.message ?? e).replace(/ad_[a-f0-9]+|a\d+/g, '*');
            errors.set(key, (errors.get(key) ?? 0) + 1);
          }
        }
      }),
    );
    const seconds = at();
    sample();
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 200)); // the last heap sample's answer

    // Usage is written in batches (about once a second): wait until every request is counted. The
    // router records a row for every request, refused ones included, with the status the client
    // saw: rows with status 200 must equal the completed requests, and the others the failures
    // that got an HTTP status.
    const usageByStatus = () =>
      new Promise((res, rej) => {
        const on = (m) => {
          if (m.type !== 'usage') return;
          child.off('message', on);
          if (m.error) rej(new Error(m.error));
          else res(m.byStatus);
        };
        child.on('message', on);
        child.send('usage');
      });
    const failedWithStatus = failed - (failedByStatus.get('no status') ?? 0);
    let usage = {};
    const deadline = Date.now() + 30_000;
    for (;;) {
      usage = await usageByStatus();
      const rows = Object.values(usage).reduce((a, n) => a + n, 0);
      if (rows >= completed + failedWithStatus || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const usageRows = usage['200'] ?? 0;
    const usageMatches =
      usageRows === completed &&
      [...failedByStatus].every(([st, n]) => st === 'no status' || (usage[st] ?? 0) === n) &&
      Object.keys(usage).every((st) => st === '200' || failedByStatus.has(st));

    const result = {
      plan,
      loadAvg: [load0, loadavg()[0]],
      seconds,
      completed,
      failed,
      errors: [...errors],
      tokens,
      ttftP50: pct(ttfts, 0.5),
      ttftP99: pct(ttfts, 0.99),
      usageRows,
      usage,
      usageMatches,
      samples,
      config,
    };
    const md = report(result);
    console.log(`\n${md}\n`);
    if (v.write) {
      const key = writeBenchSection(
        resolve(v.doc ?? join(repoRoot, 'docs/benchmarks.md')),
        `soak ${new Date().toISOString().slice(0, 10)} ${machine()}`,
        section(result, md),
      );
      log(`wrote section "${key}"`);
    }
    process.exitCode = failed === 0 && usageMatches ? 0 : 1;
  } finally {
    await cleanup();
  }
}

// ---- report ----------------------------------------------------------------------------------

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const mib = (b) => f(b / 2 ** 20, 1);

function memoryRow(name, samples, field, warmup) {
  const all = samples.filter((s) => s[field] !== undefined);
  const after = all.filter((s) => s.t >= warmup);
  const perMin = slope(after.map((s) => ({ x: s.t / 60, y: s[field] })));
  return {
    name,
    first: after[0]?.[field],
    last: after.at(-1)?.[field],
    peak: Math.max(...all.map((s) => s[field])),
    perMin,
    n: after.length,
  };
}

function report(r) {
  const { plan } = r;
  const mem = [
    memoryRow('API (RSS)', r.samples, 'api', plan.warmup),
    memoryRow('API (V8 heap used)', r.samples, 'apiHeap', plan.warmup),
    memoryRow('worker (RSS)', r.samples, 'worker', plan.warmup),
  ];
  const lines = [
    '| completed | errors | req/s | tok/s | TTFT p50 ms | TTFT p99 ms | usage rows, status 200 | usage rows by status | rows = requests per status |',
    '|---:|---:|---:|---:|---:|---:|---:|---|---|',
    `| ${r.completed} | ${r.failed} | ${f(r.completed / r.seconds, 1)} | ${f(r.tokens / r.seconds, 0)} | ${f(r.ttftP50)} | ${f(r.ttftP99)} | ${r.usageRows} | ${
      Object.entries(r.usage)
        .map(([st, n]) => `${st}: ${n}`)
        .join(', ') || '—'
    } | ${r.usageMatches ? 'yes' : 'no'} |`,
    '',
    `| process | MiB after warm-up | MiB at the end | peak MiB | slope after warm-up, bytes/min (KiB/min) | samples |`,
    '|---|---:|---:|---:|---:|---:|',
    ...mem.map(
      (m) =>
        `| ${m.name} | ${mib(m.first)} | ${mib(m.last)} | ${mib(m.peak)} | ${f(m.perMin, 0)} (${f(m.perMin / 1024, 1)}) | ${m.n} |`,
    ),
  ];
  if (r.errors.length) lines.push('', 'Errors:', ...r.errors.map(([e, n]) => `- ${n} x ${e}`));
  return lines.join('\n');
}

function section(r, md) {
  const { plan, config } = r;
  const date = new Date().toISOString().slice(0, 10);
  const cmd = `node ${relative(repoRoot, fileURLToPath(import.meta.url))} ${argv.join(' ')}`.trim();
  return [
    `## Soak — ${date} — ${machine()}`,
    '',
    `- Command: \`${cmd}\` (from the repository root)`,
    `- Machine: ${machine()}; Node ${process.version}; the load generator, the API (its own process) and the worker (the API's child, ${plan.threads} engine thread${plan.threads === 1 ? '' : 's'}, CPU backend) share it; embedded defaults (PGlite, directory store); 1-minute load average ${f(r.loadAvg[0], 1)} at the start of the load, ${f(r.loadAvg[1], 1)} at its end`,
    `- Heap ceilings as in the images: API \`--max-old-space-size=${plan.apiHeapMb}\`, worker \`--max-old-space-size=${plan.workerHeapMb}\` (NODE_OPTIONS)`,
    `- Model: random Llama float32, ${(countParams(config) / 1e6).toFixed(2)}M params (hidden ${config.hidden}, ${config.layers} layers, vocab ${config.vocab}); ${plan.adapters} random rank-${RANK} adapters on all 7 projections over ${plan.tenants} tenants (adapter k belongs to tenant k mod ${plan.tenants})`,
    `- Load: ${plan.clients} streaming clients for ${f(r.seconds, 0)} s, each request the next adapter round-robin, alternately OpenAI \`/v1/completions\` and LoRAX \`/generate_stream\`, ${plan.promptTokens}-token prompts, ${plan.maxTokens} greedy tokens (ignore EOS); memory sampled every ${plan.sampleEvery} s, slope by least squares over the samples after a ${plan.warmup} s warm-up`,
    '- Goals: 0 errors; usage rows with status 200 = completed requests (and rows of any other status = the failed requests with that status); RSS flat after the warm-up',
    '',
    md,
  ].join('\n');
}

if (v.help) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 16)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
} else if (v['stack-child']) {
  await runStackChild(JSON.parse(v['stack-child']));
} else {
  await main();
}
