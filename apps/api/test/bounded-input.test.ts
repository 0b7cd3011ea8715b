// Hostile input over a real socket (issue 11): deep, huge and out-of-range bodies, impossible dates
// and an adapter whose target_modules backtracks catastrophically are refused with 400 / 413 / 422,
// never a 500 nor a crash, and meanwhile /health answers within 100 ms and another tenant's normal
// request works.
import { request } from 'node:http';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../src/config.js';
import { startApiServer, type ApiServer } from '../src/server.js';
import { createValidation } from '../src/wiring.js';
import { writeTarGz } from './helpers/archive.js';
import { ADMIN_KEY, BASE_MODEL, FIXTURES, RecordingRouting, seedBaseModel } from './helpers/setup.js';

let dataDir: string;
let api: ApiServer;
let routing: RecordingRouting;
let attacker: string;
let victim: string;

const json = (key: string) => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json' });
const post = (path: string, key: string, body: string) => fetch(`${api.url}${path}`, { method: 'POST', headers: json(key), body });

/** /health, timed from the request to the answer's end. */
async function healthMs(): Promise<number> {
  const t0 = performance.now();
  const r = await fetch(`${api.url}/health`);
  expect(r.status).toBe(200);
  await r.json();
  return performance.now() - t0;
}

/** Runs `attack` while polling /health back to back: the slowest /health answer during it, and the attack's response. */
async function whileHealthPolled<T>(attack: () => Promise<T>): Promise<{ slowestMs: number; polls: number; result: T }> {
  let done = false;
  let slowestMs = 0;
  let polls = 0;
  const poller = (async () => {
    while (!done) {
      slowestMs = Math.max(slowestMs, await healthMs());
      polls++;
    }
  })();
  try {
    const result = await attack();
    done = true;
    await poller; // the poll in flight when the attack ended counts too
    return { slowestMs, polls, result };
  } finally {
    done = true;
  }
}

/** Another tenant's ordinary request still goes through. */
async function victimServed(): Promise<void> {
  const r = await post('/v1/completions', victim, JSON.stringify({ model: BASE_MODEL, prompt: 'hello', max_tokens: 2, temperature: 0 }));
  expect(r.status).toBe(200);
  expect(((await r.json()) as { echoed: { prompt: string } }).echoed.prompt).toBe('hello');
}

async function errorOf(r: Response): Promise<{ status: number; code: string; message: string }> {
  const b = (await r.json()) as { error: { code: string; message: string } };
  return { status: r.status, code: b.error.code, message: b.error.message };
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'lpx-hostile-'));
  const config = defaultConfig({ dataDir, port: 0, adminKey: ADMIN_KEY, workerSecret: 's' });
  api = await startApiServer(config, { validation: createValidation(), routing: (db) => (routing = Object.assign(new RecordingRouting(db), { close: async () => undefined })) });
  await seedBaseModel(api.services.db);
  const keyOf = async (name: string): Promise<string> => {
    const t = (await (await post('/v1/tenants', ADMIN_KEY, JSON.stringify({ name }))).json()) as { id: string };
    return ((await (await post('/v1/keys', ADMIN_KEY, JSON.stringify({ tenant_id: t.id }))).json()) as { key: string }).key;
  };
  attacker = await keyOf('attacker');
  victim = await keyOf('victim');
});
afterAll(async () => {
  await api?.close();
  await rm(dataDir, { recursive: true, force: true });
});

