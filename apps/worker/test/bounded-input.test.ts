// Hostile bodies on every generation route of a real worker (tiny Llama fixture, issue 11): deep
// JSON, numbers out of range, prompts far beyond the context, too many prompts and bodies over
// 32 MiB are 400 / 413 naming what is wrong, never a 500; a huge prompt is refused before the
// tokenizer sees it; and the worker process survives a body of any size, declared or chunked.
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_PROMPTS } from '@loraplex/protocol';
import { createWorker, type Worker } from '../src/worker.js';
import { modelDir, poster } from './helpers/http.js';
import { postOversized } from './helpers/oversized.js';
import { ensureBuilt, spawnWorker, type WorkerProcess } from './helpers/process.js';

const ROUTES = ['/v1/completions', '/v1/chat/completions', '/generate', '/generate_stream'] as const;
type Route = (typeof ROUTES)[number];
const isOpenAi = (route: Route): boolean => route.startsWith('/v1/');

let worker: Worker;
let post: ReturnType<typeof poster>;
let encode: MockInstance;
let render: MockInstance;

beforeAll(async () => {
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny',
    backend: 'cpu',
    threads: 1,
    maxBatchTokens: 64,
  });
  post = poster((p, init) => worker.app.request(p, init));
  // The real tokenizer, watched: a refused prompt must never reach it.
  encode = vi.spyOn(worker.engine.tokenizer!, 'encode');
  render = vi.spyOn(worker.engine.tokenizer!, 'applyChatTemplate');
});

beforeEach(() => {
  encode.mockClear();
  render.mockClear();
});

afterAll(async () => {
  vi.restoreAllMocks();
  await worker?.shutdown();
});

/** A minimal valid body for `route` with `text` as its prompt, `fields` merged in (into parameters on LoRAX routes). */
function bodyOf(route: Route, text: unknown, fields: Record<string, unknown> = {}): Record<string, unknown> {
  if (route === '/v1/completions') return { model: 'tiny', prompt: text, max_tokens: 2, ...fields };
  if (route === '/v1/chat/completions')
    return { model: 'tiny', messages: [{ role: 'user', content: text }], max_tokens: 2, ...fields };
  return { inputs: text, parameters: { max_new_tokens: 2, ...fields } };
}

/** The error of a response in its route family's shape: OpenAI `{error: {message, param}}`, LoRAX `{error, error_type}`. */
async function errorOf(route: Route, r: Response): Promise<{ status: number; message: string; param?: string | null }> {
  const b = (await r.json()) as { error: string | { message: string; param: string | null } };
  if (isOpenAi(route)) {
    const e = b.error as { message: string; param: string | null };
    return { status: r.status, message: e.message, param: e.param };
  }
  return { status: r.status, message: b.error as string };
}

/** An ordinary request still gets its answer (and goes through the tokenizer). */
async function servedNormally(): Promise<void> {
  const calls = encode.mock.calls.length;
  const r = await post('/v1/completions', { model: 'tiny', prompt: 'Hello world', max_tokens: 2, temperature: 0 });
  expect(r.status).toBe(200);
  expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(2);
  expect(encode.mock.calls.length).toBe(calls + 1);
}

