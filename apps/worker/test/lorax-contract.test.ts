// lorax-client's contract against a worker: every answer and stream event of POST /, /generate and
// /generate_stream parses with the client's models (helpers/lorax-client-models.ts), with details on
// and off, best_of, decoder_input_details, return_k_alternatives and adapter_id null or absent;
// /info and /tokenize; adapter_source, typical_p, watermark and best_of rules.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAdapterSource } from '../src/adapters/request-source.js';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, poster, sseData } from './helpers/http.js';
import {
  asClient,
  clientBody,
  clientError,
  clientInfo,
  clientResponse,
  clientStreamResponse,
  clientTokenizeResponse,
} from './helpers/lorax-client-models.js';

let tmp: string;
let worker: Worker;
let post: ReturnType<typeof poster>;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-worker-lorax-'));
  const dir = join(tmp, 'adapters');
  mkdirSync(dir);
  symlinkSync(join(adaptersDir('llama'), 'lora_qv_r4'), join(dir, 'lora_qv_r4'));
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny-llama',
    adapterDir: dir,
    backend: 'cpu',
    threads: 1,
    maxAdapters: 2,
    maxBatchTokens: 64,
  });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
  rmSync(tmp, { recursive: true, force: true });
});

/** The client's parse of a non-streamed answer: POST / answers [Response], /generate a Response. */
async function generated(path: '/' | '/generate', body: Record<string, unknown>) {
  const r = await post(path, body);
  const payload = await r.json();
  expect(r.status, JSON.stringify(payload)).toBe(200);
  if (path === '/') expect(Array.isArray(payload)).toBe(true);
  return { res: r, body: asClient(clientResponse, path === '/' ? (payload as unknown[])[0] : payload) };
}

async function streamed(path: '/' | '/generate_stream', body: Record<string, unknown>) {
  const r = await post(path, body);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/text\/event-stream/);
  return sseData(await r.text()).map((e) => asClient(clientStreamResponse, e));
}

async function refused(body: Record<string, unknown>, status: number, re: RegExp, path = '/') {
  const r = await post(path, body);
  const e = asClient(clientError, await r.json());
  expect(r.status).toBe(status);
  expect(e.error).toMatch(re);
  return e;
}

