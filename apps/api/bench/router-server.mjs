#!/usr/bin/env node
// The routing layer alone, as its own process, for api-overhead.mjs: a minimal Hono app whose
// inference routes call Router.forward, over a WorkerRegistry on an in-memory PGlite, with the
// given workers registered by heartbeats every 2 s (as the workers' own sender will do) and every
// usage report queued in a UsageRecorder, as the full API does.
//
//   node bench/router-server.mjs --worker URL [--worker URL ...] [--model NAME] [--port N]
// Prints {"event":"listening","port":N} once ready.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PGlite } from '@electric-sql/pglite';
import { serve } from '@hono/node-server';
import { drizzle } from 'drizzle-orm/pglite';
import { migrate } from 'drizzle-orm/pglite/migrator';
import { Hono } from 'hono';

const apiDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: v } = parseArgs({
  options: {
    worker: { type: 'string', multiple: true },
    model: { type: 'string', default: 'tiny-llama' },
    port: { type: 'string', default: '0' },
  },
});
const { WorkerRegistry, Router, UsageRecorder } = await import(join(apiDir, 'dist', 'routing', 'index.js'));
const schema = await import(join(apiDir, 'dist', 'db', 'schema.js'));

function migrationsDir() {
  if (existsSync(join(apiDir, 'drizzle', 'meta', '_journal.json'))) return join(apiDir, 'drizzle');
  const schemaFile = join(apiDir, 'src', 'db', 'schema.ts');
  const out = join(
    tmpdir(),
    `loraplex-routing-migrations-${createHash('sha256').update(readFileSync(schemaFile)).digest('hex').slice(0, 16)}`,
  );
  if (existsSync(join(out, 'meta', '_journal.json'))) return out;
  const r = spawnSync(
    join(apiDir, 'node_modules', '.bin', 'drizzle-kit'),
    ['generate', '--dialect', 'postgresql', '--schema', schemaFile, '--out', out],
    { cwd: apiDir, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`drizzle-kit generate failed:\n${r.stdout}${r.stderr}`);
  return out;
}

const pglite = new PGlite();
const db = drizzle(pglite, { schema });
await migrate(db, { migrationsFolder: migrationsDir() });
await db.insert(schema.tenants).values({ id: 'tn_bench', name: 'bench' });
const registry = new WorkerRegistry(db);
const usage = new UsageRecorder(db, { flushMs: 1000, maxBatch: 500 });
const router = new Router(registry, { secret: process.env.LORAPLEX_WORKER_SECRET ?? 'bench-secret' });

const workers = (v.worker ?? []).map((url, i) => ({ id: `wk_bench_${i}`, url }));
const heartbeat = () =>
  Promise.all(
    workers.map((w) =>
      registry.heartbeat({
        id: w.id,
        url: w.url,
        base_model: v.model,
        model_config: {},
        max_lora_rank: 64,
        capacity: { adapter_slots: 8, host_adapters: 64, kv_blocks: 512, max_batch_tokens: 512 },
        load: { running: 0, waiting: 0, kv_free_blocks: 512 },
        resident_adapters: [],
        draining: false,
      }),
    ),
  );
await heartbeat();
const timer = setInterval(heartbeat, 2000);

const app = new Hono();
async function forwardToWorker(c) {
  const body = await c.req.json();
  const route = c.req.path;
  return router.forward({
    path: route,
    body,
    baseModel: v.model,
    signal: c.req.raw.signal,
    onUsage: (u) =>
      usage.record({
        tenantId: 'tn_bench',
        adapterId: null,
        adapterRef: null,
        baseModel: v.model,
        route,
        status: u.status,
        promptTokens: u.promptTokens,
        completionTokens: u.completionTokens,
        latencyMs: u.latencyMs,
      }),
  });
}
for (const p of ['/v1/completions', '/v1/chat/completions', '/generate', '/generate_stream'])
  app.post(p, forwardToWorker);

const server = serve({ fetch: app.fetch, port: Number(v.port), hostname: '127.0.0.1' }, (info) =>
  console.log(JSON.stringify({ event: 'listening', port: info.port })),
);
const stop = async () => {
  clearInterval(timer);
  server.close();
  router.close();
  await usage.close();
  await registry.close();
  await pglite.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