describe('deep JSON', () => {
  it('a 100,000-deep body is a 400 on every generation route, a 10,000-deep chat content too', async () => {
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    for (const route of ROUTES) {
      const text = JSON.stringify(bodyOf(route, 'x')).replace('"x"', deep);
      const e = await errorOf(route, await post(route, text));
      expect(e.status, route).toBe(400);
      expect(e.message).toBe(`the JSON body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`);
    }
    const content = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`;
    const chat = await post(
      '/v1/chat/completions',
      `{"model":"tiny","messages":[{"role":"user","content":${content}}]}`,
    );
    expect(await errorOf('/v1/chat/completions', chat)).toMatchObject({
      status: 400,
      message: expect.stringMatching(/more than 256 levels deep/),
    });
    // A body as deep as allowed is parsed (and then refused by the schema, as a wrong type, not a crash).
    const ok = await post(
      '/v1/completions',
      `{"prompt":${'['.repeat(MAX_JSON_DEPTH - 1)}${']'.repeat(MAX_JSON_DEPTH - 1)}}`,
    );
    expect(await errorOf('/v1/completions', ok)).toMatchObject({ status: 400, param: 'prompt' });
    expect(encode).not.toHaveBeenCalled();
    await servedNormally();
  });
});

describe('numbers out of range', () => {
  // [field, value as JSON text]: 1e999 is Infinity after JSON.parse, refused by the parser; the
  // others are refused by the schema. Every one names its field.
  const openAi: Array<[string, string]> = [
    ['max_tokens', '1e999'],
    ['max_tokens', '1e300'],
    ['max_tokens', '0'],
    ['max_tokens', '1.5'],
    ['temperature', '1e999'],
    ['temperature', '-1e999'],
    ['temperature', '2.5'],
    ['temperature', '-0.1'],
    ['top_p', '1e999'],
    ['top_p', '0'],
    ['top_p', '1.5'],
    ['top_k', '1e999'],
    ['top_k', '-2'],
    ['min_p', '1.5'],
    ['presence_penalty', '1e999'],
    ['presence_penalty', '3'],
    ['frequency_penalty', '-3'],
    ['repetition_penalty', '0'],
    ['n', '1e999'],
    ['n', '17'],
    ['seed', '1e999'],
    ['seed', '-1'],
    ['stop_token_ids', '[1e999]'],
  ];
  const lorax: Array<[string, string]> = [
    ['max_new_tokens', '1e999'],
    ['max_new_tokens', '1e300'],
    ['max_new_tokens', '0'],
    ['temperature', '1e999'],
    ['temperature', '-1'],
    ['top_p', '1.5'],
    ['top_k', '0'],
    ['repetition_penalty', '1e999'],
    ['return_k_alternatives', '21'],
    ['seed', '1e999'],
  ];

  it.each(ROUTES)('%s: each is a 400 naming the field', async (route) => {
    for (const [field, value] of isOpenAi(route) ? openAi : lorax) {
      const text = JSON.stringify(bodyOf(route, 'x', { [field]: '@' })).replace('"@"', value);
      const e = await errorOf(route, await post(route, text));
      const where = isOpenAi(route) ? field : `parameters.${field}`;
      expect(e.status, `${field}: ${value}`).toBe(400);
      expect(e.message, `${field}: ${value}`).toMatch(new RegExp(`^${where.replace('.', '\\.')}(\\.0)?: `));
      if (isOpenAi(route)) expect(e.param, `${field}: ${value}`).toMatch(new RegExp(`^${field}`));
    }
    expect(encode).not.toHaveBeenCalled();
  });
});

describe('prompts beyond the context', () => {
  const huge = 'a'.repeat(10 << 20);

  it('a 10 MB prompt is a 400 on every route, without tokenizing or rendering it; the next request is served', async () => {
    const cases: Array<[Route, unknown, string]> = [
      ['/v1/completions', bodyOf('/v1/completions', huge), 'prompt'],
      // One huge prompt among small ones: none of them is tokenized.
      ['/v1/completions', bodyOf('/v1/completions', ['hi', huge, 'there']), 'prompt'],
      ['/v1/chat/completions', bodyOf('/v1/chat/completions', huge), 'messages'],
      [
        '/v1/chat/completions',
        bodyOf('/v1/chat/completions', [
          { type: 'text', text: huge.slice(1 << 20) },
          { type: 'text', text: huge.slice(1 << 20) },
        ]),
        'messages',
      ],
      ['/generate', bodyOf('/generate', huge), 'inputs'],
      ['/generate_stream', bodyOf('/generate_stream', huge), 'inputs'],
    ];
    for (const [route, body, param] of cases) {
      const e = await errorOf(route, await post(route, body));
      expect(e.status, route).toBe(400);
      expect(e.message).toMatch(
        /^This model's maximum context length is 256 tokens\. However, the prompt has \d+ characters/,
      );
      if (isOpenAi(route)) expect(e.param).toBe(param);
    }
    expect(encode).not.toHaveBeenCalled();
    expect(render).not.toHaveBeenCalled();
    await servedNormally();
  });

  it('many empty chat messages are refused once rendered, before tokenizing', async () => {
    const messages = Array.from({ length: 20_000 }, () => ({ role: 'user', content: '' }));
    const e = await errorOf('/v1/chat/completions', await post('/v1/chat/completions', { messages, max_tokens: 1 }));
    expect(e).toMatchObject({
      status: 400,
      param: 'messages',
      message: expect.stringMatching(/maximum context length is 256 tokens/),
    });
    expect(encode).not.toHaveBeenCalled();
  });
});

describe('prompts per request', () => {
  it(`/v1/completions takes at most ${MAX_PROMPTS} prompts, as text or token ids`, async () => {
    for (const prompt of [Array(MAX_PROMPTS + 1).fill('x'), Array(MAX_PROMPTS + 1).fill([44])]) {
      const e = await errorOf('/v1/completions', await post('/v1/completions', { prompt, max_tokens: 1 }));
      expect(e).toEqual({
        status: 400,
        param: 'prompt',
        message: `prompt: at most ${MAX_PROMPTS} prompts per request`,
      });
    }
    // One prompt of many token ids is one prompt.
    expect((await post('/v1/completions', { prompt: Array(MAX_PROMPTS + 1).fill(44), max_tokens: 1 })).status).toBe(
      200,
    );
    const r = await post('/v1/completions', {
      prompt: Array(MAX_PROMPTS).fill([44, 73]),
      max_tokens: 1,
      temperature: 0,
    });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { choices: Array<{ index: number; text: string }> };
    expect(body.choices.map((c) => c.index)).toEqual([...Array(MAX_PROMPTS).keys()]);
    expect(new Set(body.choices.map((c) => c.text)).size).toBe(1); // the same greedy prompt, the same answer
  });
});

describe('bodies over 32 MiB', () => {
  it('are a 413 with Connection: close on every generation route', async () => {
    const big = `{"prompt":"${'a'.repeat(MAX_BODY_BYTES)}"}`;
    for (const route of ROUTES) {
      const r = await post(route, big);
      expect(r.status, route).toBe(413);
      expect(r.headers.get('connection')).toBe('close');
      expect((await errorOf(route, r)).message).toBe(`the request body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    // A body of exactly the limit is read (and refused for what it says).
    const exact = `{"prompt":"${'a'.repeat(MAX_BODY_BYTES - 13)}"}`;
    expect(exact.length).toBe(MAX_BODY_BYTES);
    expect((await post('/v1/completions', exact)).status).toBe(400);
    expect(encode).not.toHaveBeenCalled();
    await servedNormally();
  });
});

