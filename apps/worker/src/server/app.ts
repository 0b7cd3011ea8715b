// The worker's Hono app, separate from the listener (tests call app.request()).
import { Hono } from 'hono';
import type { WorkerContext } from '../worker-context.js';
import { authenticateCaller } from './auth.js';
import { errorResponse, notFound } from './errors.js';
import { adapterDescriptor, countRequests, limitBody, parseJsonBody, rejectWhileDraining } from './middleware.js';
import { chatCompletions } from './routes/chat.js';
import { completions } from './routes/completions.js';
import { health, listModels, metrics, ready, type ReadinessOptions } from './routes/info.js';
import { loraxInfo } from './routes/lorax-info.js';
import { loraxCompat, loraxGenerate, loraxGenerateStream } from './routes/lorax.js';
import type { WorkerEnv } from './types.js';
import { loadLoraAdapter, tokenizeEither, unloadLoraAdapter, vllmDetokenize } from './routes/vllm.js';
import { maybeTraced, tracingMiddleware } from '@loraplex/telemetry';
import { MAX_BODY_BYTES } from '@loraplex/protocol';

export function createApp(ctx: WorkerContext, readiness: ReadinessOptions = {}): Hono<WorkerEnv> {
  const app = new Hono<WorkerEnv>();
  app.onError((err, c) => errorResponse(c, err));
  app.notFound((c) => errorResponse(c, notFound(`no route ${c.req.method} ${c.req.path}`)));

  // Every route but /health and /ready: the body limit first (authentication reads the body to check its
  // digest), then the caller's credentials, before anything looks at what the request names.
  // The server span first (traceparent in; none installed when tracing is off), then auth in its own span.
  app.use(
    '*',
    ...tracingMiddleware(ctx.tracing),
    limitBody(MAX_BODY_BYTES),
    maybeTraced(ctx.tracing, 'auth', authenticateCaller(ctx.auth)),
  );
  const resolveAdapter = maybeTraced(
    ctx.tracing,
    'adapter.resolve',
    adapterDescriptor(ctx, ctx.descriptors, ctx.workerSecret),
  );
  const generation = (route: string) =>
    [countRequests(ctx, route), rejectWhileDraining(ctx), parseJsonBody, resolveAdapter] as const;
  app.post('/v1/completions', ...generation('completions'), completions(ctx));
  app.post('/v1/chat/completions', ...generation('chat'), chatCompletions(ctx));
  app.post('/generate', ...generation('generate'), loraxGenerate(ctx));
  app.post('/generate_stream', ...generation('generate_stream'), loraxGenerateStream(ctx));
  app.post('/', ...generation('compat'), loraxCompat(ctx));
  app.post('/tokenize', parseJsonBody, tokenizeEither(ctx));
  app.post('/detokenize', parseJsonBody, vllmDetokenize(ctx));
  app.post('/v1/load_lora_adapter', parseJsonBody, loadLoraAdapter(ctx));
  app.post('/v1/unload_lora_adapter', parseJsonBody, unloadLoraAdapter(ctx));

  app.get('/v1/models', listModels(ctx));
  app.get('/info', loraxInfo(ctx));
  app.get('/health', health(ctx));
  app.get('/ready', ready(ctx, readiness));
  app.get('/metrics', metrics(ctx));
  return app;
}
