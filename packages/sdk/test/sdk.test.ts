// The SDK against real servers: a worker process on the fixture model (generate, stream, chat,
// models, typed errors from its real responses), and small node:http servers for retries,
// Retry-After, timeouts and dropped connections.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Engine } from '@loraplex/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnWorker, type WorkerProcess } from '../../../apps/worker/test/helpers/process.js';
import { adaptersDir, modelDir } from '../../../apps/worker/test/helpers/http.js';
import {
  ConnectionError,
  Loraplex,
  NotFoundError,
  OverloadedError,
  RateLimitError,
  TimeoutError,
  ValidationError,
} from '../src/index.js';

let worker: WorkerProcess;
let client: Loraplex;
let engine: Engine;

beforeAll(async () => {
  ensureBuilt();
  worker = await spawnWorker([
    '--model',
    modelDir('llama'),
    '--adapter-dir',
    adaptersDir('llama'),
    '--served-model-name',
    'tiny-llama',
    '--threads',
    '1',
    '--backend',
    'cpu',
  ]);
  client = new Loraplex({ baseURL: worker.url });
  engine = await Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 });
  for (const a of ['lora_all_r8', 'lora_qv_r4']) await engine.loadAdapter(a, join(adaptersDir('llama'), a));
});

afterAll(async () => {
  worker?.child.kill('SIGTERM');
  await worker?.exited;
  await engine?.close();
});

async function reference(prompt: string, adapter: string | undefined, maxTokens: number): Promise<string> {
  const [g] = await engine.generate([
    { prompt, ...(adapter ? { adapter } : {}), sampling: { maxTokens, temperature: 0 } },
  ]);
  return g!.text;
}

