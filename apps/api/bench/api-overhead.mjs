#!/usr/bin/env node
// API overhead benchmark: the latency the API adds over calling a worker directly, and requests per
// second, for short requests (max_tokens 1) on a real worker with the fixture model.
//
//   pnpm --filter @loraplex/api bench [-- --quick] [-- --write]
//   node bench/api-overhead.mjs [--requests 2000] [--concurrency 16] [--seconds 10] [--quick]
//        [--worker URL] [--model NAME] [--worker-threads 1]
//        [--api URL --api-key KEY [--api-model NAME]] [--write [--doc FILE]]
//
// Targets: the worker directly; the routing layer (bench/router-server.mjs: Router in a minimal
// Hono app, its own process); and, with --api, a full API (e.g. `loraplex dev`) whose worker is
// --worker. Latency is measured one request at a time, rotating over the targets so drift hits all
// alike; throughput with --concurrency requests in flight for --seconds per target.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { machine } from '../../../scripts/bench-machine.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const apiDir = resolve(here, '..');
const repoRoot = resolve(apiDir, '../..');
const argv = process.argv.slice(2);
if (argv[0] === '--') argv.shift();
const { values: v } = parseArgs({
  args: argv,
  options: {
    requests: { type: 'string' },
    concurrency: { type: 'string', default: '16' },
    seconds: { type: 'string' },
    quick: { type: 'boolean' },
    worker: { type: 'string' },
    model: { type: 'string', default: 'tiny-llama' },
    'worker-threads': { type: 'string', default: '1' },
    api: { type: 'string' },
    'api-key': { type: 'string' },
    'api-model': { type: 'string' },
    write: { type: 'boolean' },
    doc: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (v.help) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 13)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
  process.exit(0);
}
const opt = {
  requests: Number(v.requests ?? (v.quick ? 200 : 2000)),
  concurrency: Number(v.concurrency),
  seconds: Number(v.seconds ?? (v.quick ? 2 : 10)),
};
const log = (m) => console.error(m);
const children = [];
const cleanup = () => children.forEach((c) => c.exitCode === null && c.kill('SIGTERM'));
process.on('exit', cleanup);

// ---- processes ------------------------------------------------------------------------------

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true }))
    t = Math.max(t, e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs);
  return t;
}

function ensureApiBuilt() {
  const entry = join(apiDir, 'dist', 'routing', 'index.js');
  if (existsSync(entry) && statSync(entry).mtimeMs >= newest(join(apiDir, 'src'))) return;
  log('building @loraplex/api (tsc) ...');
  const r = spawnSync(
    process.execPath,
    [createRequire(join(apiDir, 'package.json')).resolve('typescript/bin/tsc'), '-p', join(apiDir, 'tsconfig.json')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`building @loraplex/api failed:\n${r.stdout}${r.stderr}`);
}

function startProcess(args, what) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  children.push(child);
  let out = '',
    err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${what} did not start:\n${out}${err}`)), 60_000);
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        res(`http://127.0.0.1:${JSON.parse(line).port}`);
      }
    });
    child.once('exit', (code) => rej(new Error(`${what} exited with ${code}:\n${out}${err}`)));
  });
}

function startWorker() {
  const cli = join(repoRoot, 'apps', 'worker', 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error('apps/worker/dist/cli.js not found: pnpm --filter @loraplex/worker build');
  const fixture = join(repoRoot, 'packages', 'engine', 'test', 'fixtures', 'hf-tiny', 'llama');
  return startProcess(
    [
      cli,
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--model',
      join(fixture, 'base'),
      '--adapter-dir',
      join(fixture, 'adapters'),
      '--served-model-name',
      v.model,
      '--threads',
      v['worker-threads'],
    ],
    'worker',
  );
}

// ---- load -----------------------------------------------------------------------------------

function target(name, url, model, headers = {}) {
  const u = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const body = JSON.stringify({ model, prompt: 'Hello', max_tokens: 1, temperature: 0 });
  const h = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers };
  const path = `${u.pathname.replace(/\/$/, '')}/v1/completions`;
  /** One request; resolves its latency in ms (rejects on a non-200). */
  const once = () =>
    new Promise((res, rej) => {
      const t0 = process.hrtime.bigint();
      const req = request({ host: u.hostname, port: u.port, path, method: 'POST', headers: h, agent }, (r) => {
        let data = '';
        r.setEncoding('utf8');
        r.on('data', (d) => (data += d));
        r.on('end', () =>
          r.statusCode === 200
            ? res(Number(process.hrtime.bigint() - t0) / 1e6)
            : rej(new Error(`${name}: HTTP ${r.statusCode} ${data.slice(0, 300)}`)),
        );
      });
      req.on('error', rej);
      req.end(body);
    });
  return { name, url, once, lat: [], rps: 0 };
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function latency(targets) {
  for (const t of targets) for (let i = 0; i < 50; i++) await t.once(); // warm-up: connections, JIT
  for (let i = 0; i < opt.requests; i++) for (const t of targets) t.lat.push(await t.once());
}

async function throughput(t) {
  const end = performance.now() + opt.seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: opt.concurrency }, async () => {
      while (performance.now() < end) {
        await t.once();
        done++;
      }
    }),
  );
  t.rps = done / opt.seconds;
}