describe('every answer parses with lorax-client models', () => {
  for (const adapter of [undefined, null, 'lora_qv_r4'] as const) {
    for (const details of [true, false]) {
      const label = `adapter_id ${adapter === undefined ? 'absent' : String(adapter)}, details ${details}`;
      const over = (): Record<string, unknown> => {
        const b = clientBody('Hello world', false, { details, max_new_tokens: 4 });
        const p = b.parameters as Record<string, unknown>;
        if (adapter === undefined) delete p.adapter_id;
        else p.adapter_id = adapter;
        return b;
      };
      it(`POST / and /generate (${label})`, async () => {
        const a = await generated('/', over());
        const g = await generated('/generate', over());
        expect(a.body.generated_text).toBe(g.body.generated_text);
        if (details) {
          expect(g.body.details).toMatchObject({ generated_tokens: 4, skipped_tokens: 0, prefill: [] });
          for (const t of g.body.details!.tokens) expect(t.skipped).toBe(false);
        } else expect(g.body.details ?? null).toBeNull();
        expect(g.res.headers.get('x-adapter-id')).toBe(adapter ?? '');
      });
      it(`POST / with stream and /generate_stream (${label})`, async () => {
        const whole = (await generated('/generate', over())).body.generated_text;
        for (const path of ['/', '/generate_stream'] as const) {
          const events = await streamed(path, { ...over(), stream: true });
          expect(events).toHaveLength(4);
          for (const e of events.slice(0, -1))
            expect([e.generated_text ?? null, e.details ?? null]).toEqual([null, null]);
          const last = events.at(-1)!;
          expect(last.generated_text).toBe(whole);
          if (details) expect(last.details).toMatchObject({ finish_reason: 'length', generated_tokens: 4 });
          else expect(last.details ?? null).toBeNull();
        }
      });
    }
  }

  it('decoder_input_details: the prompt tokens with logprobs (the first has none)', async () => {
    const { body } = await generated(
      '/',
      clientBody('Hello world', false, { decoder_input_details: true, max_new_tokens: 2 }),
    );
    const d = body.details!;
    expect(d.prefill).toHaveLength(d.prompt_tokens);
    expect(d.prefill[0]!.logprob ?? null).toBeNull();
    for (const t of d.prefill.slice(1)) expect(t.logprob).toBeLessThanOrEqual(0);
  });

  it('return_k_alternatives: k alternatives per generated token, in the answer and the stream', async () => {
    const { body } = await generated(
      '/generate',
      clientBody('Hello world', false, { return_k_alternatives: 3, max_new_tokens: 3 }),
    );
    for (const t of body.details!.tokens) expect(t.alternative_tokens).toHaveLength(3);
    const events = await streamed(
      '/generate_stream',
      clientBody('Hello world', true, { return_k_alternatives: 2, max_new_tokens: 3 }),
    );
    for (const e of events) expect(e.token.alternative_tokens).toHaveLength(2);
  });

  it('best_of: n sampled candidates, the best by sum of logprobs answered, the others in best_of_sequences', async () => {
    const { res, body } = await generated(
      '/',
      clientBody('Hello world', false, { best_of: 3, do_sample: true, max_new_tokens: 5, decoder_input_details: true }),
    );
    const d = body.details!;
    expect(d.best_of_sequences).toHaveLength(2);
    const sum = (ts: Array<{ logprob: number }>): number => ts.reduce((s, t) => s + t.logprob, 0);
    for (const o of d.best_of_sequences!) {
      expect(sum(d.tokens)).toBeGreaterThanOrEqual(sum(o.tokens));
      expect(o.prefill).toEqual(d.prefill);
      expect(o.seed).toEqual(expect.any(Number));
    }
    expect(d.seed).toEqual(expect.any(Number));
    // Every candidate's tokens were generated: the usage headers count them all.
    expect(Number(res.headers.get('x-generated-tokens'))).toBe(
      d.generated_tokens + d.best_of_sequences!.reduce((s, o) => s + o.generated_tokens, 0),
    );
    const one = await generated('/', clientBody('Hello world', false, { best_of: 1, max_new_tokens: 2 }));
    expect(one.body.details!.best_of_sequences ?? null).toBeNull();
  });

  it('best_of > 1 follows TGI: sampling needed, no seed, no stream', async () => {
    await refused(clientBody('x', false, { best_of: 2 }), 400, /best_of > 1 needs sampling/);
    await refused(clientBody('x', false, { best_of: 2, do_sample: true, seed: 1 }), 400, /seed must not be set/);
    await refused(clientBody('x', true, { best_of: 2, do_sample: true }), 400, /not supported when streaming/);
    await refused(clientBody('x', false, { best_of: 99, do_sample: true }), 400, /best_of/);
  });

  it('typical_p and watermark: only their neutral values, anything else a clear 400', async () => {
    const e = await refused(
      clientBody('x', false, { typical_p: 0.5 }),
      400,
      /typical_p is not supported: typical decoding is not implemented/,
    );
    expect(e.error_type).toBe('validation');
    await refused(clientBody('x', false, { watermark: true }), 400, /watermark is not supported/);
    await generated('/', clientBody('x', false, { typical_p: 1.0, watermark: false, max_new_tokens: 1 }));
  });

  it('truncate keeps the last prompt tokens', async () => {
    const { body } = await generated(
      '/',
      clientBody('Hello world, how are you', false, { truncate: 3, max_new_tokens: 1 }),
    );
    expect(body.details!.prompt_tokens).toBe(3);
  });
});