describe('bounded JSON bodies', () => {
  it('a 100,000-deep body and a 10,000-deep chat content are 400, on every JSON route', async () => {
    const deep = `{"model":"${BASE_MODEL}","prompt":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    for (const path of ['/v1/completions', '/generate', '/v1/keys']) {
      const e = await errorOf(await post(path, path === '/v1/keys' ? ADMIN_KEY : attacker, deep));
      expect(e).toMatchObject({ status: 400, code: 'too_deep' });
      expect(e.message).toMatch(/more than 128 levels deep/);
    }
    const content = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
    const chat = await post('/v1/chat/completions', attacker, `{"model":"${BASE_MODEL}","messages":[{"role":"user","content":${content}}]}`);
    expect(await errorOf(chat)).toMatchObject({ status: 400, code: 'too_deep' });
    // Brackets inside strings are text, not nesting.
    const r = await post('/v1/completions', victim, JSON.stringify({ model: BASE_MODEL, prompt: '['.repeat(1000) + '"{', max_tokens: 1 }));
    expect(r.status).toBe(200);
    await victimServed();
  });

  it('1e999 (Infinity after JSON.parse) and out-of-range sampling values are 400 naming the field, never forwarded', async () => {
    const before = routing.forwarded.length;
    const cases: Array<[string, string, RegExp]> = [
      ['/v1/completions', `{"model":"${BASE_MODEL}","prompt":"x","max_tokens":1e999}`, /^max_tokens: the number is out of range/],
      ['/v1/chat/completions', `{"model":"${BASE_MODEL}","messages":[{"role":"user","content":"x"}],"temperature":-1e999}`, /^temperature: the number is out of range/],
      ['/generate', `{"inputs":"x","parameters":{"temperature":1e999}}`, /^parameters\.temperature: the number is out of range/],
      ['/v1/completions', `{"model":"${BASE_MODEL}","prompt":"x","temperature":3}`, /^temperature: /],
      ['/v1/completions', `{"model":"${BASE_MODEL}","prompt":"x","max_tokens":0}`, /^max_tokens: /],
      ['/v1/completions', `{"model":"${BASE_MODEL}","prompt":"x","max_tokens":1.5}`, /^max_tokens: /],
      ['/generate', `{"inputs":"x","parameters":{"max_new_tokens":1e300}}`, /^parameters\.max_new_tokens: /],
      ['/v1/completions', `{"model":"${BASE_MODEL}","prompt":"x","best_of":3}`, /^best_of: best_of is not supported/],
    ];
    for (const [path, body, message] of cases) {
      const e = await errorOf(await post(path, attacker, body));
      expect(e.status, body).toBe(400);
      expect(e.message, body).toMatch(message);
    }
    expect(routing.forwarded.length).toBe(before);
    await victimServed();
  });

  it('GET /v1/usage with year 0 or any impossible date is 400', async () => {
    for (const q of ['start=0000-01-01T00:00:00Z', 'end=0000-06-01T00:00:00Z', 'start=0001-01-01T01:00:00%2B05:00', 'start=2024-02-30T00:00:00Z', 'end=99999-01-01T00:00:00Z', 'start=garbage']) {
      const r = await fetch(`${api.url}/v1/usage?${q}`, { headers: json(victim) });
      expect(r.status, q).toBe(400);
    }
    expect((await fetch(`${api.url}/v1/usage?start=0001-01-01T00:00:00Z`, { headers: json(victim) })).status).toBe(200);
  });
});

/** A POST of `size` bytes over a raw socket: the status and headers the server answered, however the upload ended. */
function rawPost(path: string, key: string, size: number, chunked: boolean): Promise<{ status: number; connection: string | undefined; body: string }> {
  return new Promise((resolve) => {
    const req = request(`${api.url}${path}`, { method: 'POST', headers: { ...json(key), ...(chunked ? {} : { 'content-length': String(size) }) } });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      answered = { status: res.statusCode!, connection: res.headers.connection, body: '' };
      res.on('end', () => resolve({ ...answered!, body }));
    });
    let answered: { status: number; connection: string | undefined; body: string } | undefined;
    // The server may close the connection while this side still writes (it stopped reading at the
    // limit): the write fails, and what counts is whether the 413 arrived first.
    // Chunked, the write can fail before the 413 is read (the server closed the connection with the
    // rest unread): status 0 then, with the error's code.
    req.on('error', (e) => resolve(answered ?? { status: 0, connection: (e as NodeJS.ErrnoException).code, body: '' }));
    const chunk = Buffer.alloc(1 << 20, 'a');
    chunk.write(`{"model":"${BASE_MODEL}","prompt":"`);
    let sent = 0;
    const pump = (): void => {
      while (sent < size) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    req.on('socket', pump);
  });
}

describe('huge bodies', () => {
  it.each([false, true])('a 40 MiB inference body (chunked %s) is 413 with Connection: close; the API keeps serving', async (chunked) => {
    const { slowestMs, result } = await whileHealthPolled(() => rawPost('/v1/completions', attacker, 40 << 20, chunked));
    if (chunked && result.status === 0) expect(result.connection).toMatch(/^(EPIPE|ECONNRESET)$/);
    else {
      expect(result.status).toBe(413);
      expect(result.connection).toBe('close');
      expect(JSON.parse(result.body).error.code).toBe('payload_too_large');
    }
    // A declared oversize is refused before a byte is read; a chunked one is read up to the limit
    // (32 MiB, by the test's own client in this same process), which this machine does in ~0.3 s.
    if (!chunked) expect(slowestMs).toBeLessThan(100);
    await victimServed();
  });
});

describe('adapter patterns', () => {
  it("a catastrophically backtracking target_modules is matched in linear time: /health stays under 100 ms, and RE2-inexpressible patterns are a 422 saying so", async () => {
    const dir = join(FIXTURES, 'adapters', 'lora_all_r8');
    const weights = await readFile(join(dir, 'adapter_model.safetensors'));
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const upload = (name: string, config: Record<string, unknown>) =>
      fetch(`${api.url}/v1/adapters?name=${name}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${attacker}`, 'content-type': 'application/gzip' },
        body: new Uint8Array(writeTarGz([{ name: 'adapter_config.json', data: Buffer.from(JSON.stringify(config)) }, { name: 'adapter_model.safetensors', data: weights }])),
      });
    // A backtracking engine (JS RegExp) takes minutes per module name here: each almost matches.
    const evil = '(([a-z_0-9]+\\.?)+)+x';
    const { slowestMs, polls, result } = await whileHealthPolled(() => upload('evil', { ...cfg, target_modules: evil }));
    expect(await errorOf(result)).toMatchObject({ status: 422, code: 'adapter_invalid', message: expect.stringMatching(/match no module/) });
    expect(polls).toBeGreaterThan(0);
    expect(slowestMs).toBeLessThan(100);

    const backref = await errorOf(await upload('backref', { ...cfg, target_modules: '(.*)\\1_proj' }));
    expect(backref).toMatchObject({ status: 422, code: 'adapter_invalid' });
    expect(backref.message).toMatch(/target_modules .* RE2 syntax .*no backreferences, lookahead or lookbehind/);
    await victimServed();
  });

  it('upload errors never show server paths', async () => {
    const bad = await fetch(`${api.url}/v1/adapters?name=trunc`, {
      method: 'POST',
      headers: { authorization: `Bearer ${attacker}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(writeTarGz([{ name: 'adapter_config.json', data: await readFile(join(FIXTURES, 'adapters', 'lora_all_r8', 'adapter_config.json')) }, { name: 'adapter_model.safetensors', data: Buffer.from([1, 2, 3]) }])),
    });
    const e = await errorOf(bad);
    expect(e.status).toBe(422);
    expect(e.message).toMatch(/^adapter_model\.safetensors: /);
    expect(e.message).not.toContain(tmpdir());
    expect(e.message).not.toContain(dataDir);
  });
});
