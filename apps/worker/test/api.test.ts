// The HTTP surface through app.request() on the tiny Llama fixture: OpenAI and LoRAX shapes,
// streaming, validation errors, adapter chat templates, failed adapter loads, cancellation, drain.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorker, type Worker } from '../src/worker.js';
import { ADAPTERS, adaptersDir, metric, modelDir, poster, sseData, until } from './helpers/http.js';

let tmp: string;
let worker: Worker;
let post: ReturnType<typeof poster>;
const get = (path: string): Promise<Response> => Promise.resolve(worker.app.request(path));
const TEMPLATE = '{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ';

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-worker-api-'));
  const dir = join(tmp, 'adapters');
  mkdirSync(dir);
  for (const a of ADAPTERS) symlinkSync(join(adaptersDir('llama'), a), join(dir, a));
  // An adapter with its own chat template (weights linked from a fixture adapter).
  mkdirSync(join(dir, 'templated'));
  for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
    symlinkSync(join(adaptersDir('llama'), 'lora_qv_r4', f), join(dir, 'templated', f));
  writeFileSync(join(dir, 'templated', 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE }));
  // An adapter that cannot load.
  mkdirSync(join(dir, 'broken'));
  writeFileSync(join(dir, 'broken', 'adapter_config.json'), '{"peft_type": "LORA", "r": 8');
  mkdirSync(join(dir, 'not-an-adapter'));
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny-llama',
    adapterDir: dir,
    backend: 'cpu',
    threads: 1,
    maxAdapters: 2,
    maxBatchTokens: 32,
  });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
  rmSync(tmp, { recursive: true, force: true });
});

const json = async (r: Response): Promise<any> => r.json();

describe('GET /v1/models, /health, /metrics', () => {
  it('lists the base model and every adapter with vLLM root/parent', async () => {
    const body = await json(await get('/v1/models'));
    expect(body.object).toBe('list');
    const [base, ...rest] = body.data;
    expect(base).toMatchObject({
      id: 'tiny-llama',
      object: 'model',
      root: modelDir('llama'),
      parent: null,
      max_model_len: 256,
    });
    expect(rest.map((m: any) => m.id)).toEqual(['broken', ...ADAPTERS, 'templated']);
    for (const m of rest) {
      expect(m.parent).toBe('tiny-llama');
      expect(m.root).toBe(join(tmp, 'adapters', m.id));
      expect(m.max_model_len).toBeUndefined();
    }
  });

  it('/health answers ok', async () => {
    const r = await get('/health');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'ok' });
  });
});

