// The real `loraplex-worker` process over HTTP: concurrent mixed-adapter greedy requests equal
// Engine.generate run alone, the `openai` client works unchanged, a disconnect frees KV blocks,
// errors are 400/404, and SIGTERM drains.
import { Engine, type GenerateRequest } from '@loraplex/engine';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, adaptersDir, metric, modelDir, until } from './helpers/http.js';
import { ensureBuilt, spawnWorker, type WorkerProcess } from './helpers/process.js';

let w: WorkerProcess;
let ref: Engine;
const MODEL = modelDir('llama');

beforeAll(async () => {
  ensureBuilt();
  // Two adapter slots for three adapters: the mixed run also exercises eviction and reload.
  [w, ref] = await Promise.all([
    spawnWorker([
      '--model',
      MODEL,
      '--adapter-dir',
      adaptersDir('llama'),
      '--max-adapters',
      '2',
      '--max-batch-tokens',
      '16',
      '--threads',
      '1',
      '--served-model-name',
      'tiny',
    ]),
    Engine.load(MODEL, { backend: 'cpu', threads: 1, maxAdapters: 3 }),
  ]);
  for (const a of ADAPTERS) await ref.loadAdapter(a, `${adaptersDir('llama')}/${a}`);
});

afterAll(async () => {
  w?.child.kill('SIGKILL');
  await ref?.close();
});

