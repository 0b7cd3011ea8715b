// The Router over two real worker processes on the fixture model: answers equal the worker's own,
// usage (streaming and not, OpenAI and LoRAX) equals the worker's counts and lands in usage_events,
// forced usage is removed from what the client sees, adapter traffic sticks to its rendezvous
// worker, and the signed descriptor and rewritten body are what a worker receives.
import { createServer, type IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usageEvents } from '../src/db/schema.js';
import { SIGNATURE_HEADER, verifyRequestSignature } from '@loraplex/protocol';
import { verifyDescriptor } from '../src/worker-proxy/descriptor.js';
import { WorkerRegistry } from '../src/worker-proxy/registry.js';
import { Router } from '../src/worker-proxy/router.js';
import { UsageRecorder } from '../src/worker-proxy/usage-recorder.js';
import { adapterId, adapterTarget, post, serveRouter, type RoutingServer } from './helpers/routing-app.js';
import { createTenant, openPgliteTestDb, type TestDb } from './helpers/routing-db.js';
import {
  BASE_MODEL,
  heartbeatFor,
  postToWorker,
  sseData,
  startWorker,
  until,
  WORKER_SECRET,
  type WorkerProcess,
} from './helpers/routing-workers.js';

const SECRET = WORKER_SECRET;
let t: TestDb;
let workers: WorkerProcess[];
let registry: WorkerRegistry;
let router: Router;
let api: RoutingServer;

beforeAll(async () => {
  t = await openPgliteTestDb();
  workers = await Promise.all([startWorker('wk_a'), startWorker('wk_b')]);
  registry = new WorkerRegistry(t.db, { staleAfterMs: 600_000 });
  for (const w of workers) await registry.heartbeat(heartbeatFor(w.id, w.url));
  router = new Router(registry, { secret: SECRET });
  api = await serveRouter(router);
});

afterAll(async () => {
  await api?.close();
  router?.close();
  await Promise.all((workers ?? []).map((w) => w.kill('SIGTERM')));
  await registry?.close();
  await t?.close();
});

const lastUsage = () => api.usage[api.usage.length - 1]!;
const withoutIds = (b: Record<string, unknown>) => ({ ...b, id: undefined, created: undefined });

describe('non-streaming answers', () => {
  it.each(['lora_all_r8', BASE_MODEL])("OpenAI completions (%s): the worker's answer and its usage", async (model) => {
    const body = { model, prompt: 'The quick brown fox', max_tokens: 12, ignore_eos: true, temperature: 0 };
    const viaApi = await post(`${api.url}/v1/completions`, body);
    expect(viaApi.status).toBe(200);
    const got = (await viaApi.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    const direct = (await (await postToWorker(workers[0]!, '/v1/completions', body)).json()) as Record<string, unknown>;
    expect(withoutIds(got)).toEqual(withoutIds(direct));
    expect(got.usage.completion_tokens).toBe(12);
    expect(lastUsage()).toMatchObject({
      promptTokens: got.usage.prompt_tokens,
      completionTokens: 12,
      status: 200,
      adapter: model === BASE_MODEL ? null : adapterId(model),
    });
    expect(lastUsage().latencyMs).toBeGreaterThan(0);
  });

  it("LoRAX /generate: counts from the worker's headers, details passed through only when asked for", async () => {
    const plain = await post(`${api.url}/generate`, {
      inputs: 'Hello there',
      parameters: { adapter_id: 'lora_qv_r4', max_new_tokens: 7, ignore_eos_token: true },
    });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('x-generated-tokens')).toBe('7');
    const b1 = (await plain.json()) as Record<string, unknown>;
    expect(b1.details).toBeUndefined();
    const prompt = Number(plain.headers.get('x-prompt-tokens'));
    expect(lastUsage()).toMatchObject({
      promptTokens: prompt,
      completionTokens: 7,
      status: 200,
      adapter: adapterId('lora_qv_r4'),
    });
    const detailed = (await (
      await post(`${api.url}/`, {
        inputs: 'Hello there',
        parameters: { adapter_id: 'lora_qv_r4', max_new_tokens: 7, ignore_eos_token: true, details: true },
      })
    ).json()) as Array<{ details: { prompt_tokens: number; generated_tokens: number } }>;
    expect(detailed[0]!.details).toMatchObject({ prompt_tokens: prompt, generated_tokens: 7 });
    expect(lastUsage()).toMatchObject({ promptTokens: prompt, completionTokens: 7, path: '/' });
  });

  it('passes worker errors through with their status and records them', async () => {
    const r = await post(`${api.url}/v1/completions`, { model: BASE_MODEL, prompt: 'x', max_tokens: -3 });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    expect(lastUsage()).toMatchObject({ status: 400, promptTokens: 0, completionTokens: 0 });
  });
});

