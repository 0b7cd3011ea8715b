// Graceful stop of a real `loraplex-api serve` process (issue 11): SIGTERM while 50 keep-alive
// clients stream completions from a real worker. Every stream in flight completes, the next
// request on each keep-alive connection is still answered and carries `Connection: close`, worker
// heartbeats are still accepted during the drain, no request sees a 503, the process exits 0
// within the deadline, and the usage rows are exactly the requests answered.
import { Agent, request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../worker/test/helpers/http.js';
import { spawnApi, type ApiProcess } from './helpers/api-process.js';
import { ADMIN_KEY, openTestDb, type TestDb } from './helpers/setup.js';
import {
  BASE_MODEL,
  heartbeatFor,
  startWorker,
  until,
  WORKER_SECRET,
  type WorkerProcess,
} from './helpers/routing-workers.js';

const CLIENTS = 50;
const MAX_TOKENS = 100; // within the tiny model's 128-token context
const DEADLINE_S = 20;

interface StreamResult {
  status: number;
  connectionClose: boolean;
  done: boolean;
  /** completion_tokens of the stream's usage chunk. */
  tokens: number;
}

/** One streamed completion on the client's own keep-alive connection; `onFirst` fires with the first event. */
function streamOnce(url: string, key: string, agent: Agent, onFirst: () => void): Promise<StreamResult> {
  const body = JSON.stringify({
    model: BASE_MODEL,
    prompt: 'a b c',
    max_tokens: MAX_TOKENS,
    ignore_eos: true,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v1/completions`,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        let text = '';
        let first = true;
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
          if (first) {
            first = false;
            onFirst();
          }
        });
        res.on('end', () => {
          const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
          resolve({
            status: res.statusCode ?? 0,
            connectionClose: res.headers.connection === 'close',
            done: events.at(-1) === 'data: [DONE]',
            tokens:
              events
                .map((e) => /"completion_tokens":(\d+)/.exec(e))
                .filter((m) => m !== null)
                .map((m) => Number(m[1]))
                .at(-1) ?? -1,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A request on a connection of its own (fetch would reuse a pooled one). */
function onNewConnection(
  url: string,
  method: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

let db: TestDb;
let dataDir: string;
let api: ApiProcess;
let worker: WorkerProcess;

beforeAll(async () => {
  db = await openTestDb('postgres');
  dataDir = await mkdtemp(join(tmpdir(), 'lpx-graceful-'));
  const port = await freePort();
  api = await spawnApi(
    ['serve'],
    {
      DATABASE_URL: db.databaseUrl!,
      LORAPLEX_DATA_DIR: dataDir,
      PORT: String(port),
      LORAPLEX_ADMIN_KEY: ADMIN_KEY,
      LORAPLEX_WORKER_SECRET: WORKER_SECRET,
      LORAPLEX_SHUTDOWN_TIMEOUT_S: String(DEADLINE_S),
    },
    /listening on (http:\/\/\S+)/,
  );
  worker = await startWorker('wk_graceful', [
    '--api-url',
    api.url,
    '--worker-id',
    'wk_graceful',
    '--heartbeat-interval',
    '0.5',
    '--backend',
    'cpu',
    '--kv-cache-tokens',
    '16384',
  ]);
}, 120_000);

afterAll(async () => {
  if (api && api.child.exitCode === null && api.child.signalCode === null) api.child.kill('SIGKILL');
  await worker?.kill('SIGKILL');
  await db?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('SIGTERM under load', () => {
  it('finishes every in-flight stream, answers the next request with Connection: close, accepts heartbeats, exits 0 in time with exact usage', async () => {
    const admin = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
    const tenant = (await (
      await fetch(`${api.url}/v1/tenants`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ name: 'graceful' }),
      })
    ).json()) as { id: string };
    const { key } = (await (
      await fetch(`${api.url}/v1/keys`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ tenant_id: tenant.id }),
      })
    ).json()) as { key: string };
    await until(
      async () => {
        const r = await fetch(`${api.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
        return ((await r.json()) as { data: Array<{ id: string }> }).data.some((m) => m.id === BASE_MODEL);
      },
      30_000,
      'the worker registered',
    );

    let started = 0;
    let allStarted!: () => void;
    const streaming = new Promise<void>((res) => (allStarted = res));
    let streamingNow = 0;
    const clients = Array.from({ length: CLIENTS }, async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const results: StreamResult[] = [];
      try {
        // Requests follow each other on the one connection until an answer says Connection: close.
        for (let i = 0; i < 50; i++) {
          streamingNow++;
          const r = await streamOnce(api.url, key, agent, () => {
            if (i === 0 && ++started === CLIENTS) allStarted();
          }).finally(() => streamingNow--);
          results.push(r);
          if (r.connectionClose || r.status !== 200) break;
        }
      } finally {
        agent.destroy();
      }
      return results;
    });

    await streaming;
    const inFlightAtSignal = streamingNow;
    const t0 = performance.now();
    api.child.kill('SIGTERM');
    // Heartbeats still arrive, on a fresh connection, while the drain runs.
    const hb = await onNewConnection(
      `${api.url}/internal/workers/heartbeat`,
      'POST',
      { authorization: `Bearer ${WORKER_SECRET}`, 'content-type': 'application/json' },
      JSON.stringify(heartbeatFor('wk_graceful', worker.url)),
    );
    expect(hb.status).toBe(200);
    // A new client connection is refused politely while draining (not with no_healthy_worker).
    const late = await onNewConnection(`${api.url}/v1/models`, 'GET', { authorization: `Bearer ${key}` });
    expect(late.status).toBe(503);
    expect((JSON.parse(late.body) as { error: { code: string } }).error.code).toBe('shutting_down');

    const all = await Promise.all(clients);
    const exit = await api.exited;
    const elapsedS = (performance.now() - t0) / 1000;
    console.log(
      `[graceful-stop] ${CLIENTS} clients: exit ${exit.code} after ${elapsedS.toFixed(2)} s; ${inFlightAtSignal} streams in flight at the signal, requests per client ${[...new Set(all.map((r) => r.length))].join('/')}`,
    );

    expect(inFlightAtSignal).toBeGreaterThanOrEqual(CLIENTS / 2);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(elapsedS).toBeLessThan(DEADLINE_S);
    const flat = all.flat();
    expect(flat.filter((r) => r.status !== 200)).toEqual([]);
    expect(flat.filter((r) => !r.done || r.tokens !== MAX_TOKENS)).toEqual([]);
    for (const results of all) {
      // Answers before the drain keep the connection; the first one after it closes it.
      expect(results.map((r) => r.connectionClose)).toEqual([...results.slice(1).map(() => false), true]);
    }
    const rows = await db.db.execute(
      sql`select count(*)::int as n, sum(completion_tokens)::int as tokens, min(status) as lo, max(status) as hi from usage_events`,
    );
    expect(rows.rows[0]).toEqual({ n: flat.length, tokens: flat.length * MAX_TOKENS, lo: 200, hi: 200 });
  }, 120_000);
});
