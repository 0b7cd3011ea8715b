// vLLM's metric names on the worker's /metrics (issue 12), for LoRA-aware routers (Gateway API
// Inference Extension, llm-d): while one adapter's sequence runs (its engine step held) and another
// adapter's waits for the only slot, the scrape shows both in vllm:lora_requests_info and in the
// running/waiting gauges; after requests, the TTFT / inter-token histograms and token counters.
// Every loraplex_* metric stays.
import type { StepItem, StepItemResult } from '@loraplex/engine';
import { resolveSampling } from '@loraplex/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SequenceParams } from '../src/scheduler/sequence.js';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, metric, modelDir, poster } from './helpers/http.js';

let worker: Worker;
let post: ReturnType<typeof poster>;
const scrape = async (): Promise<string> => (await worker.app.request('/metrics')).text();

beforeAll(async () => {
  // One slot: a second adapter waits while the first one's sequence runs.
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny',
    adapterDir: adaptersDir('llama'),
    backend: 'cpu',
    threads: 1,
    maxAdapters: 1,
  });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
});

/** The TYPE line of a metric family. */
const typeOf = (text: string, name: string): string | undefined =>
  new RegExp(`^# TYPE ${name} (\\w+)$`, 'm').exec(text)?.[1];

/** The label sets of a metric's samples, as objects. */
function series(text: string, name: string): Array<Record<string, string>> {
  const out: Array<Record<string, string>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels: Record<string, string> = {};
    for (const m of line.slice(name.length + 1, line.lastIndexOf('}')).matchAll(/(\w+)="([^"]*)"/g))
      labels[m[1]!] = m[2]!;
    out.push(labels);
  }
  return out;
}

function params(adapter: string, maxTokens: number): SequenceParams {
  return {
    adapter,
    prompt: [1, 15043, 3186].map((t) => t % worker.engine.config.vocab),
    sampling: resolveSampling({ maxTokens, temperature: 0, ignoreEos: true }, worker.engine.config.vocab),
    stop: [],
    includeStopString: false,
    promptLogprobs: false,
    route: 'test',
  };
}

describe('vLLM metric names', () => {
  it('running and waiting adapters in vllm:lora_requests_info, with the running / waiting / KV gauges', async () => {
    const engine = worker.engine;
    const step = engine.runStep.bind(engine);
    // Hold the first step until the scrape is done: the first adapter's sequence stays running.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inStep = new Promise<void>((r) => (entered = r));
    engine.runStep = async (items: StepItem[]): Promise<StepItemResult[]> => {
      entered();
      await held;
      return step(items);
    };
    try {
      const running = worker.scheduler.submit(params('lora_all_r8', 4));
      await running.admitted;
      await inStep;
      const waiting = worker.scheduler.submit(params('lora_qv_r4', 4));
      const m = await scrape();

      expect(typeOf(m, 'vllm:lora_requests_info')).toBe('gauge');
      const info = series(m, 'vllm:lora_requests_info');
      expect(info).toEqual([
        { max_lora: '1', waiting_lora_adapters: 'lora_qv_r4', running_lora_adapters: 'lora_all_r8' },
      ]);
      // Set to the current time (routers read the newest series), as vLLM sets it.
      const at = metric(m, 'vllm:lora_requests_info');
      expect(Math.abs(at - Date.now() / 1000)).toBeLessThan(60);

      for (const name of [
        'vllm:num_requests_running',
        'vllm:num_requests_waiting',
        'vllm:kv_cache_usage_perc',
        'vllm:gpu_cache_usage_perc',
      ]) {
        expect(typeOf(m, name), name).toBe('gauge');
        expect(series(m, name), name).toEqual([{ model_name: 'tiny', engine: '0' }]);
      }
      expect(metric(m, 'vllm:num_requests_running')).toBe(1);
      expect(metric(m, 'vllm:num_requests_waiting')).toBe(1);
      const kv = metric(m, 'vllm:kv_cache_usage_perc');
      expect(kv).toBeGreaterThan(0);
      expect(kv).toBeLessThanOrEqual(1);
      expect(metric(m, 'vllm:gpu_cache_usage_perc')).toBe(kv);
      // loraplex's own names for the same state stay.
      expect(metric(m, 'loraplex_sequences_running')).toBe(1);
      expect(metric(m, 'loraplex_sequences_waiting')).toBe(1);

      release();
      await Promise.all([running.done, waiting.done]);
      const after = series(await scrape(), 'vllm:lora_requests_info');
      // One series, the current one: none left behind by the earlier adapter mix.
      expect(after).toEqual([{ max_lora: '1', waiting_lora_adapters: '', running_lora_adapters: '' }]);
    } finally {
      release();
      engine.runStep = step;
    }
  });

  it('TTFT, inter-token latency, token and request counters after requests', async () => {
    const before = await scrape();
    const r = await post('/v1/completions', {
      model: 'tiny',
      prompt: 'Hello world',
      max_tokens: 5,
      ignore_eos: true,
      temperature: 0,
    });
    expect(r.status).toBe(200);
    const usage = ((await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    // The last token's and the finish hooks run a few microtasks after the result they resolve: one
    // turn of the event loop (not a timer) lets them run before the scrape.
    await new Promise<void>((res) => setImmediate(res));
    const m = await scrape();
    const delta = (name: string, labels = ''): number => metric(m, name, labels) - metric(before, name, labels);

    for (const name of [
      'vllm:time_to_first_token_seconds',
      'vllm:inter_token_latency_seconds',
      'vllm:time_per_output_token_seconds',
      'vllm:e2e_request_latency_seconds',
      'vllm:request_queue_time_seconds',
    ]) {
      expect(typeOf(m, name), name).toBe('histogram');
      expect(m).toContain(`${name}_bucket{le="+Inf",model_name="tiny",engine="0"}`);
    }
    expect(delta('vllm:time_to_first_token_seconds_count')).toBe(1);
    expect(delta('vllm:inter_token_latency_seconds_count')).toBe(4); // between 5 tokens
    expect(delta('vllm:time_per_output_token_seconds_count')).toBe(4);
    expect(delta('vllm:e2e_request_latency_seconds_count')).toBe(1);
    expect(delta('vllm:request_queue_time_seconds_count')).toBe(1);
    expect(delta('vllm:time_to_first_token_seconds_sum')).toBeGreaterThan(0);

    for (const name of [
      'vllm:prompt_tokens_total',
      'vllm:generation_tokens_total',
      'vllm:request_success_total',
      'vllm:num_preemptions_total',
    ]) {
      expect(typeOf(m, name), name).toBe('counter');
    }
    expect(delta('vllm:prompt_tokens_total', 'model_name="tiny"')).toBe(usage.prompt_tokens);
    expect(delta('vllm:generation_tokens_total', 'model_name="tiny"')).toBe(5);
    expect(delta('vllm:request_success_total', 'finished_reason="length"')).toBe(1);
    // The first test's two sequences, and this one: every loraplex_* counter still counts.
    expect(metric(m, 'loraplex_requests_total', 'adapter="__base__",route="completions",status="200"')).toBe(1);
    expect(metric(m, 'loraplex_time_to_first_token_seconds_count')).toBe(3);
    expect(metric(m, 'loraplex_adapter_loads_total', 'result="ok"')).toBe(2);
  });
});