const post = (path: string, body: unknown, init: RequestInit = {}): Promise<Response> =>
  fetch(`${w.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });

async function alone(req: GenerateRequest): Promise<{ tokens: number[]; text: string; finishReason: string }> {
  const [out] = await ref.generate([req]);
  return out!;
}

describe('loraplex-worker process', () => {
  it('concurrent mixed-adapter greedy requests return exactly what Engine.generate returns for each alone', async () => {
    const long = 'a b c d e f g h i j k l m n o p q r s t u v w x y z '.repeat(3);
    type Case = {
      adapter?: string;
      prompt: string;
      max: number;
      route: 'openai' | 'lorax' | 'chat';
      sampling?: { temperature: number; seed: number; repetitionPenalty?: number; presencePenalty?: number };
    };
    const cases: Case[] = [
      { prompt: 'Hello world', max: 20, route: 'openai' },
      { adapter: 'lora_all_r8', prompt: 'The quick brown fox', max: 24, route: 'lorax' },
      { adapter: 'lora_qv_r4', prompt: 'Once upon a time', max: 16, route: 'openai' },
      { adapter: 'lora_qkvo_r16_rslora', prompt: 'Hello world', max: 20, route: 'lorax' },
      { adapter: 'lora_all_r8', prompt: 'Hello world', max: 12, route: 'openai' },
      { prompt: long, max: 10, route: 'lorax' },
      { adapter: 'lora_qkvo_r16_rslora', prompt: long, max: 30, route: 'openai' },
      { adapter: 'lora_qv_r4', prompt: 'Zebra', max: 8, route: 'lorax' },
      { adapter: 'lora_all_r8', prompt: 'how are you?', max: 12, route: 'chat' },
      { prompt: 'tell me a story', max: 14, route: 'chat' },
      // Seeded sampling and penalties depend only on (seed, draw index) and the sequence's own history.
      {
        adapter: 'lora_qv_r4',
        prompt: 'Hello world',
        max: 16,
        route: 'openai',
        sampling: { temperature: 0.9, seed: 5, repetitionPenalty: 1.3, presencePenalty: 0.5 },
      },
      {
        adapter: 'lora_all_r8',
        prompt: 'Once upon a time',
        max: 16,
        route: 'lorax',
        sampling: { temperature: 0.7, seed: 11, repetitionPenalty: 1.2 },
      },
    ];
    const tk = ref.tokenizer!;
    const expected: Array<{ tokens: number[]; text: string }> = [];
    for (const c of cases) {
      const prompt =
        c.route === 'chat'
          ? await tk.encode(tk.applyChatTemplate([{ role: 'user', content: c.prompt }]), false)
          : c.prompt;
      expected.push(
        await alone({
          prompt,
          ...(c.adapter ? { adapter: c.adapter } : {}),
          sampling: { maxTokens: c.max, temperature: 0, ...c.sampling },
        }),
      );
    }
    const responses = await Promise.all(
      cases.map(async (c) => {
        const sp = c.sampling;
        if (c.route === 'openai') {
          const extra = sp
            ? {
                temperature: sp.temperature,
                seed: sp.seed,
                repetition_penalty: sp.repetitionPenalty,
                presence_penalty: sp.presencePenalty,
              }
            : { temperature: 0 };
          return (
            await post('/v1/completions', { model: c.adapter ?? 'tiny', prompt: c.prompt, max_tokens: c.max, ...extra })
          ).json();
        }
        if (c.route === 'chat')
          return (
            await post('/v1/chat/completions', {
              model: c.adapter ?? 'tiny',
              messages: [{ role: 'user', content: c.prompt }],
              max_tokens: c.max,
              temperature: 0,
            })
          ).json();
        const extra = sp
          ? { do_sample: true, temperature: sp.temperature, seed: sp.seed, repetition_penalty: sp.repetitionPenalty }
          : {};
        return (
          await post('/generate', {
            inputs: c.prompt,
            parameters: { adapter_id: c.adapter ?? null, max_new_tokens: c.max, details: true, ...extra },
          })
        ).json();
      }),
    );
    responses.forEach((r: any, i) => {
      const e = expected[i]!;
      const c = cases[i]!;
      if (c.route === 'openai') {
        expect(r.choices[0].text, `case ${i}`).toBe(e.text);
        expect(r.usage.completion_tokens).toBe(e.tokens.length);
      } else if (c.route === 'chat') {
        expect(r.choices[0].message.content, `case ${i}`).toBe(e.text);
      } else {
        expect(
          r.details.tokens.map((t: { id: number }) => t.id),
          `case ${i}`,
        ).toEqual(e.tokens);
        expect(r.generated_text).toBe(e.text);
      }
    });
    const m = await (await fetch(`${w.url}/metrics`)).text();
    expect(metric(m, 'loraplex_adapter_loads_total', 'result="ok"')).toBeGreaterThanOrEqual(3);
    expect(metric(m, 'loraplex_adapters_resident')).toBeLessThanOrEqual(2);
  });

  it('the openai client works unchanged: models, completions, chat, streaming, errors', async () => {
    const client = new OpenAI({ baseURL: `${w.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const models = [];
    for await (const m of client.models.list()) models.push(m);
    expect(models.map((m) => m.id)).toEqual(['tiny', ...ADAPTERS]);
    expect(models[1]).toMatchObject({ parent: 'tiny', root: `${adaptersDir('llama')}/${ADAPTERS[0]}` });

    const cmpl = await client.completions.create({
      model: 'lora_qv_r4',
      prompt: 'Hello world',
      max_tokens: 8,
      temperature: 0,
    });
    expect(cmpl.choices[0]!.text).toBe(
      (await alone({ prompt: 'Hello world', adapter: 'lora_qv_r4', sampling: { maxTokens: 8, temperature: 0 } })).text,
    );
    let streamed = '';
    for await (const chunk of await client.completions.create({
      model: 'lora_qv_r4',
      prompt: 'Hello world',
      max_tokens: 8,
      temperature: 0,
      stream: true,
    }))
      streamed += chunk.choices[0]?.text ?? '';
    expect(streamed).toBe(cmpl.choices[0]!.text);

    const chat = await client.chat.completions.create({
      model: 'lora_all_r8',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
      ],
      max_tokens: 6,
      temperature: 0,
      seed: 1,
    });
    expect(chat.choices[0]!.message.role).toBe('assistant');
    let chatStreamed = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    const stream = await client.chat.completions.create({
      model: 'lora_all_r8',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
      ],
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      chatStreamed += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chatStreamed).toBe(chat.choices[0]!.message.content);
    expect(usage).toMatchObject({
      completion_tokens: chat.usage!.completion_tokens,
      prompt_tokens: chat.usage!.prompt_tokens,
    });

    await expect(client.completions.create({ model: 'nope', prompt: 'x' })).rejects.toMatchObject({ status: 404 });
    await expect(client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 500 })).rejects.toMatchObject({
      status: 400,
    });
  });

  it('malformed JSON and unknown fields are 400, an unknown adapter 404', async () => {
    const bad = await post('/v1/chat/completions', '{"messages": [');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 400 } });
    const unknown = await post('/v1/completions', { prompt: 'x', frobnicate: true });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as any).error.message).toMatch(/frobnicate/);
    expect(
      (await post('/v1/chat/completions', { model: 'missing-adapter', messages: [{ role: 'user', content: 'x' }] }))
        .status,
    ).toBe(404);
    expect((await post('/generate', { inputs: 'x', parameters: { adapter_id: 'missing-adapter' } })).status).toBe(404);
    expect((await post('/generate', '{oops')).status).toBe(400);
  });

  it('a client that disconnects mid-stream frees its sequences and KV blocks', async () => {
    const ac = new AbortController();
    const r = await post(
      '/v1/completions',
      {
        model: 'lora_qkvo_r16_rslora',
        prompt: 'Hi',
        max_tokens: 240,
        ignore_eos: true,
        n: 16,
        temperature: 0.8,
        seed: 1,
        stream: true,
      },
      { signal: ac.signal },
    );
    const reader = r.body!.getReader();
    await reader.read();
    const before = await (await fetch(`${w.url}/metrics`)).text();
    expect(metric(before, 'loraplex_kv_blocks_used')).toBeGreaterThan(0);
    ac.abort();
    await until(
      async () => {
        const m = await (await fetch(`${w.url}/metrics`)).text();
        return metric(m, 'loraplex_kv_blocks_used') === 0 && metric(m, 'loraplex_sequences_running') === 0;
      },
      5000,
      'KV blocks to be freed',
    );
    const m = await (await fetch(`${w.url}/metrics`)).text();
    // All 16 were cancelled, none ran to its 240 tokens.
    expect(metric(m, 'loraplex_sequences_cancelled_total', 'adapter="lora_qkvo_r16_rslora"')).toBe(16);
    const finished = (t: string): number =>
      metric(t, 'loraplex_sequences_finished_total', 'adapter="lora_qkvo_r16_rslora"');
    expect(finished(m)).toBe(finished(before));
  });
});

