// Timeouts on calls to workers (issue 11), with real worker processes: a worker frozen with
// SIGSTOP before it answers costs its client the first-byte timeout, then the request goes to the
// other worker; a worker frozen mid-stream ends its client's stream with an error event within
// the idle timeout while a stream on the other worker completes untouched.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { post } from './helpers/routing-app.js';
import { startRoutingHarness, type RoutingHarness } from './helpers/routing-harness.js';
import { BASE_MODEL, sseData } from './helpers/routing-workers.js';

const TIMEOUTS = { connectMs: 1000, firstByteMs: 1500, idleMs: 1500 };

let h: RoutingHarness;

beforeAll(async () => {
  h = await startRoutingHarness({ timeouts: TIMEOUTS });
});

// A frozen worker is resumed, then stopped by its PID.
afterEach(() => h.stopWorkers());

afterAll(() => h?.close());

/** Reads the first SSE event; `rest()` reads to the end and gives the whole text. */
async function firstEvent(res: Response) {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (!text.includes('\n\n')) {
    const r = await reader.read();
    if (r.done) break;
    text += dec.decode(r.value, { stream: true });
  }
  return {
    rest: async (): Promise<string> => {
      for (;;) {
        const r = await reader.read();
        if (r.done) return text;
        text += dec.decode(r.value, { stream: true });
      }
    },
  };
}

describe('a frozen worker', () => {
  it('costs the first-byte timeout, then the request is answered by the other worker', async () => {
    const [first, second] = await h.twoWorkers('head', 'lora_all_r8');
    first.child.kill('SIGSTOP');
    const t0 = performance.now();
    const r = await post(`${h.api.url}/v1/completions`, {
      model: 'lora_all_r8',
      prompt: 'hi',
      max_tokens: 3,
      temperature: 0,
    });
    const elapsed = performance.now() - t0;
    expect(r.status).toBe(200);
    expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
    expect(h.api.usage.at(-1)).toMatchObject({ workerId: second.id, status: 200 });
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUTS.firstByteMs);
    expect(elapsed).toBeLessThan(TIMEOUTS.firstByteMs + 5000);
    expect(h.registry.healthy(BASE_MODEL).map((w) => w.id)).toEqual([second.id]);
  });

  it('ends its streams with an error within the idle timeout; streams on the other worker complete', async () => {
    const [first, second] = await h.twoWorkers('idle', 'lora_qv_r4');
    const long = { prompt: 'a b c', max_tokens: 100, ignore_eos: true, temperature: 0, n: 16, stream: true };
    const onFirst = await post(`${h.api.url}/v1/completions`, { model: 'lora_qv_r4', ...long });
    const a = await firstEvent(onFirst);
    // The base model goes to the least loaded worker: the other one.
    const onSecond = await post(`${h.api.url}/v1/completions`, { model: BASE_MODEL, ...long });
    const b = await firstEvent(onSecond);
    first.child.kill('SIGSTOP');
    const t0 = performance.now();
    const [aText, bText] = await Promise.all([a.rest().then((x) => ({ x, ms: performance.now() - t0 })), b.rest()]);
    const aEvents = sseData(aText.x);
    expect(aEvents.at(-2)).toEqual({ error: expect.objectContaining({ code: 'worker_failed' }) });
    expect(aText.ms).toBeLessThan(TIMEOUTS.idleMs + 3000);
    const bEvents = sseData(bText);
    expect(bEvents.at(-1)).toBe('[DONE]');
    expect(bEvents.some((e) => typeof e === 'object' && 'error' in e)).toBe(false);
    const byWorker = Object.fromEntries(h.api.usage.slice(-2).map((u) => [u.workerId, u.status]));
    expect(byWorker).toEqual({ [first.id]: 502, [second.id]: 200 });
  });
});