describe('streaming answers', () => {
  it.each([false, true])(
    'OpenAI completions stream (include_usage %s): usage recorded, shown only when asked for',
    async (include) => {
      const body = {
        model: 'lora_all_r8',
        prompt: 'Once upon a time',
        max_tokens: 20,
        ignore_eos: true,
        temperature: 0,
        stream: true,
        ...(include ? { stream_options: { include_usage: true } } : {}),
      };
      const r = await post(`${api.url}/v1/completions`, body);
      expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events = sseData(await r.text());
      expect(events[events.length - 1]).toBe('[DONE]');
      const direct = sseData(
        await (
          await postToWorker(workers[1]!, '/v1/completions', { ...body, stream_options: { include_usage: true } })
        ).text(),
      );
      const workerUsage = (direct[direct.length - 2] as { usage: { prompt_tokens: number; completion_tokens: number } })
        .usage;
      expect(workerUsage.completion_tokens).toBe(20);
      const usageChunks = events.filter((e) => typeof e === 'object' && 'usage' in e);
      expect(usageChunks).toEqual(include ? [expect.objectContaining({ usage: workerUsage, choices: [] })] : []);
      const text = (evs: typeof events) =>
        evs.map((e) => (typeof e === 'object' ? ((e.choices as Array<{ text: string }>)[0]?.text ?? '') : '')).join('');
      expect(text(events)).toBe(text(direct));
      expect(lastUsage()).toMatchObject({ promptTokens: workerUsage.prompt_tokens, completionTokens: 20, status: 200 });
    },
  );

  it('OpenAI chat stream: usage recorded without showing it', async () => {
    const body = {
      model: BASE_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 9,
      ignore_eos: true,
      stream: true,
    };
    const events = sseData(await (await post(`${api.url}/v1/chat/completions`, body)).text());
    expect(events.some((e) => typeof e === 'object' && 'usage' in e)).toBe(false);
    const direct = (await (
      await postToWorker(workers[0]!, '/v1/chat/completions', { ...body, stream: false })
    ).json()) as { usage: { prompt_tokens: number } };
    expect(lastUsage()).toMatchObject({
      promptTokens: direct.usage.prompt_tokens,
      completionTokens: 9,
      status: 200,
      path: '/v1/chat/completions',
    });
  });

  it.each([false, true])(
    'LoRAX /generate_stream (details %s): counts from the forced details, hidden when not asked for',
    async (details) => {
      const body = {
        inputs: 'In a hole in the ground',
        parameters: {
          adapter_id: 'lora_qkvo_r16_rslora',
          max_new_tokens: 11,
          ignore_eos_token: true,
          ...(details ? { details: true } : {}),
        },
      };
      const events = sseData(await (await post(`${api.url}/generate_stream`, body)).text()) as Array<
        Record<string, unknown>
      >;
      expect(events).toHaveLength(11);
      const last = events[10]!;
      expect(typeof last.generated_text).toBe('string');
      const direct = sseData(
        await (
          await postToWorker(workers[0]!, '/generate_stream', {
            ...body,
            parameters: { ...body.parameters, details: true },
          })
        ).text(),
      ) as Array<Record<string, unknown>>;
      const d = direct[direct.length - 1]!.details as { prompt_tokens: number; generated_tokens: number };
      expect(d.generated_tokens).toBe(11);
      expect(last.details).toEqual(details ? direct[direct.length - 1]!.details : null);
      expect(last.generated_text).toBe(direct[direct.length - 1]!.generated_text);
      expect(lastUsage()).toMatchObject({
        promptTokens: d.prompt_tokens,
        completionTokens: 11,
        status: 200,
        adapter: adapterId('lora_qkvo_r16_rslora'),
      });
    },
  );
});