describe('POST /v1/completions', () => {
  it('answers the OpenAI shape with usage, and the model field selects an adapter', async () => {
    const base = await json(
      await post('/v1/completions', { model: 'tiny-llama', prompt: 'Hello world', max_tokens: 6, temperature: 0 }),
    );
    expect(base).toMatchObject({
      object: 'text_completion',
      model: 'tiny-llama',
      usage: { prompt_tokens: 8, completion_tokens: 6, total_tokens: 14 },
    });
    expect(base.id).toMatch(/^cmpl-/);
    expect(base.choices).toHaveLength(1);
    expect(base.choices[0]).toMatchObject({ index: 0, logprobs: null, finish_reason: 'length' });
    const adapted = await json(
      await post('/v1/completions', { model: 'lora_all_r8', prompt: 'Hello world', max_tokens: 6, temperature: 0 }),
    );
    expect(adapted.model).toBe('lora_all_r8');
    expect(adapted.choices[0].text).not.toBe(base.choices[0].text);
  });

  it('n choices per prompt, several prompts, token-id prompts', async () => {
    const r = await json(
      await post('/v1/completions', { prompt: ['Hello', 'world'], n: 2, max_tokens: 3, seed: 3, temperature: 1 }),
    );
    expect(r.choices.map((c: any) => c.index)).toEqual([0, 1, 2, 3]);
    expect(r.usage.completion_tokens).toBe(12);
    const ids = await json(
      await post('/v1/completions', { prompt: [[44, 73, 365], [44]], max_tokens: 2, temperature: 0 }),
    );
    expect(ids.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 4 });
    const one = await json(await post('/v1/completions', { prompt: [44, 73, 365], max_tokens: 2, temperature: 0 }));
    expect(one.choices[0].text).toBe(ids.choices[0].text);
  });

  it('logprobs: chosen-token logprob, top alternatives and text offsets per token', async () => {
    const r = await json(
      await post('/v1/completions', { prompt: 'Hello world', max_tokens: 5, temperature: 0, logprobs: 3 }),
    );
    const lp = r.choices[0].logprobs;
    expect(lp.tokens).toHaveLength(5);
    expect(lp.token_logprobs.every((x: number) => x < 0)).toBe(true);
    expect(
      lp.top_logprobs.every((t: Record<string, number>) => Object.keys(t).length >= 1 && Object.keys(t).length <= 3),
    ).toBe(true);
    expect(lp.text_offset[0]).toBe(0);
    // Greedy: the chosen token is the most likely one.
    lp.top_logprobs.forEach((t: Record<string, number>, i: number) =>
      expect(Math.max(...Object.values(t))).toBeCloseTo(lp.token_logprobs[i], 5),
    );
  });

  it('stop strings cut the text before the stop string (finish_reason stop)', async () => {
    const full = (await json(await post('/v1/completions', { prompt: 'Hello world', max_tokens: 12, temperature: 0 })))
      .choices[0].text as string;
    const stop = full.slice(4, 7);
    const cut = await json(
      await post('/v1/completions', { prompt: 'Hello world', max_tokens: 12, temperature: 0, stop: [stop, 'zzzz'] }),
    );
    expect(cut.choices[0].text).toBe(full.slice(0, full.indexOf(stop)));
    expect(cut.choices[0].finish_reason).toBe('stop');
  });

  it('streams SSE chunks that add up to the non-streamed text, then usage, then [DONE]', async () => {
    const body = { model: 'lora_qv_r4', prompt: 'The cat', max_tokens: 10, temperature: 0 };
    const whole = (await json(await post('/v1/completions', body))).choices[0].text;
    const r = await post('/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = sseData(await r.text());
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1) as any[];
    const usage = chunks.at(-1);
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toMatchObject({ completion_tokens: 10 });
    expect(
      chunks
        .slice(0, -1)
        .map((c) => c.choices[0].text)
        .join(''),
    ).toBe(whole);
    expect(chunks.at(-2).choices[0].finish_reason).toBe('length');
  });
});

describe('POST /v1/chat/completions', () => {
  it('renders the base chat template and answers the chat shape', async () => {
    const r = await json(
      await post('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 4,
        temperature: 0,
      }),
    );
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message.role).toBe('assistant');
    const rendered = worker.engine.tokenizer!.applyChatTemplate([{ role: 'user', content: 'hi' }]);
    expect(r.usage.prompt_tokens).toBe((await worker.engine.tokenizer!.encode(rendered, false)).length);
  });

  it("uses the adapter's own chat template when its directory ships one", async () => {
    const messages = [{ role: 'user', content: 'hi there' }];
    const r = await json(
      await post('/v1/chat/completions', { model: 'templated', messages, max_tokens: 2, temperature: 0 }),
    );
    expect(r.usage.prompt_tokens).toBe(
      (await worker.engine.tokenizer!.encode('[user] hi there\n[assistant] ', false)).length,
    );
  });

  it('logprobs with top_logprobs; streaming starts with the role and ends with [DONE]', async () => {
    const r = await json(
      await post('/v1/chat/completions', {
        messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }],
        max_tokens: 3,
        temperature: 0,
        logprobs: true,
        top_logprobs: 2,
      }),
    );
    expect(r.choices[0].logprobs.content).toHaveLength(3);
    expect(r.choices[0].logprobs.content[0]).toMatchObject({
      token: expect.any(String),
      logprob: expect.any(Number),
      bytes: expect.any(Array),
    });
    expect(r.choices[0].logprobs.content[0].top_logprobs).toHaveLength(2);
    const s = await post('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 3,
      temperature: 0,
      stream: true,
    });
    const events = sseData(await s.text()) as any[];
    expect(events[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect(events.at(-1)).toBe('[DONE]');
    expect(
      events
        .slice(1, -1)
        .map((e) => e.choices[0].delta.content ?? '')
        .join(''),
    ).toBe(r.choices[0].message.content);
  });
});