// ---- report ---------------------------------------------------------------------------------

function report(targets) {
  const direct = targets[0];
  const rows = targets.map(
    (t) =>
      `| ${t.name} | ${pct(t.lat, 50).toFixed(3)} | ${pct(t.lat, 99).toFixed(3)} | ${t === direct ? '—' : `+${(pct(t.lat, 50) - pct(direct.lat, 50)).toFixed(3)}`} | ${t.rps.toFixed(0)} |`,
  );
  return [
    `| Path | median ms | p99 ms | added at the median, ms | req/s (${opt.concurrency} in flight) |`,
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}

function writeDoc(docPath, markdown) {
  const cmd = `node ${relative(repoRoot, fileURLToPath(import.meta.url))} ${argv.join(' ')}`.trim();
  const section = [
    '<!-- bench:api-overhead -->',
    '## API overhead',
    '',
    `- Command: \`${cmd}\` (from the repository root; \`pnpm --filter @loraplex/api bench\` runs the same script); ${new Date().toISOString().slice(0, 10)}`,
    `- Machine: ${machine()}; Node ${process.version}; worker, routing layer, API and load generator share it`,
    `- Requests: \`POST /v1/completions\` with max_tokens 1 on the fixture model (hf-tiny llama), keep-alive connections; latency over ${opt.requests} sequential requests per path (rotating paths), throughput with ${opt.concurrency} in flight for ${opt.seconds} s per path`,
    '- Goal: under 2 ms added at the median.',
    '',
    markdown,
    '<!-- /bench:api-overhead -->',
  ].join('\n');
  let doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '# Benchmarks\n';
  const re = /<!-- bench:api-overhead -->[\s\S]*?<!-- \/bench:api-overhead -->/;
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  mkdirSync(dirname(docPath), { recursive: true });
  writeFileSync(docPath, doc);
  log(`wrote the "API overhead" section of ${docPath}`);
}

// ---- main -----------------------------------------------------------------------------------

ensureApiBuilt();
const workerUrl = v.worker ?? (await startWorker());
const routerUrl = await startProcess(
  [join(here, 'router-server.mjs'), '--worker', workerUrl, '--model', v.model],
  'router server',
);
const targets = [
  target('worker directly', workerUrl, v.model),
  target('routing layer (Router + Hono)', routerUrl, v.model),
];
if (v.api) {
  if (!v['api-key']) throw new Error('--api needs --api-key (an inference key)');
  targets.push(
    target(`full API (${v.api})`, v.api, v['api-model'] ?? v.model, { authorization: `Bearer ${v['api-key']}` }),
  );
}
log(`latency: ${opt.requests} requests per path ...`);
await latency(targets);
for (const t of targets) {
  log(`throughput: ${t.name} ...`);
  await throughput(t);
}
const md = report(targets);
console.log(`\n${machine()}\n\n${md}\n`);
if (v.write) writeDoc(resolve(v.doc ?? join(repoRoot, 'docs', 'benchmarks.md')), md);
// Let the worker and the router server shut down (drain, flush usage) before exiting.
await Promise.all(
  children.map((c) =>
    c.exitCode !== null
      ? undefined
      : new Promise((res) => {
          const timer = setTimeout(() => {
            c.kill('SIGKILL');
            res();
          }, 10_000);
          c.once('exit', () => {
            clearTimeout(timer);
            res();
          });
          c.kill('SIGTERM');
        }),
  ),
);
process.exit(0);