describe('usage rows', () => {
  it('every forwarded request becomes a usage_events row with its counts (flushed by close)', async () => {
    const tenant = await createTenant(t.db);
    const rec = new UsageRecorder(t.db, { flushMs: 60_000, maxBatch: 100 });
    const before = api.usage.length;
    await post(`${api.url}/v1/completions`, {
      model: 'lora_all_r8',
      prompt: 'abc',
      max_tokens: 5,
      ignore_eos: true,
    }).then((r) => r.text());
    await post(`${api.url}/generate_stream`, {
      inputs: 'abc',
      parameters: { max_new_tokens: 4, ignore_eos_token: true },
    }).then((r) => r.text());
    for (const u of api.usage.slice(before)) {
      rec.record({
        tenantId: tenant,
        adapterId: u.adapter,
        adapterRef: u.adapter && `${u.adapter}@1`,
        baseModel: BASE_MODEL,
        route: u.path,
        status: u.status,
        promptTokens: u.promptTokens,
        completionTokens: u.completionTokens,
        latencyMs: u.latencyMs,
      });
    }
    await rec.close();
    const rows = (await t.db.select().from(usageEvents)).sort((a, b) => a.id - b.id);
    expect(rows.map((r) => [r.route, r.adapterId, r.completionTokens, r.status])).toEqual([
      ['/v1/completions', adapterId('lora_all_r8'), 5, 200],
      ['/generate_stream', null, 4, 200],
    ]);
    expect(rows.every((r) => r.promptTokens > 0 && r.latencyMs > 0)).toBe(true);
  });
});

describe('worker choice', () => {
  it("sends an adapter's requests to its rendezvous worker, and spreads base requests", async () => {
    const seen = new Map<string, Set<string>>();
    for (let i = 0; i < 12; i++) {
      for (const model of ['lora_all_r8', 'lora_qv_r4', BASE_MODEL]) {
        await (await post(`${api.url}/v1/completions`, { model, prompt: 'x', max_tokens: 1 })).text();
        const set = seen.get(model) ?? new Set();
        set.add(lastUsage().workerId!);
        seen.set(model, set);
      }
    }
    expect(seen.get('lora_all_r8')!.size).toBe(1);
    expect(seen.get('lora_qv_r4')!.size).toBe(1);
    expect([...seen.get('lora_all_r8')!][0]).toBe(router.order(BASE_MODEL, adapterId('lora_all_r8'))[0]!.id);
    // Base requests: least loaded, ties at random; 12 sequential requests use both workers.
    expect(seen.get(BASE_MODEL)!.size).toBe(2);
  });

  it('keeps an adapter on the worker it last sent it to until a heartbeat says where it is, even with requests in flight there', async () => {
    // Two capture workers that hold every answer until released: requests stay in flight.
    const held: Array<() => void> = [];
    const hits = new Map<string, number>();
    const servers = await Promise.all(
      ['wk_h1', 'wk_h2'].map(async (id) => {
        const s = createServer((req, res) => {
          req.resume();
          req.on('end', () => {
            hits.set(id, (hits.get(id) ?? 0) + 1);
            held.push(() =>
              res
                .writeHead(200, { 'content-type': 'application/json' })
                .end('{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}'),
            );
          });
        });
        await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
        return { id, s, url: `http://127.0.0.1:${(s.address() as { port: number }).port}` };
      }),
    );
    const reg = new WorkerRegistry(t.db);
    const target = { ...adapterTarget('lora_all_r8'), id: 'ad_affinity0000000000', baseModel: 'hold-model' };
    // Both hold the adapter in host memory only.
    for (const w of servers)
      await reg.heartbeat({
        ...heartbeatFor(w.id, w.url, { baseModel: 'hold-model' }),
        host_adapters: [target.id],
        slot_adapters: [],
      });
    const r = new Router(reg, { secret: SECRET });
    const first = r.order('hold-model', target.id)[0]!.id;
    const pending = Array.from({ length: 4 }, () =>
      r
        .forward({
          path: '/v1/completions',
          body: { model: 'x', prompt: 'x' },
          adapter: target,
          baseModel: 'hold-model',
        })
        .then((res) => res.text()),
    );
    await until(() => held.length === 4, 5000, 'four requests held');
    // Without the hint the 4th request (3 in flight on `first`, cost 3 + 4 > 0 + 4 + 2) would have spilled.
    expect(hits.get(first)).toBe(4);
    held.splice(0).forEach((release) => release());
    await Promise.all(pending);
    await reg.close();
    await Promise.all(servers.map(({ s }) => new Promise((res2) => s.close(res2))));
  });

  it('answers 503 with Retry-After when no worker serves the base model', async () => {
    const r = await router.forward({
      path: '/v1/completions',
      body: { model: 'other', prompt: 'x' },
      baseModel: 'other-model',
    });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('2');
    expect(await r.json()).toEqual({
      error: {
        message: expect.stringContaining('no healthy worker'),
        type: 'overloaded_error',
        code: 'no_healthy_worker',
      },
    });
  });
});