describe('against a real worker', () => {
  it.each(['lora_all_r8', 'lora_qv_r4', undefined])(
    "generate (%s) gives Engine.generate's greedy text, with counts and token details",
    async (adapterId) => {
      const r = await client.generate('The license', {
        ...(adapterId ? { adapterId } : {}),
        maxNewTokens: 10,
        details: true,
      });
      expect(r.text).toBe(await reference('The license', adapterId, 10));
      expect(r.generatedTokens).toBe(r.tokens!.length);
      expect(r.promptTokens).toBeGreaterThan(0);
      expect(['length', 'eos_token', 'stop_sequence']).toContain(r.finishReason);
    },
  );

  it('generateStream yields every token, then the final text and details', async () => {
    const events = [];
    for await (const e of client.generateStream('The license', { adapterId: 'lora_all_r8', maxNewTokens: 10 }))
      events.push(e);
    const final = events[events.length - 1]!.final!;
    expect(final.text).toBe(await reference('The license', 'lora_all_r8', 10));
    // Token texts are incremental: a character split across tokens comes with its last byte, and a
    // trailing partial character only in the final text.
    expect(
      final.text.startsWith(
        events
          .filter((e) => !e.token.special)
          .map((e) => e.token.text)
          .join(''),
      ),
    ).toBe(true);
    expect(final.generatedTokens).toBe(events.length);
  });

  it('chat answers through the chat template', async () => {
    const r = await client.chat([{ role: 'user', content: 'Hi' }], { adapterId: 'lora_qv_r4', maxNewTokens: 5 });
    expect(r.message.role).toBe('assistant');
    expect(typeof r.message.content).toBe('string');
    expect(r.completionTokens).toBeGreaterThan(0);
  });

  it("chatStream's deltas add up to chat's greedy text, with the usage last", async () => {
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    const whole = await client.chat(messages, { adapterId: 'lora_all_r8', maxNewTokens: 8, temperature: 0 });
    let text = '';
    let usage;
    for await (const e of client.chatStream(messages, { adapterId: 'lora_all_r8', maxNewTokens: 8, temperature: 0 })) {
      text += e.delta;
      usage = e.usage ?? usage;
    }
    expect(text).toBe(whole.message.content);
    expect(usage).toEqual({ promptTokens: whole.promptTokens, completionTokens: whole.completionTokens });
  });

  it('models.list lists the base model and the adapters', async () => {
    const ids = (await client.models.list()).map((m) => m.id);
    expect(ids).toEqual(['tiny-llama', 'lora_all_r8', 'lora_qkvo_r16_rslora', 'lora_qv_r4']);
  });

  it('maps real error responses to typed errors', async () => {
    const notFound = await client.generate('x', { adapterId: 'nope' }).catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(NotFoundError);
    expect((notFound as NotFoundError).status).toBe(404);
    expect((notFound as Error).message).toMatch(/nope/);
    const invalid = await client.generate('x', { maxNewTokens: 100_000 }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(ValidationError);
    expect((invalid as ValidationError).status).toBe(400);
  });
});

describe('retries, timeouts, connections', () => {
  const servers: Server[] = [];
  afterAll(() =>
    Promise.all(
      servers.map(
        (s) =>
          new Promise((r) => {
            s.closeAllConnections();
            s.close(r);
          }),
      ),
    ),
  );
  async function serve(
    answers: Array<{ status: number; headers?: Record<string, string>; body?: unknown } | 'hang'>,
  ): Promise<{ url: string; hits: () => number }> {
    let hits = 0;
    const s = createServer((req, res) => {
      req.resume();
      const a = answers[Math.min(hits++, answers.length - 1)]!;
      if (a === 'hang') return;
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers }).end(JSON.stringify(a.body ?? {}));
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, hits: () => hits };
  }
  const ok = {
    status: 200,
    body: { generated_text: 'fine', details: { finish_reason: 'length', prompt_tokens: 1, generated_tokens: 1 } },
  };

  it('retries a 429, honouring Retry-After, then succeeds', async () => {
    const s = await serve([
      {
        status: 429,
        headers: { 'retry-after': '1' },
        body: { error: { message: 'slow down', type: 'rate_limit_error', code: 'tpm' } },
      },
      ok,
    ]);
    const t0 = Date.now();
    const r = await new Loraplex({ baseURL: s.url, apiKey: 'k' }).generate('x');
    expect(r.text).toBe('fine');
    expect(s.hits()).toBe(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  });

  it('retries a 503 with backoff, then succeeds', async () => {
    const s = await serve([{ status: 503, body: { error: { message: 'no worker', type: 'overloaded_error' } } }, ok]);
    expect((await new Loraplex({ baseURL: s.url, backoffMs: 10 }).generate('x')).text).toBe('fine');
    expect(s.hits()).toBe(2);
  });

  it('gives up after maxRetries with the typed error and its retryAfter', async () => {
    const s = await serve([
      {
        status: 429,
        headers: { 'retry-after': '0' },
        body: { error: { message: 'slow down', type: 'rate_limit_error' } },
      },
    ]);
    const e = await new Loraplex({ baseURL: s.url, maxRetries: 1 }).generate('x').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(RateLimitError);
    expect((e as RateLimitError).retryAfter).toBe(0);
    expect(s.hits()).toBe(2);
    const s2 = await serve([{ status: 503, headers: { 'retry-after': '7' }, body: { error: { message: 'busy' } } }]);
    const e2 = await new Loraplex({ baseURL: s2.url, maxRetries: 0 }).generate('x').catch((err: unknown) => err);
    expect(e2).toBeInstanceOf(OverloadedError);
    expect((e2 as OverloadedError).retryAfter).toBe(7);
  });

  it('times out a server that never answers', async () => {
    const s = await serve(['hang']);
    const e = await new Loraplex({ baseURL: s.url, timeout: 200, maxRetries: 0 })
      .generate('x')
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TimeoutError);
  });

  it('an AbortSignal cancels the request', async () => {
    const s = await serve(['hang']);
    const ctrl = new AbortController();
    setTimeout(() => ctrl.abort(new Error('user cancelled')), 50);
    const e = await new Loraplex({ baseURL: s.url })
      .generate('x', { signal: ctrl.signal })
      .catch((err: unknown) => err);
    expect((e as Error).message).toBe('user cancelled');
  });

  it('a closed port is a ConnectionError (after its retries)', async () => {
    const s = await serve([ok]);
    const url = s.url;
    const srv = servers.pop()!;
    await new Promise((r) => srv.close(r));
    const e = await new Loraplex({ baseURL: url, maxRetries: 1, backoffMs: 5 })
      .generate('x')
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ConnectionError);
  });
});
