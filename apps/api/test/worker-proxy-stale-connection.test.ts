// Node's keep-alive race (the worker closes an idle connection just as the router reuses it) with a
// worker stand-in that resets every connection on its second request, before reading it: the
// client reports StaleConnectionError (not a worker failure), and the router sends the request again
// and keeps the worker in routing (a reset used to mark the only worker failed, and every request
// got 503 no_healthy_worker until its next heartbeat).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerRegistry } from '../src/worker-proxy/registry.js';
import { Router } from '../src/worker-proxy/router.js';
import { StaleConnectionError, workerHttpClient } from '../src/worker-proxy/worker-http.js';
import { openPgliteTestDb, type TestDb } from './helpers/routing-db.js';
import { BASE_MODEL, heartbeatFor, WORKER_SECRET } from './helpers/routing-workers.js';

const ANSWER = JSON.stringify({
  id: 'cmpl-1',
  object: 'text_completion',
  created: 0,
  model: BASE_MODEL,
  choices: [{ index: 0, text: 'ok', finish_reason: 'length', logprobs: null }],
  usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
});

let server: net.Server;
let url: string;
let resets = 0;
let answered = 0;

beforeAll(async () => {
  server = net.createServer((socket) => {
    let requests = 0;
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      // One request per complete head + body (the bodies here are small and arrive with the head).
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        buf = buf.slice(end + 4 + length);
        if (++requests === 2) {
          resets++;
          socket.resetAndDestroy();
          return;
        }
        answered++;
        socket.write(
          `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(ANSWER)}\r\nconnection: keep-alive\r\n\r\n${ANSWER}`,
        );
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('a keep-alive connection the worker closed', () => {
  it('rejects the request sent on it with StaleConnectionError', async () => {
    const client = workerHttpClient();
    try {
      const first = await client.post(`${url}/v1/completions`, {}, '{}', new AbortController().signal);
      expect(first.status).toBe(200);
      await first.text();
      const second = client.post(`${url}/v1/completions`, {}, '{}', new AbortController().signal);
      await expect(second).rejects.toBeInstanceOf(StaleConnectionError);
    } finally {
      client.close();
    }
  });

  it('is not a worker failure: the router sends the request again and the worker stays healthy', async () => {
    let t: TestDb | undefined;
    let registry: WorkerRegistry | undefined;
    let router: Router | undefined;
    try {
      t = await openPgliteTestDb();
      registry = new WorkerRegistry(t.db, { staleAfterMs: 600_000 });
      await registry.heartbeat(heartbeatFor('wk_stale', url));
      router = new Router(registry, { secret: WORKER_SECRET });
      const resetsBefore = resets;
      for (let i = 0; i < 4; i++) {
        const statuses: number[] = [];
        const res = await router.forward({
          path: '/v1/completions',
          body: { model: BASE_MODEL, prompt: 'hi', max_tokens: 1 },
          baseModel: BASE_MODEL,
          onUsage: (u) => statuses.push(u.status),
        });
        expect(res.status).toBe(200);
        expect(statuses).toEqual([200]);
        expect(registry.healthy(BASE_MODEL).map((w) => w.id)).toEqual(['wk_stale']);
      }
      // Every second request on a connection was reset, and each was sent again.
      expect(resets - resetsBefore).toBeGreaterThanOrEqual(3);
    } finally {
      router?.close();
      await registry?.close();
      await t?.close();
    }
  });
});