describe('what a worker receives', () => {
  it('a signed descriptor of the adapter, the adapter id in the body, and usage forced on', async () => {
    const seen: Array<{ req: IncomingMessage; body: Record<string, unknown>; raw: string }> = [];
    // Records the request and answers like a worker would; it checks the router's side of the wire.
    const capture = createServer((req, res) => {
      let data = '';
      req.on('data', (d: Buffer) => (data += d.toString()));
      req.on('end', () => {
        seen.push({ req, body: JSON.parse(data) as Record<string, unknown>, raw: data });
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(
          'data: {"token":{"id":5,"text":"a","logprob":null,"special":false},"generated_text":"a","details":{"finish_reason":"length","prompt_tokens":3,"generated_tokens":1,"seed":null}}\n\n',
        );
      });
    });
    await new Promise<void>((r) => capture.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(capture.address() as { port: number }).port}`;
    const reg = new WorkerRegistry(t.db);
    await reg.heartbeat(heartbeatFor('wk_capture', url, { baseModel: 'capture-model' }));
    const r = new Router(reg, { secret: SECRET, descriptorTtlS: 120 });
    const target = { ...adapterTarget('lora_all_r8'), id: 'ad_0123456789abcdef01', baseModel: 'capture-model' };
    const res = await r.forward({
      path: '/generate_stream',
      body: { inputs: 'x', parameters: { adapter_id: 'my-adapter@3', max_new_tokens: 1 } },
      adapter: target,
      baseModel: 'capture-model',
    });
    const events = sseData(await res.text()) as Array<Record<string, unknown>>;
    expect(events[0]!.details).toBeNull();
    const { req, body, raw } = seen[0]!;
    // Signed for this method, path and body (contract §1a).
    expect(
      verifyRequestSignature(String(req.headers[SIGNATURE_HEADER]), SECRET, 'POST', '/generate_stream', raw),
    ).toMatchObject({ ok: true });
    expect(body.parameters).toEqual({ adapter_id: 'ad_0123456789abcdef01', max_new_tokens: 1, details: true });
    const d = verifyDescriptor(String(req.headers['x-loraplex-adapter']), SECRET);
    expect(d).toEqual({
      v: 1,
      id: target.id,
      base_model: 'capture-model',
      rank: 8,
      storage: target.storage,
      files: target.files,
      exp: expect.any(Number),
    });
    expect(d!.exp - Date.now() / 1000).toBeGreaterThan(100);
    // Base requests carry no descriptor and name the base model.
    await (
      await r.forward({
        path: '/v1/completions',
        body: { model: 'whatever', prompt: 'x', stream: true },
        baseModel: 'capture-model',
      })
    ).text();
    expect(seen[1]!.req.headers['x-loraplex-adapter']).toBeUndefined();
    expect(seen[1]!.body).toEqual({
      model: 'capture-model',
      prompt: 'x',
      stream: true,
      stream_options: { include_usage: true },
    });
    await reg.close();
    await new Promise((res2) => capture.close(res2));
  });
});
