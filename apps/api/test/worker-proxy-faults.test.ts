// Fault handling with real worker processes: a worker killed (kill -9) before a request is skipped;
// one killed mid-stream gives the client a clean final error event and the next request goes to
// another worker; a client that disconnects cancels the sequence on the worker (KV blocks freed).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerRegistry } from '../src/worker-proxy/registry.js';
import type { Router } from '../src/worker-proxy/router.js';
import { post, type RoutingServer } from './helpers/routing-app.js';
import { startRoutingHarness, type RoutingHarness } from './helpers/routing-harness.js';
import { BASE_MODEL, heartbeatFor, sseData, startWorker, until, workerMetric } from './helpers/routing-workers.js';

let h: RoutingHarness;
let registry: WorkerRegistry;
let router: Router;
let api: RoutingServer;

beforeAll(async () => {
  h = await startRoutingHarness();
  ({ registry, router, api } = h);
});

afterEach(() => h.stopWorkers());

afterAll(() => h?.close());

const twoWorkers = (tag: string, adapter: string) => h.twoWorkers(tag, adapter);

/** Reads an SSE response until `n` events arrived; returns them and the reader for the rest. */
async function readEvents(res: Response, n: number) {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (text.split('\n\n').length - 1 < n) {
    const r = await reader.read();
    if (r.done) break;
    text += dec.decode(r.value, { stream: true });
  }
  const rest = async (): Promise<string> => {
    for (;;) {
      const r = await reader.read();
      if (r.done) return text;
      text += dec.decode(r.value, { stream: true });
    }
  };
  return { reader, rest };
}

const longStream = (model: string) => ({
  model,
  prompt: 'a b c',
  max_tokens: 240,
  ignore_eos: true,
  temperature: 0,
  n: 16,
  stream: true,
});

describe('worker failures', () => {
  it('skips a worker killed before the request and keeps it out until it heartbeats again', async () => {
    const [first, second] = await twoWorkers('pre', 'lora_all_r8');
    await first.kill('SIGKILL');
    const r = await post(`${api.url}/v1/completions`, {
      model: 'lora_all_r8',
      prompt: 'hi',
      max_tokens: 3,
      temperature: 0,
    });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
    expect(api.usage[api.usage.length - 1]).toMatchObject({ workerId: second.id, status: 200 });
    expect(registry.healthy(BASE_MODEL).map((w) => w.id)).toEqual([second.id]);
  });

  it('ends the stream with an error event when its worker dies mid-stream; the next request goes to the other worker', async () => {
    const [first, second] = await twoWorkers('mid', 'lora_qv_r4');
    const res = await post(`${api.url}/v1/completions`, longStream('lora_qv_r4'));
    expect(res.status).toBe(200);
    const { rest } = await readEvents(res, 1);
    // Freeze the worker first so the stream cannot finish before the kill lands.
    first.child.kill('SIGSTOP');
    await first.kill('SIGKILL');
    const events = sseData(await rest());
    expect(events[events.length - 1]).toBe('[DONE]');
    expect(events[events.length - 2]).toEqual({
      error: { message: expect.stringMatching(/failed mid-stream/), type: 'server_error', code: 'worker_failed' },
    });
    const finished = events.filter(
      (e) =>
        typeof e === 'object' &&
        (e.choices as Array<{ finish_reason: string | null }> | undefined)?.some((c) => c.finish_reason),
    );
    expect(finished.length).toBeLessThan(16); // really cut short
    expect(api.usage[api.usage.length - 1]).toMatchObject({ workerId: first.id, status: 502 });

    const next = await post(`${api.url}/v1/completions`, {
      model: 'lora_qv_r4',
      prompt: 'hi',
      max_tokens: 2,
      temperature: 0,
      stream: true,
    });
    const after = sseData(await next.text());
    expect(after[after.length - 1]).toBe('[DONE]');
    expect(after.some((e) => typeof e === 'object' && 'error' in e)).toBe(false);
    expect(api.usage[api.usage.length - 1]).toMatchObject({ workerId: second.id, status: 200, completionTokens: 2 });
  });

  it('LoRAX streams end with a LoRAX-shaped error event when the worker dies', async () => {
    const [first] = await twoWorkers('lorax', 'lora_all_r8');
    const res = await post(`${api.url}/generate_stream`, {
      inputs: 'a b c',
      parameters: { adapter_id: 'lora_all_r8', max_new_tokens: 240, ignore_eos_token: true },
    });
    const { rest } = await readEvents(res, 1);
    first.child.kill('SIGSTOP');
    await first.kill('SIGKILL');
    const events = sseData(await rest()) as Array<Record<string, unknown>>;
    expect(events[events.length - 1]).toEqual({
      error: expect.objectContaining({ code: 'worker_failed' }),
      error_type: 'generation',
    });
    expect(events.filter((e) => typeof e.generated_text === 'string')).toEqual([]);
  });

  it('answers 503 with Retry-After when every worker is down', async () => {
    h.running = [await startWorker('wk_down_1')];
    await registry.heartbeat(heartbeatFor('wk_down_1', h.running[0]!.url));
    await h.running[0]!.kill('SIGKILL');
    const r = await post(`${api.url}/v1/completions`, { model: BASE_MODEL, prompt: 'hi', max_tokens: 1 });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('2');
    expect(((await r.json()) as { error: { type: string } }).error.type).toBe('overloaded_error');
  });
});

describe('client disconnect', () => {
  it('cancels the sequences on the worker and frees their KV blocks', async () => {
    const [first] = await twoWorkers('cancel', 'lora_all_r8');
    const total = await workerMetric(first.url, 'loraplex_kv_blocks_total');
    const ctrl = new AbortController();
    const res = await post(`${api.url}/v1/completions`, longStream('lora_all_r8'), { signal: ctrl.signal });
    await readEvents(res, 1);
    expect(await workerMetric(first.url, 'loraplex_kv_blocks_free')).toBeLessThan(total);
    ctrl.abort();
    await until(
      async () => (await workerMetric(first.url, 'loraplex_sequences_cancelled_total')) === 16,
      10_000,
      'cancellation on the worker',
    );
    await until(
      async () => (await workerMetric(first.url, 'loraplex_kv_blocks_free')) === total,
      10_000,
      'KV blocks freed',
    );
    expect(await workerMetric(first.url, 'loraplex_sequences_finished_total')).toBe(0);
    await until(() => api.usage[api.usage.length - 1]?.status === 499, 5000, 'usage of the cancelled request');
    expect(router.inFlightTo(first.id)).toBe(0);
  });
});
