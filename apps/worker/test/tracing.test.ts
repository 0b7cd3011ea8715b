// OpenTelemetry traces of the worker (issue 12): a request carrying a W3C traceparent continues the
// caller's trace; under the worker's server span come auth, adapter resolution and the sequence's
// queue (with the adapter's load into a slot), prefill and decode spans, sent over OTLP/HTTP (JSON)
// to a receiver in the test. Spans are flushed explicitly: no waiting. Tracing is off by default.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tracing, tracesExporters } from '@loraplex/telemetry';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, poster } from './helpers/http.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './helpers/otlp-receiver.js';

const SERVER = 2; // OTLP SpanKind SPAN_KIND_SERVER
let receiver: OtlpReceiver;
let tracing: Tracing;
let worker: Worker;
let post: ReturnType<typeof poster>;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  tracing = Tracing.fromEnv('loraplex-worker', {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_SERVICE_NAME: 'test-worker',
  });
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny',
    adapterDir: adaptersDir('llama'),
    backend: 'cpu',
    threads: 1,
    maxAdapters: 1,
    tracing,
  });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
  await tracing?.shutdown();
  await receiver?.close();
});

const hex = (bytes: number): string => randomBytes(bytes).toString('hex');
/**
 * Flushes the spans of the requests answered so far. A sequence's `finished` hook (which ends its
 * spans) runs a few microtasks after the result it resolves: one turn of the event loop (not a
 * timer) lets those run first.
 */
const flush = async (): Promise<void> => {
  await new Promise<void>((r) => setImmediate(r));
  await tracing.forceFlush();
};
const only = (spans: ReceivedSpan[], name: string): ReceivedSpan => {
  const found = spans.filter((s) => s.name === name);
  expect(
    found.map((s) => s.name),
    name,
  ).toEqual([name]);
  return found[0]!;
};

describe('worker traces', () => {
  it("continues the caller's trace: server, auth, adapter resolution, queue, adapter load, prefill, decode", async () => {
    const traceId = hex(16),
      callerSpan = hex(8);
    const r = await post(
      '/v1/completions',
      { model: 'lora_qv_r4', prompt: 'Hello world', max_tokens: 4, ignore_eos: true, temperature: 0 },
      {
        headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpan}-01` },
      },
    );
    expect(r.status).toBe(200);
    await r.text();
    await flush();
    expect(receiver.contentTypes.every((t) => t.startsWith('application/json'))).toBe(true);

    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    expect(spans.every((s) => s.service === 'test-worker')).toBe(true);
    const server = only(spans, 'POST /v1/completions');
    expect(server.kind).toBe(SERVER);
    expect(server.parentSpanId).toBe(callerSpan);
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/completions',
      'http.response.status_code': 200,
    });
    expect(only(spans, 'auth').parentSpanId).toBe(server.spanId);
    expect(only(spans, 'adapter.resolve').parentSpanId).toBe(server.spanId);
    const sequence = only(spans, 'sequence');
    expect(sequence.parentSpanId).toBe(server.spanId);
    expect(sequence.attributes).toMatchObject({
      'loraplex.adapter': 'lora_qv_r4',
      'gen_ai.usage.output_tokens': 4,
      'gen_ai.response.finish_reasons': ['length'],
    });
    const queue = only(spans, 'queue');
    expect(queue.parentSpanId).toBe(sequence.spanId);
    // The adapter was cold: its load into the slot is inside the queue span.
    expect(only(spans, 'adapter.load')).toMatchObject({
      parentSpanId: queue.spanId,
      attributes: { 'loraplex.adapter': 'lora_qv_r4' },
    });
    expect(only(spans, 'prefill').parentSpanId).toBe(sequence.spanId);
    expect(only(spans, 'decode').parentSpanId).toBe(sequence.spanId);
  });

  it('starts a new trace without a traceparent (or with a malformed one); n > 1 gives one sequence span each', async () => {
    const before = new Set(receiver.spans.map((s) => s.traceId));
    const r = await post(
      '/v1/completions',
      { model: 'tiny', prompt: 'Hi', max_tokens: 2, n: 2, temperature: 0 },
      {
        headers: { 'content-type': 'application/json', traceparent: 'not-a-traceparent' },
      },
    );
    expect(r.status).toBe(200);
    await flush();
    const fresh = receiver.spans.filter((s) => !before.has(s.traceId));
    const server = only(fresh, 'POST /v1/completions');
    expect(server.parentSpanId).toBe('');
    const seqs = fresh.filter((s) => s.name === 'sequence');
    expect(seqs).toHaveLength(2);
    for (const s of seqs) expect(s.parentSpanId).toBe(server.spanId);
    expect(fresh.filter((s) => s.name === 'adapter.load')).toHaveLength(0); // the base model loads nothing
  });

  it("a refused caller's auth span is an error", async () => {
    const secured = await createWorker({ model: modelDir('llama'), backend: 'cpu', threads: 1, apiKey: 'k', tracing });
    try {
      const traceId = hex(16);
      const r = await secured.app.request('/v1/models', { headers: { traceparent: `00-${traceId}-${hex(8)}-01` } });
      expect(r.status).toBe(401);
      await flush();
      const spans = receiver.spans.filter((s) => s.traceId === traceId);
      expect(only(spans, 'auth').status?.code).toBe(2); // STATUS_CODE_ERROR
      expect(only(spans, 'GET /v1/models').attributes['http.response.status_code']).toBe(401);
    } finally {
      await secured.shutdown();
    }
  });
});

describe('configuration from OTEL_* (off by default)', () => {
  it('is off unless an exporter or an OTLP endpoint is named, and OTEL_SDK_DISABLED / none turn it off', () => {
    expect(tracesExporters({})).toEqual([]);
    expect(Tracing.fromEnv('x', {}).enabled).toBe(false);
    expect(tracesExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toEqual(['otlp']);
    expect(tracesExporters({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' })).toEqual(['otlp']);
    expect(tracesExporters({ OTEL_TRACES_EXPORTER: 'otlp' })).toEqual(['otlp']);
    expect(tracesExporters({ OTEL_TRACES_EXPORTER: 'console' })).toEqual(['console']);
    expect(tracesExporters({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toEqual([]);
    expect(tracesExporters({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' })).toEqual([]);
    expect(Tracing.fromEnv('x', { OTEL_SDK_DISABLED: 'TRUE', OTEL_TRACES_EXPORTER: 'otlp' }).enabled).toBe(false);
  });
});
