// Preemption by recompute on the real engine (tiny Llama fixture) with a 64-token KV cache (4 blocks
// of 16): concurrent requests must preempt one another, yet every greedy and seeded result equals
// Engine.generate run alone; a preempted sequence is neither re-sampled nor re-streamed; cancelling
// a preempted sequence frees everything; the allocator ends with every block free.
import { Engine, resolveSampling, type GenerateRequest } from '@loraplex/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelledError } from '../src/scheduler/scheduler.js';
import type { SequenceParams } from '../src/scheduler/sequence.js';
import { createWorker, type Worker } from '../src/worker.js';
import { ADAPTERS, adaptersDir, metric, modelDir, poster, sseData } from './helpers/http.js';

const MODEL = modelDir('llama');
let worker: Worker;
let ref: Engine;
let post: ReturnType<typeof poster>;

beforeAll(async () => {
  [worker, ref] = await Promise.all([
    // Two slots for three adapters: preempted sequences may also find their adapter evicted.
    createWorker({
      model: MODEL,
      servedModelName: 'tiny',
      adapterDir: adaptersDir('llama'),
      backend: 'cpu',
      threads: 1,
      maxAdapters: 2,
      kvCacheTokens: 64,
      maxBatchTokens: 32,
    }),
    Engine.load(MODEL, { backend: 'cpu', threads: 1, maxAdapters: 3 }),
  ]);
  for (const a of ADAPTERS) await ref.loadAdapter(a, `${adaptersDir('llama')}/${a}`);
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
  await ref?.close();
});

const allFree = (): boolean => worker.engine.kvUsage().freeBlocks === worker.engine.kvUsage().totalBlocks;

describe('preemption by recompute', () => {
  it('concurrent mixed-adapter greedy and seeded requests that must preempt equal Engine.generate alone', async () => {
    expect(worker.engine.kvUsage().totalBlocks).toBe(4);
    type Case = { adapter?: string; prompt: string; max: number; seed?: number; stream?: boolean; prefill?: boolean };
    const prompts = ['Hello world', 'The quick brown fox', 'Once upon a time', 'a b c d e f'];
    const cases: Case[] = Array.from({ length: 12 }, (_, i) => ({
      ...(i % 4 === 3 ? {} : { adapter: ADAPTERS[i % 3]! }),
      prompt: prompts[i % prompts.length]!,
      max: 36 + (i % 3) * 6,
      ...(i % 3 === 1 ? { seed: 100 + i } : {}),
      ...(i === 5 || i === 10 ? { stream: true } : {}),
      ...(i === 7 ? { prefill: true } : {}),
    }));
    const expected: Array<{ tokens: number[]; text: string; promptTokens: number[] }> = [];
    for (const c of cases) {
      const req: GenerateRequest = {
        prompt: c.prompt,
        ...(c.adapter ? { adapter: c.adapter } : {}),
        sampling: {
          maxTokens: c.max,
          ignoreEos: true,
          ...(c.seed !== undefined ? { temperature: 0.8, seed: c.seed, repetitionPenalty: 1.2 } : { temperature: 0 }),
        },
      };
      const [out] = await ref.generate([req]);
      expect(out!.promptTokens.length + c.max).toBeLessThanOrEqual(64); // fits the cache alone: not a 400
      expected.push(out!);
    }
    const before = worker.scheduler.preemptions;
    const responses = await Promise.all(
      cases.map(async (c) => {
        const parameters = {
          adapter_id: c.adapter ?? null,
          max_new_tokens: c.max,
          ignore_eos_token: true,
          details: true,
          ...(c.seed !== undefined ? { do_sample: true, temperature: 0.8, seed: c.seed, repetition_penalty: 1.2 } : {}),
          ...(c.prefill ? { decoder_input_details: true } : {}),
        };
        const r = await post(c.stream ? '/generate_stream' : '/generate', { inputs: c.prompt, parameters });
        expect(r.status).toBe(200);
        if (!c.stream) return r.json() as Promise<any>;
        // Streamed: one event per token, in order, none repeated by a recompute.
        const events = sseData(await r.text()) as any[];
        return {
          details: { tokens: events.map((e) => e.token) },
          generated_text: events[events.length - 1].generated_text,
        };
      }),
    );
    responses.forEach((r: any, i) => {
      const e = expected[i]!;
      expect(
        r.details.tokens.map((t: { id: number }) => t.id),
        `case ${i}`,
      ).toEqual(e.tokens);
      expect(r.generated_text, `case ${i}`).toBe(e.text);
      if (cases[i]!.prefill) expect(r.details.prefill).toHaveLength(e.promptTokens.length); // prompt logprobs once, despite recompute
    });
    expect(worker.scheduler.preemptions).toBeGreaterThan(before);
    const m = await (await worker.app.request('/metrics')).text();
    expect(metric(m, 'loraplex_preemptions_total')).toBeGreaterThan(0);
    // Retired by the step that finished them, before their results resolve: no waiting.
    expect(allFree()).toBe(true);
    expect(worker.scheduler.runningCount + worker.scheduler.waitingCount).toBe(0);
  });

  it('cancelling a preempted sequence frees its queue place, blocks and adapter pin', async () => {
    const sampling = resolveSampling({ maxTokens: 50, temperature: 0, ignoreEos: true }, worker.engine.config.vocab);
    const p = (adapter: string | undefined): SequenceParams => ({
      adapter,
      prompt: [1, 15043, 3186, 29892, 920, 526, 366, 29973].map((t) => t % worker.engine.config.vocab),
      sampling,
      stop: [],
      includeStopString: false,
      promptLogprobs: false,
      route: 'test',
    });
    await worker.adapters.require('lora_qv_r4'); // resident, so the newer one is admitted at once
    // Both start with one block each; at position 32 the older needs a third block and the newer is preempted.
    const older = worker.scheduler.submit(p(undefined));
    await older.admitted;
    const newer = worker.scheduler.submit(p('lora_qv_r4'));
    // The newer waits only until the older finishes (a few tens of ms): polling for that state can
    // miss it on a loaded machine. Resume right at the preemption instead (the scheduler awaits the
    // step it is building before anything else can re-admit the newer one).
    const preempted = new Promise<void>((resolve) => {
      const preempt = newer.preempt.bind(newer);
      newer.preempt = () => {
        preempt();
        resolve();
      };
    });
    await preempted;
    expect(newer.preemptions).toBeGreaterThan(0);
    expect(newer.state).toBe('waiting');
    expect(newer.blocks).toEqual([]);
    expect(worker.adapters.pins('lora_qv_r4')).toBe(0);
    expect(newer.sampled.length).toBeGreaterThan(0);
    worker.scheduler.cancel(newer);
    await expect(newer.done).rejects.toBeInstanceOf(CancelledError);
    expect(worker.scheduler.waitingCount).toBe(0);
    expect((await older.done).tokens).toHaveLength(50);
    expect(allFree()).toBe(true);
    expect(worker.scheduler.runningCount).toBe(0);
  });

  it('a request that can never fit the whole cache is still a 400 at submit', async () => {
    const r = await post('/generate', { inputs: 'Hello world', parameters: { max_new_tokens: 62 } });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toMatch(/KV blocks/);
  });
});
