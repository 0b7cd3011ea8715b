// One trace across the API and a worker (issue 12): a client's W3C traceparent is continued by the
// API (server span, auth, adapter resolution, routing, one client span per worker attempt), the
// forwarded call carries the attempt's traceparent beside the request signature (which still
// verifies: the worker answers 200), and the worker's spans (server, auth, sequence, queue,
// prefill, decode) hang under that attempt. Both export OTLP/HTTP JSON to a receiver in the test;
// spans are flushed explicitly.
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { createWorker, type Worker } from '../../worker/src/index.js';
import { Tracing } from '@loraplex/telemetry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { defaultConfig } from '../src/config.js';
import type { WorkerRecord, WorkerRegistry } from '../src/worker-proxy/registry.js';
import { Router } from '../src/worker-proxy/router.js';
import { createValidation } from '../src/wiring.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../../worker/test/helpers/otlp-receiver.js';
import {
  ADMIN_KEY,
  BASE_MODEL,
  FIXTURES,
  call,
  openTestDb,
  RecordingRouting,
  seedBaseModel,
  tempDirStore,
  tenantWithKey,
  type TestDb,
} from './helpers/setup.js';

const SECRET = 'trace-test-worker-secret';
const SERVER = 2,
  CLIENT = 3; // OTLP SpanKind
let receiver: OtlpReceiver;
let apiTracing: Tracing, workerTracing: Tracing;
let worker: Worker;
let listener: ServerType;
let db: TestDb;
let store: Awaited<ReturnType<typeof tempDirStore>>;
let app: ReturnType<typeof createApp>['app'];

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  const env = (service: string) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: service });
  apiTracing = Tracing.fromEnv('loraplex-api', env('test-api'));
  workerTracing = Tracing.fromEnv('loraplex-worker', env('test-worker'));
  worker = await createWorker({
    model: `${FIXTURES}/base`,
    servedModelName: BASE_MODEL,
    workerSecret: SECRET,
    backend: 'cpu',
    threads: 1,
    tracing: workerTracing,
  });
  listener = await new Promise<ServerType>((res) => {
    const s = serve({ fetch: worker.app.fetch, port: 0, hostname: '127.0.0.1' }, () => res(s));
  });
  const url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
  const record: WorkerRecord = {
    id: 'wk_trace',
    url,
    baseModel: BASE_MODEL,
    capacity: {} as never,
    load: {} as never,
    residentAdapters: [],
    slotAdapters: [],
    draining: false,
    seenAtMs: 0,
  };
  const registry = { healthy: () => [record], reportFailure: () => undefined } as unknown as WorkerRegistry;
  db = await openTestDb('postgres');
  store = await tempDirStore();
  await seedBaseModel(db.db);
  const routing = Object.assign(new RecordingRouting(db.db), { router: new Router(registry, { secret: SECRET }) });
  const config = defaultConfig({ adminKey: ADMIN_KEY, workerSecret: SECRET });
  ({ app } = createApp({
    db: db.db,
    store: store.store,
    config,
    validation: createValidation(),
    routing,
    tracing: apiTracing,
  }));
});

afterAll(async () => {
  await new Promise<void>((r) => (listener ? listener.close(() => r()) : r()));
  await worker?.shutdown();
  await Promise.all([apiTracing?.shutdown(), workerTracing?.shutdown()]);
  await receiver?.close();
  await db?.close();
  await store?.cleanup();
});

const only = (spans: ReceivedSpan[], service: string, name: string): ReceivedSpan => {
  const found = spans.filter((s) => s.service === service && s.name === name);
  expect(
    found.map((s) => `${s.service} ${s.name}`),
    `${service} ${name}`,
  ).toEqual([`${service} ${name}`]);
  return found[0]!;
};

describe('a trace across the API and a worker', () => {
  it('links the client, API and worker spans by trace id and parent', async () => {
    const { key } = await tenantWithKey(app, 'traced');
    const traceId = randomBytes(16).toString('hex'),
      clientSpan = randomBytes(8).toString('hex');
    const r = await call(app, 'POST', '/v1/completions', {
      key,
      json: { model: BASE_MODEL, prompt: 'Hello world', max_tokens: 3, ignore_eos: true, temperature: 0 },
      headers: { traceparent: `00-${traceId}-${clientSpan}-01` },
    });
    expect(r.status).toBe(200); // the signed forward verified on the worker
    expect(r.body.usage.completion_tokens).toBe(3);
    await Promise.all([apiTracing.forceFlush(), workerTracing.forceFlush()]);

    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    const api = only(spans, 'test-api', 'POST /v1/completions');
    expect(api).toMatchObject({ kind: SERVER, parentSpanId: clientSpan });
    expect(only(spans, 'test-api', 'auth').parentSpanId).toBe(api.spanId);
    expect(only(spans, 'test-api', 'adapter.resolve').parentSpanId).toBe(api.spanId);
    const route = only(spans, 'test-api', 'route');
    expect(route.parentSpanId).toBe(api.spanId);
    const attempt = only(spans, 'test-api', 'worker.request');
    expect(attempt).toMatchObject({
      kind: CLIENT,
      parentSpanId: route.spanId,
      attributes: { 'loraplex.worker': 'wk_trace', 'http.response.status_code': 200 },
    });

    const served = only(spans, 'test-worker', 'POST /v1/completions');
    expect(served).toMatchObject({ kind: SERVER, parentSpanId: attempt.spanId });
    const auth = only(spans, 'test-worker', 'auth');
    expect(auth.parentSpanId).toBe(served.spanId);
    expect(auth.status?.code ?? 0).not.toBe(2); // not an error: the signature verified
    const sequence = only(spans, 'test-worker', 'sequence');
    expect(sequence.parentSpanId).toBe(served.spanId);
    for (const name of ['queue', 'prefill', 'decode'])
      expect(only(spans, 'test-worker', name).parentSpanId).toBe(sequence.spanId);
  });

  it('without a traceparent the API starts the trace and the worker continues it', async () => {
    const { key } = await tenantWithKey(app, 'traced-2');
    const before = new Set(receiver.spans.map((s) => s.traceId));
    const r = await call(app, 'POST', '/v1/completions', {
      key,
      json: { model: BASE_MODEL, prompt: 'Hi', max_tokens: 2, temperature: 0 },
    });
    expect(r.status).toBe(200);
    await Promise.all([apiTracing.forceFlush(), workerTracing.forceFlush()]);
    const fresh = receiver.spans.filter((s) => !before.has(s.traceId) && s.name === 'POST /v1/completions');
    expect(fresh.map((s) => s.service).sort()).toEqual(['test-api', 'test-worker']);
    const [a, w] = [fresh.find((s) => s.service === 'test-api')!, fresh.find((s) => s.service === 'test-worker')!];
    expect(a.parentSpanId).toBe('');
    expect(w.traceId).toBe(a.traceId);
  });
});
