// GET /ready, the readiness probe: ready while the model is loaded and the scheduler loop makes
// progress (or is idle), 503 with a reason while draining or when running sequences see no step
// for stallMs. Judged on an injected clock; one real worker checks that the probe needs no credentials.
import { ManualClock } from '@loraplex/common';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ready } from '../src/server/routes/info.js';
import type { WorkerEnv } from '../src/server/types.js';
import type { WorkerContext } from '../src/worker-context.js';
import { createWorker, type Worker } from '../src/worker.js';
import { modelDir } from './helpers/http.js';

interface FakeScheduler {
  steps: number;
  runningCount: number;
  waitingCount: number;
  isAccepting: boolean;
}

function probe(stallMs = 30_000) {
  const scheduler: FakeScheduler = { steps: 0, runningCount: 0, waitingCount: 0, isAccepting: true };
  const clock = new ManualClock(1000);
  const ctx = { modelId: 'tiny', scheduler } as unknown as WorkerContext;
  const app = new Hono<WorkerEnv>();
  app.get('/ready', ready(ctx, { clock, stallMs }));
  const get = async (): Promise<{ status: number; body: any }> => {
    const r = await app.request('/ready');
    return { status: r.status, body: await r.json() };
  };
  return { scheduler, clock, get };
}

describe('worker readiness on an injected clock', () => {
  it('is ready while idle, however long it stays idle', async () => {
    const p = probe();
    expect(await p.get()).toEqual({
      status: 200,
      body: { status: 'ready', model: 'tiny', running: 0, waiting: 0, steps: 0 },
    });
    p.clock.advance(3_600_000);
    expect((await p.get()).status).toBe(200);
  });

  it('stays ready while running sequences make progress', async () => {
    const p = probe();
    p.scheduler.runningCount = 2;
    expect((await p.get()).status).toBe(200);
    for (let i = 0; i < 5; i++) {
      p.clock.advance(20_000);
      p.scheduler.steps += 1;
      expect((await p.get()).status).toBe(200);
    }
  });

  it('answers 503 stalled when running sequences see no step for stallMs, and recovers', async () => {
    const p = probe();
    p.scheduler.runningCount = 1;
    await p.get();
    p.clock.advance(29_999);
    expect((await p.get()).status).toBe(200);
    p.clock.advance(1);
    const stalled = await p.get();
    expect(stalled.status).toBe(503);
    expect(stalled.body.status).toBe('stalled');
    expect(stalled.body.reason).toMatch(/no step in 30 s with 1 sequences running/);
    p.scheduler.steps += 1;
    expect((await p.get()).status).toBe(200);
  });

  it('does not count sequences only waiting (an adapter loading) as a stall', async () => {
    const p = probe();
    p.scheduler.waitingCount = 3;
    p.clock.advance(120_000);
    expect((await p.get()).status).toBe(200);
  });

  it('answers 503 draining once the worker stops accepting', async () => {
    const p = probe();
    p.scheduler.isAccepting = false;
    const r = await p.get();
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ status: 'draining', reason: 'the worker is shutting down' });
  });
});

describe('GET /ready on a real worker', () => {
  let worker: Worker;
  beforeAll(async () => {
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny-llama',
      backend: 'cpu',
      threads: 1,
      workerSecret: 'ready-test-secret',
    });
  });
  afterAll(async () => {
    await worker?.shutdown();
  });

  it('answers without credentials (a probe), ready, then 503 while draining', async () => {
    expect((await worker.app.request('/v1/models')).status).toBe(401);
    const r = await worker.app.request('/ready');
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: 'ready', model: 'tiny-llama', running: 0 });
    // What shutdown() does first (after stopping heartbeats): stop accepting.
    const drained = worker.scheduler.drain();
    expect((await worker.app.request('/ready')).status).toBe(503);
    await drained;
  });
});