describe('validation', () => {
  const expectError = async (r: Response, status: number, re: RegExp): Promise<void> => {
    expect(r.status).toBe(status);
    const body = await r.json();
    expect(body.error).toMatchObject({ type: expect.any(String), code: status });
    expect(body.error.message).toMatch(re);
  };

  it('rejects unknown fields, malformed JSON, wrong types and unsupported values with 400', async () => {
    await expectError(
      await post('/v1/completions', { prompt: 'x', max_tokens: 2, guided_json: {} }),
      400,
      /guided_json/,
    );
    await expectError(
      await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], tools: [] }),
      400,
      /tools/,
    );
    await expectError(await post('/v1/completions', '{"prompt": "x",'), 400, /malformed JSON/);
    await expectError(await post('/v1/completions', '[1, 2]'), 400, /JSON object/);
    await expectError(await post('/v1/completions', { prompt: 'x', max_tokens: '5' }), 400, /max_tokens/);
    await expectError(await post('/v1/completions', { prompt: 'x', echo: true }), 400, /echo is not supported/);
    await expectError(
      await post('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'x' }],
        response_format: { type: 'regex' },
      }),
      400,
      /response_format/,
    );
    await expectError(
      await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }),
      400,
      /top_logprobs needs logprobs/,
    );
    await expectError(await post('/v1/completions', { prompt: 'x', temperature: -1 }), 400, /temperature/);
    await expectError(
      await post('/v1/completions', { prompt: 'x', max_tokens: 400 }),
      400,
      /maximum context length is 256/,
    );
    await expectError(await post('/v1/completions', { prompt: [9999] }), 400, /outside the vocabulary/);
    expect(
      (
        await post('/v1/completions', {
          prompt: 'x',
          max_tokens: 1,
          echo: false,
          best_of: 1,
          logit_bias: {},
          user: 'u',
        })
      ).status,
    ).toBe(200);
  });

  it('an unknown adapter is a 404 (OpenAI and LoRAX shapes); path tricks are unknown adapters', async () => {
    await expectError(await post('/v1/completions', { model: 'nope', prompt: 'x' }), 404, /`nope` does not exist/);
    await expectError(
      await post('/v1/completions', { model: '../adapters/lora_qv_r4', prompt: 'x' }),
      404,
      /does not exist/,
    );
    await expectError(await post('/v1/completions', { model: 'not-an-adapter', prompt: 'x' }), 404, /does not exist/);
    const r = await post('/generate', { inputs: 'x', parameters: { adapter_id: 'nope' } });
    expect(r.status).toBe(404);
    expect(await r.json()).toMatchObject({ error: expect.stringMatching(/nope/), error_type: 'not_found_error' });
  });

  it('LoRAX routes reject unknown parameters with {error, error_type: validation}', async () => {
    const r = await post('/generate', { inputs: 'x', parameters: { max_new_tokens: 2, typical_p: 0.5 } });
    expect(r.status).toBe(400);
    expect(await r.json()).toMatchObject({ error: expect.stringMatching(/typical_p/), error_type: 'validation' });
    const r2 = await post('/generate', { inputs: 'x', extra: 1 });
    expect(((await r2.json()) as any).error).toMatch(/extra/);
    expect((await post('/generate_stream', { inputs: 'x', parameters: { decoder_input_details: true } })).status).toBe(
      400,
    );
    expect((await get('/nope')).status).toBe(404);
  });

  it('a failed adapter load fails only the requests for that adapter, with a clear 424', async () => {
    const [bad, good] = await Promise.all([
      post('/v1/completions', { model: 'broken', prompt: 'x', max_tokens: 2 }),
      post('/v1/completions', { model: 'lora_all_r8', prompt: 'x', max_tokens: 2 }),
    ]);
    expect(good.status).toBe(200);
    expect(bad.status).toBe(424);
    expect(((await bad.json()) as any).error.message).toMatch(/adapter broken failed to load/);
  });
});