describe('SIGTERM', () => {
  it('drains: accepted requests finish, new ones get 503, then the process exits 0', async () => {
    // 32 KV blocks: two 240-token sequences run at a time, the rest wait in the queue.
    const d = await spawnWorker(['--model', MODEL, '--kv-cache-tokens', '512', '--threads', '1']);
    try {
      const reqs = Array.from({ length: 6 }, (_, i) =>
        fetch(`${d.url}/v1/completions`, {
          method: 'POST',
          body: JSON.stringify({ prompt: `request ${i}`, max_tokens: 240, ignore_eos: true, temperature: 0 }),
        }),
      );
      await until(
        async () => metric(await (await fetch(`${d.url}/metrics`)).text(), 'loraplex_sequences_waiting') >= 3,
        5000,
        'requests to queue',
      );
      d.child.kill('SIGTERM');
      await until(() => d.stdout().includes('"draining"'), 5000, 'the drain to start');
      const late = await fetch(`${d.url}/v1/completions`, {
        method: 'POST',
        body: JSON.stringify({ prompt: 'late', max_tokens: 2 }),
      });
      expect(late.status).toBe(503);
      expect((await fetch(`${d.url}/health`)).status).toBe(503);
      const done = await Promise.all(reqs);
      for (const r of done) {
        expect(r.status).toBe(200);
        expect(((await r.json()) as any).usage.completion_tokens).toBe(240);
      }
      expect(await d.exited).toBe(0);
      expect(d.stdout()).toContain('"drained"');
    } finally {
      d.child.kill('SIGKILL');
    }
  });
});
