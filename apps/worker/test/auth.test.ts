// Workers trust only the platform (issue 11): on the real engine and the tiny fixtures, every
// request without a valid platform signature or API key gets one uniform 401 whatever it names,
// signatures are good once (their format is tested in packages/protocol), /health says nothing
// about adapters, a worker refuses to listen on a non-loopback address without credentials, and its
// heartbeat tells engine slots from the host tier.
import { spawnSync } from 'node:child_process';
import { ManualClock } from '@loraplex/common';
import { ReplayCache, SIGNATURE_HEADER, SIGNATURE_SKEW_S, signRequest } from '@loraplex/protocol';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertSafeBind, isLoopback } from '../src/serve.js';
import { authenticateCaller, UNAUTHORIZED_MESSAGE } from '../src/server/auth.js';
import { ApiError } from '../src/server/errors.js';
import type { WorkerEnv } from '../src/server/types.js';
import { callerCredentials, createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, platformHeaders } from './helpers/http.js';
import { CLI, ensureBuilt, spawnWorker } from './helpers/process.js';

const SECRET = 'worker-secret-for-auth-tests';
const HOT = 'lora_all_r8';
const MISSING = 'lora_that_does_not_exist';
const completion = (model: string): string => JSON.stringify({ model, prompt: 'hi', max_tokens: 2, temperature: 0 });
const generate = (adapter: string): string =>
  JSON.stringify({ inputs: 'hi', parameters: { adapter_id: adapter, max_new_tokens: 2 } });

/** Status, content type and body bytes: what a caller can tell apart. */
async function seen(r: Response | Promise<Response>): Promise<string> {
  const res = await r;
  return `${res.status} ${res.headers.get('content-type')} ${await res.text()}`;
}

describe('the caller check on an injected clock', () => {
  it('judges the signature window and replays by the clock it is given', async () => {
    const clock = new ManualClock(1_000_000_000_000);
    const app = new Hono<WorkerEnv>();
    app.onError((e) => new Response(null, { status: e instanceof ApiError ? e.status : 500 }));
    app.use('*', authenticateCaller({ secret: SECRET, apiKey: undefined, replays: new ReplayCache(), clock }));
    app.post('/x', (c) => c.text('ok'));
    const send = async (header: string): Promise<number> =>
      (await app.request('/x', { method: 'POST', body: 'b', headers: { [SIGNATURE_HEADER]: header } })).status;
    const first = signRequest(SECRET, 'POST', '/x', 'b', clock.now() / 1000);
    expect(await send(first)).toBe(200);
    expect(await send(first)).toBe(401); // replayed
    clock.advance((SIGNATURE_SKEW_S + 1) * 1000);
    expect(await send(signRequest(SECRET, 'POST', '/x', 'b', 1_000_000_000))).toBe(401); // stale on this clock
    expect(await send(signRequest(SECRET, 'POST', '/x', 'b', clock.now() / 1000))).toBe(200);
  });
});