describe('LoRAX routes', () => {
  it('/generate: generated_text and details (tokens, prefill, alternatives) agree with the OpenAI route', async () => {
    const openai = await json(
      await post('/v1/completions', { model: 'lora_all_r8', prompt: 'Hello world', max_tokens: 5, temperature: 0 }),
    );
    const r = await post('/generate', {
      inputs: 'Hello world',
      parameters: {
        adapter_id: 'lora_all_r8',
        max_new_tokens: 5,
        details: true,
        decoder_input_details: true,
        return_k_alternatives: 2,
      },
    });
    expect(r.headers.get('x-adapter-id')).toBe('lora_all_r8');
    const body = await json(r);
    expect(body.generated_text).toBe(openai.choices[0].text);
    expect(body.details).toMatchObject({ finish_reason: 'length', prompt_tokens: 8, generated_tokens: 5, seed: null });
    expect(body.details.prefill).toHaveLength(8);
    expect(body.details.prefill[0].logprob).toBeNull();
    expect(body.details.prefill[1].logprob).toBeLessThan(0);
    expect(body.details.tokens).toHaveLength(5);
    expect(body.details.tokens[0]).toMatchObject({
      id: expect.any(Number),
      text: expect.any(String),
      logprob: expect.any(Number),
      special: false,
    });
    expect(body.details.tokens[0].alternative_tokens).toHaveLength(2);
  });

  it('stop sequences stay in generated_text (finish_reason stop_sequence); POST / answers an array', async () => {
    const full = (await json(await post('/generate', { inputs: 'Hello world', parameters: { max_new_tokens: 12 } })))
      .generated_text as string;
    const stop = full.slice(3, 6);
    const r = await json(
      await post('/generate', {
        inputs: 'Hello world',
        parameters: { max_new_tokens: 12, stop: [stop], details: true },
      }),
    );
    expect(r.generated_text).toBe(full.slice(0, full.indexOf(stop) + stop.length));
    expect(r.details.finish_reason).toBe('stop_sequence');
    const arr = await json(await post('/', { inputs: 'Hello world', parameters: { max_new_tokens: 12 } }));
    expect(arr).toEqual([{ generated_text: full }]);
  });

  it('accepts a lorax-client body with every parameter present (mostly null)', async () => {
    const parameters = {
      adapter_id: 'lora_qv_r4',
      adapter_source: null,
      merged_adapters: null,
      api_token: null,
      best_of: null,
      do_sample: false,
      max_new_tokens: 3,
      ignore_eos_token: false,
      repetition_penalty: null,
      return_full_text: false,
      seed: null,
      stop: [],
      temperature: null,
      top_k: null,
      top_p: null,
      truncate: null,
      typical_p: null,
      watermark: false,
      response_format: null,
      decoder_input_details: false,
      return_k_alternatives: null,
      details: true,
    };
    const r = await post('/', { inputs: 'Hello', parameters, stream: false });
    expect(r.status).toBe(200);
    expect(((await r.json()) as any)[0].details.generated_tokens).toBe(3);
  });

  it('/generate_stream: one event per token, the last with generated_text and details', async () => {
    const whole = (
      await json(
        await post('/generate', { inputs: 'Hello world', parameters: { max_new_tokens: 6, adapter_id: 'lora_qv_r4' } }),
      )
    ).generated_text;
    const r = await post('/generate_stream', {
      inputs: 'Hello world',
      parameters: { max_new_tokens: 6, adapter_id: 'lora_qv_r4', details: true },
    });
    const events = sseData(await r.text()) as any[];
    expect(events).toHaveLength(6);
    for (const e of events.slice(0, -1))
      expect(e).toMatchObject({ token: { id: expect.any(Number) }, generated_text: null, details: null });
    expect(events.at(-1)).toMatchObject({
      generated_text: whole,
      details: { finish_reason: 'length', generated_tokens: 6, prompt_tokens: 8 },
    });
  });
});