describe('the worker process', () => {
  let w: WorkerProcess;
  beforeAll(async () => {
    ensureBuilt();
    w = await spawnWorker(['--model', modelDir('llama'), '--served-model-name', 'tiny', '--threads', '1']);
  });
  afterAll(() => {
    w?.child.kill('SIGKILL');
  });

  const alive = async (): Promise<void> => {
    expect(w.child.exitCode).toBeNull();
    expect((await fetch(`${w.url}/health`)).status).toBe(200);
    const r = await fetch(`${w.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 2 }),
    });
    expect(r.status).toBe(200);
  };

  it.each([false, true])(
    'survives an oversized body (chunked %s): 413, Connection: close, the rest unread',
    async (chunked) => {
      // Chunked, the client offers 256 MiB: the socket taking not much more than the limit (plus the
      // kernel's buffers) shows the worker stopped reading instead of draining the rest.
      const result = await postOversized({
        url: `${w.url}/v1/completions`,
        bytes: chunked ? 256 << 20 : 40 << 20,
        chunked,
      });
      // The client may still be writing when the worker answers and closes the connection (at once for
      // a declared size, at the limit for a chunked body): its write then fails (EPIPE / ECONNRESET),
      // possibly before it has read the 413. The byte bound below holds either way.
      if (result.status === 0) expect(result.connection).toMatch(/^(EPIPE|ECONNRESET)$/);
      else {
        expect(result.status).toBe(413);
        expect(result.connection).toBe('close');
      }
      expect(result.bytesWritten).toBeLessThan(chunked ? 48 << 20 : 8 << 20);
      await alive();
    },
  );

  it('a 10 MB prompt grows its resident memory by well under 200 MB (tokenizing it took 1.5-2 GB)', async () => {
    const pid = w.child.pid!;
    const kb = (field: 'VmRSS' | 'VmHWM'): number =>
      Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets the peak (VmHWM) to the current size
    const before = kb('VmRSS');
    const r = await fetch(`${w.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a'.repeat(10 << 20) }),
    });
    expect(r.status).toBe(400);
    const grownMb = (kb('VmHWM') - before) / 1024;
    expect(grownMb).toBeLessThan(200);
    await alive();
  });
});