describe('a worker with a worker secret (platform mode)', () => {
  let worker: Worker;
  const call = (method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Response> =>
    Promise.resolve(
      worker.app.request(path, {
        method,
        headers: { 'content-type': 'application/json', ...headers },
        ...(body === undefined ? {} : { body }),
      }),
    );
  const signed = (method: string, path: string, body = ''): Promise<Response> =>
    call(method, path, method === 'GET' ? undefined : body, platformHeaders(SECRET, method, path, body));

  beforeAll(async () => {
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterDir: adaptersDir('llama'),
      workerSecret: SECRET,
      backend: 'cpu',
      threads: 1,
      maxAdapters: 2,
    });
    // The adapter is hot: in a slot, in host memory, in the metrics.
    expect((await signed('POST', '/v1/completions', completion(HOT))).status).toBe(200);
    expect(worker.adapters.resident()).toContain(HOT);
  });
  afterAll(() => worker?.shutdown());

  it('serves signed requests, and lists models and metrics to the platform', async () => {
    expect((await signed('POST', '/generate', generate(HOT))).status).toBe(200);
    const models = (await (await signed('GET', '/v1/models')).json()) as { data: Array<{ id: string }> };
    expect(models.data.map((m) => m.id)).toContain(HOT);
    expect(await (await signed('GET', '/metrics')).text()).toContain(`adapter="${HOT}"`);
  });

  it('answers every unauthenticated caller one 401, byte-identical for a hot and a missing adapter', async () => {
    const now = Date.now() / 1000;
    const variants = (path: string, body: string): Array<[string, Record<string, string>]> => [
      ['none', {}],
      ['another secret', { [SIGNATURE_HEADER]: signRequest('not-the-secret', 'POST', path, body) }],
      ['stale', { [SIGNATURE_HEADER]: signRequest(SECRET, 'POST', path, body, now - SIGNATURE_SKEW_S - 5) }],
      ['from the future', { [SIGNATURE_HEADER]: signRequest(SECRET, 'POST', path, body, now + SIGNATURE_SKEW_S + 5) }],
      ['other body', { [SIGNATURE_HEADER]: signRequest(SECRET, 'POST', path, `${body} `) }],
      ['other path', { [SIGNATURE_HEADER]: signRequest(SECRET, 'POST', '/v1/chat/completions', body) }],
      ['other method', { [SIGNATURE_HEADER]: signRequest(SECRET, 'GET', path, body) }],
      ['malformed', { [SIGNATURE_HEADER]: 'v1,t=1,n=x,s=y' }],
      ['a bearer token', { authorization: `Bearer ${SECRET}` }],
    ];
    for (const [path, bodyOf] of [
      ['/v1/completions', completion],
      ['/generate', generate],
    ] as const) {
      const answers = new Set<string>();
      for (const adapter of [HOT, MISSING]) {
        for (const [what, headers] of variants(path, bodyOf(adapter))) {
          const r = await call('POST', path, bodyOf(adapter), headers);
          expect(r.status, `${path} ${adapter} ${what}`).toBe(401);
          answers.add(await seen(r));
        }
      }
      expect([...answers]).toHaveLength(1);
      expect([...answers][0]).toContain(UNAUTHORIZED_MESSAGE);
      expect([...answers][0]).not.toContain(HOT);
    }
    // The OpenAI and LoRAX families keep their own error shapes.
    expect(
      JSON.parse((await seen(call('POST', '/v1/completions', completion(HOT)))).split(' ').slice(2).join(' ')),
    ).toEqual({ error: { message: UNAUTHORIZED_MESSAGE, type: 'authentication_error', param: null, code: 401 } });
    expect(await (await call('POST', '/generate', generate(HOT))).json()).toEqual({
      error: UNAUTHORIZED_MESSAGE,
      error_type: 'authentication_error',
    });
  });

  it('refuses a replayed signature, even within the allowed skew', async () => {
    const body = completion(HOT);
    const headers = platformHeaders(SECRET, 'POST', '/v1/completions', body);
    expect((await call('POST', '/v1/completions', body, headers)).status).toBe(200);
    const replay = await call('POST', '/v1/completions', body, headers);
    expect(await seen(replay)).toBe(await seen(call('POST', '/v1/completions', completion(MISSING))));
  });

  it('/v1/models, /metrics and unknown routes reveal nothing to an unauthenticated caller', async () => {
    const answers = await Promise.all(
      [
        call('GET', '/v1/models'),
        call('GET', '/metrics'),
        call('GET', '/v1/models', undefined, { authorization: 'Bearer x' }),
        call('GET', '/v1/nothing-here'),
      ].map(seen),
    );
    for (const a of answers) {
      expect(a.startsWith('401 ')).toBe(true);
      expect(a).not.toContain(HOT);
      expect(a).not.toContain('loraplex_');
    }
    // One answer per error family: /v1/* in OpenAI's shape, /metrics in the LoRAX routes' shape.
    const [models, metrics, modelsWithKey, unknown] = answers;
    expect(new Set([models, modelsWithKey, unknown]).size).toBe(1);
    expect(metrics).toBe(await seen(call('POST', '/generate', generate(HOT))));
  });

  it('keeps /health open for probes, with nothing about adapters', async () => {
    expect(await seen(call('GET', '/health'))).toBe('200 application/json {"status":"ok"}');
  });
});