describe('cancellation, metrics and drain', () => {
  it('a client that disconnects frees its sequences and KV blocks at once', async () => {
    const engine = worker.engine;
    const step = engine.runStep.bind(engine);
    engine.runStep = async (items) => {
      await new Promise((r) => setTimeout(r, 3));
      return step(items);
    };
    try {
      const ac = new AbortController();
      const r = await post(
        '/v1/completions',
        { prompt: 'Hello', max_tokens: 200, ignore_eos: true, temperature: 0, n: 3, stream: true },
        { signal: ac.signal },
      );
      const reader = r.body!.getReader();
      await reader.read();
      expect(engine.kvUsage().freeBlocks).toBeLessThan(engine.kvUsage().totalBlocks);
      ac.abort();
      expect(engine.kvUsage().freeBlocks).toBe(engine.kvUsage().totalBlocks); // synchronously, on the abort
      await until(() => worker.scheduler.runningCount === 0, 2000, 'the sequences to leave the batch');
      const m = await (await get('/metrics')).text();
      expect(metric(m, 'loraplex_sequences_cancelled_total', 'adapter="__base__"')).toBe(3);
      expect(metric(m, 'loraplex_kv_blocks_used')).toBe(0);
      // A non-streaming request cancelled while it runs.
      const ac2 = new AbortController();
      const pending = post(
        '/v1/completions',
        { prompt: 'Hello', max_tokens: 200, ignore_eos: true },
        { signal: ac2.signal },
      );
      await until(() => worker.scheduler.runningCount === 1, 2000, 'admission');
      ac2.abort();
      expect(engine.kvUsage().freeBlocks).toBe(engine.kvUsage().totalBlocks);
      await pending.catch(() => undefined);
      await until(() => worker.scheduler.runningCount === 0, 2000, 'the cancelled sequence to leave the batch');
    } finally {
      engine.runStep = step;
    }
  });

  it('/metrics reports per-adapter request and token counters', async () => {
    const m = await (await get('/metrics')).text();
    expect(
      metric(m, 'loraplex_requests_total', 'adapter="lora_all_r8",route="completions",status="200"'),
    ).toBeGreaterThanOrEqual(2);
    expect(metric(m, 'loraplex_generated_tokens_total', 'adapter="lora_qv_r4"')).toBeGreaterThan(0);
    expect(metric(m, 'loraplex_prompt_tokens_total', 'adapter="lora_all_r8"')).toBeGreaterThan(0);
    expect(metric(m, 'loraplex_requests_total', 'route="completions",status="404"')).toBeGreaterThanOrEqual(1);
    expect(metric(m, 'loraplex_adapter_loads_total', 'adapter="broken",result="error"')).toBe(1);
    expect(metric(m, 'loraplex_adapter_slots')).toBe(2);
  });

  it('drain: running requests finish, new ones get 503, /health says draining', async () => {
    const running = post('/v1/completions', { prompt: 'Hello', max_tokens: 100, ignore_eos: true, temperature: 0 });
    await until(() => worker.scheduler.runningCount === 1, 2000, 'admission');
    const drained = worker.shutdown();
    expect((await post('/v1/completions', { prompt: 'x', max_tokens: 1 })).status).toBe(503);
    expect((await get('/health')).status).toBe(503);
    const r = await running;
    expect(r.status).toBe(200);
    expect(((await r.json()) as any).usage.completion_tokens).toBe(100);
    await drained;
  });
});