describe('adapter_source on a worker with --adapter-dir', () => {
  it('local (or null) names an adapter of the directory; s3, hub and pbase are 400s that say what to do', async () => {
    const ok = await generated(
      '/',
      clientBody('Hello', false, { adapter_id: 'lora_qv_r4', adapter_source: 'local', max_new_tokens: 1 }),
    );
    expect(ok.res.headers.get('x-adapter-source')).toBe('local');
    await refused(
      clientBody('Hello', false, { adapter_id: 'lora_qv_r4', adapter_source: 's3' }),
      400,
      /adapter_source "s3": this worker was started without --adapter-s3/,
    );
    // Without --allow-hub-adapters (lorax-hub.test.ts has the worker with it).
    for (const id of ['some-org/some-adapter', 'lora_qv_r4']) {
      await refused(
        clientBody('Hello', false, { adapter_id: id, adapter_source: 'hub' }),
        400,
        /does not download adapters from the Hugging Face Hub.*--allow-hub-adapters/,
      );
    }
    await refused(
      clientBody('Hello', false, { adapter_id: 'lora_qv_r4', adapter_source: 'pbase' }),
      400,
      /Predibase adapters are not served/,
    );
    await refused(
      clientBody('Hello', false, { adapter_id: '../adapters/lora_qv_r4', adapter_source: 'local' }),
      404,
      /does not exist/,
    );
    await refused(
      clientBody('Hello', false, { adapter_source: 'gcs' }),
      400,
      /adapter_source must be one of local, hub, s3, pbase/,
    );
    // No adapter named: the base model, whatever the source says.
    await generated('/', clientBody('Hello', false, { adapter_source: 'hub', max_new_tokens: 1 }));
  });
});

describe('adapter_source on workers with other adapter origins', () => {
  it('an --adapter-s3 worker takes s3 (or null) and refuses local; one with neither refuses both', () => {
    for (const ok of [null, undefined, 's3'] as const) expect(() => checkAdapterSource('s3', ok)).not.toThrow();
    expect(() => checkAdapterSource('s3', 'local')).toThrow(/without --adapter-dir \(its adapters are in S3/);
    expect(() => checkAdapterSource('none', 'local')).toThrow(/start it with --adapter-dir DIR/);
    expect(() => checkAdapterSource('none', 's3')).toThrow(/start it with --adapter-s3/);
    // A worker fed by the platform's descriptors (no source of its own) serves them with no adapter_source.
    expect(() => checkAdapterSource('none', null)).not.toThrow();
    for (const origin of ['local', 's3', 'none', 'other'] as const) {
      expect(() => checkAdapterSource(origin, 'hub')).toThrow(/Hugging Face Hub/);
      expect(() => checkAdapterSource(origin, 'pbase')).toThrow(/Predibase/);
    }
  });
});

describe('GET /info and POST /tokenize', () => {
  it('/info describes the model and the limits', async () => {
    const r = await worker.app.request('/info');
    expect(r.status).toBe(200);
    const info = asClient(clientInfo, await r.json());
    expect(info).toMatchObject({
      model_id: 'tiny-llama',
      max_total_tokens: 256,
      max_input_length: 255,
      max_best_of: 4,
      max_batch_total_tokens: 64,
    });
  });

  it('/tokenize lists the tokens of inputs with their spans', async () => {
    const inputs = 'Hello world';
    const r = await post('/tokenize', { inputs });
    expect(r.status).toBe(200);
    const tokens = asClient(clientTokenizeResponse, await r.json());
    const ids = await worker.engine.tokenizer!.encode(inputs);
    expect(tokens.map((t) => t.id)).toEqual(ids);
    for (const t of tokens) expect(t.text).toBe(inputs.slice(t.start, t.stop));
    const noSpecial = asClient(
      clientTokenizeResponse,
      await (await post('/tokenize', { inputs, add_special_tokens: false })).json(),
    );
    expect(noSpecial.map((t) => t.id)).toEqual(await worker.engine.tokenizer!.encode(inputs, false));
    expect((await post('/tokenize', { inputs: 'x', nope: 1 })).status).toBe(400);
  });
});