describe('a standalone worker with --api-key', () => {
  let worker: Worker;
  beforeAll(async () => {
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterDir: adaptersDir('llama'),
      apiKey: 'sk-standalone',
      backend: 'cpu',
      threads: 1,
      maxAdapters: 2,
    });
  });
  afterAll(() => worker?.shutdown());
  const get = (headers: Record<string, string>) => Promise.resolve(worker.app.request('/v1/models', { headers }));

  it('answers 401 without the key or with a wrong one, 200 with it', async () => {
    const refused = await Promise.all(
      [
        get({}),
        get({ authorization: 'Bearer sk-wrong' }),
        get({ authorization: 'sk-standalone' }),
        get({ authorization: 'Basic sk-standalone' }),
      ].map(seen),
    );
    expect(new Set(refused).size).toBe(1);
    expect(refused[0]!.startsWith('401 ')).toBe(true);
    expect((await get({ authorization: 'Bearer sk-standalone' })).status).toBe(200);
    const r = await worker.app.request('/v1/completions', {
      method: 'POST',
      headers: { authorization: 'Bearer sk-standalone' },
      body: completion(HOT),
    });
    expect(r.status).toBe(200);
  });

  it('takes the key from LORAPLEX_API_KEY, then VLLM_API_KEY, as vLLM reads VLLM_API_KEY', () => {
    const saved = { a: process.env.LORAPLEX_API_KEY, b: process.env.VLLM_API_KEY };
    try {
      delete process.env.LORAPLEX_API_KEY;
      process.env.VLLM_API_KEY = 'from-vllm';
      expect(callerCredentials({}).apiKey).toBe('from-vllm');
      process.env.LORAPLEX_API_KEY = 'from-loraplex';
      expect(callerCredentials({}).apiKey).toBe('from-loraplex');
      expect(callerCredentials({ apiKey: 'flag' }).apiKey).toBe('flag');
    } finally {
      for (const [k, v] of [
        ['LORAPLEX_API_KEY', saved.a],
        ['VLLM_API_KEY', saved.b],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('listen address', () => {
  const cleanEnv = (): NodeJS.ProcessEnv => {
    const env = { ...process.env };
    for (const k of ['LORAPLEX_WORKER_SECRET', 'LORAPLEX_API_KEY', 'VLLM_API_KEY']) delete env[k];
    return env;
  };

  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.8.0.1', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1'])
      expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', 'worker.internal', '128.0.0.1']) expect(isLoopback(h), h).toBe(false);
    expect(() => assertSafeBind('0.0.0.0', { workerSecret: 's' })).not.toThrow();
    expect(() => assertSafeBind('0.0.0.0', { apiKey: 'k' })).not.toThrow();
  });

  it('the worker refuses to start on a non-loopback address without a secret or key, before loading the model', () => {
    ensureBuilt();
    for (const host of ['0.0.0.0', '::']) {
      const r = spawnSync(process.execPath, [CLI, '--host', host, '--port', '0', '--model', '/nonexistent/model'], {
        encoding: 'utf8',
        env: cleanEnv(),
        timeout: 30_000,
      });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain(`refusing to listen on ${host} without authentication`);
      expect(r.stderr).toContain('--worker-secret');
      expect(r.stderr).toContain('--api-key');
    }
  });

  it('a real worker process on 0.0.0.0 with --api-key serves key holders only', async () => {
    ensureBuilt();
    const w = await spawnWorker([
      '--host',
      '0.0.0.0',
      '--model',
      modelDir('llama'),
      '--served-model-name',
      'tiny',
      '--threads',
      '1',
      '--api-key',
      'sk-proc',
    ]);
    try {
      expect((await fetch(`${w.url}/v1/models`)).status).toBe(401);
      expect((await fetch(`${w.url}/v1/models`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
      expect((await fetch(`${w.url}/v1/models`, { headers: { authorization: 'Bearer sk-proc' } })).status).toBe(200);
      expect((await fetch(`${w.url}/health`)).status).toBe(200);
    } finally {
      w.child.kill('SIGKILL');
      await w.exited;
    }
  });
});

describe('heartbeat residency', () => {
  it('reports adapters in engine slots apart from those only in host memory', async () => {
    const worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterDir: adaptersDir('llama'),
      workerSecret: SECRET,
      apiUrl: 'http://127.0.0.1:9',
      backend: 'cpu',
      threads: 1,
      maxAdapters: 1,
    });
    try {
      for (const a of ['lora_qv_r4', HOT]) {
        const body = completion(a);
        expect(
          (
            await worker.app.request('/v1/completions', {
              method: 'POST',
              headers: platformHeaders(SECRET, 'POST', '/v1/completions', body),
              body,
            })
          ).status,
        ).toBe(200);
      }
      const hb = worker.heartbeat!.body(false) as {
        slot_adapters: string[];
        host_adapters: string[];
        resident_adapters: string[];
      };
      expect(hb.slot_adapters).toEqual([HOT]);
      expect([...hb.host_adapters].sort()).toEqual([HOT, 'lora_qv_r4']);
      expect([...hb.resident_adapters].sort()).toEqual([HOT, 'lora_qv_r4']);
    } finally {
      await worker.shutdown();
    }
  });
});
