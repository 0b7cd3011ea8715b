// The API as a Hono app: auth, tenants, keys, adapters, uploads, inference, models, usage, worker
// heartbeats, the OpenAPI document (/openapi.json) and Swagger UI (/docs), all from the same schemas;
// /health (liveness) and /ready (readiness) for probes.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Clock } from '@loraplex/common';
import { AdapterCatalog } from './adapters/catalog.js';
import { Authenticator } from './auth/authenticator.js';
import type { MiddlewareHandler } from 'hono';
import { authenticate, type AuthEnv } from './auth/middleware.js';
import type { ApiConfig } from './config.js';
import type { Db } from './db/client.js';
import { errorResponse, handleError } from './errors.js';
import { checkJsonBody, limitBody } from './json-body.js';
import { MAX_BODY_BYTES } from '@loraplex/protocol';
import { maybeTraced, tracingMiddleware, type Tracing } from '@loraplex/telemetry';
import { ApiMetrics } from './metrics.js';
import type { AdapterValidation, RoutingPorts } from './ports.js';
import { registerAdapterRoutes } from './routes/adapters.js';
import { registerDocRoutes } from './routes/docs.js';
import { registerInferenceRoutes } from './routes/inference.js';
import { registerInternalRoutes } from './routes/internal.js';
import { registerKeyRoutes } from './routes/keys.js';
import { registerModelRoutes } from './routes/models.js';
import { readyHandler } from './routes/ready.js';
import { registerTenantRoutes } from './routes/tenants.js';
import { registerUploadRoutes } from './routes/uploads.js';
import { registerUsageRoutes } from './routes/usage.js';
import type { App, Services } from './services.js';
import type { ObjectStore } from './storage/object-store.js';
import { AdapterIngest } from './uploads/ingest.js';
import { PresignedUploads } from './uploads/presigned.js';

export interface AppDeps {
  db: Db;
  store: ObjectStore;
  config: ApiConfig;
  validation: AdapterValidation;
  routing: RoutingPorts;
  /** Spool directory for uploads (default: the OS temp directory). */
  tmpRoot?: string;
  /** How long verified keys and resolved adapters are served from memory while Postgres is down. */
  cacheTtlMs?: number;
  /** The clock those memories' ages are read on (default systemClock; tests drive one). */
  clock?: Clock;
  /** GET /metrics (default: a registry of this app's own). */
  metrics?: ApiMetrics;
  /** OpenTelemetry traces (default off; startApiServer reads the OTEL_* variables). */
  tracing?: Tracing;
}

/** Paths whose bodies are JSON: bounded in size, then checked by the bounded parser (json-body.ts). */
const JSON_BODIES = [
  '/v1/tenants',
  '/v1/keys',
  '/v1/adapters/uploads',
  '/v1/adapters/uploads/*',
  '/v1/completions',
  '/v1/chat/completions',
  '/generate',
  '/generate_stream',
  '/',
  '/tokenize',
  '/internal/*',
];

/** Paths that need an API key (the part PUT target, heartbeats, health and docs do not). */
const AUTHENTICATED = [
  '/v1/tenants',
  '/v1/keys',
  '/v1/keys/*',
  '/v1/adapters',
  '/v1/adapters/*',
  '/v1/completions',
  '/v1/chat/completions',
  '/v1/models',
  '/v1/usage',
  '/generate',
  '/generate_stream',
  '/',
  '/tokenize',
  '/info',
];

export function createApp(deps: AppDeps): { app: App; services: Services } {
  const auth = new Authenticator(deps.db, {
    ...(deps.config.adminKey !== undefined ? { adminKey: deps.config.adminKey } : {}),
    ...(deps.cacheTtlMs !== undefined ? { cacheTtlMs: deps.cacheTtlMs } : {}),
    ...(deps.clock !== undefined ? { clock: deps.clock } : {}),
  });
  const catalog = new AdapterCatalog(deps.db, deps.cacheTtlMs, deps.clock);
  const ingest = new AdapterIngest({
    catalog,
    store: deps.store,
    validation: deps.validation,
    registry: deps.routing.registry,
    maxAdapterBytes: deps.config.upload.maxUploadBytes,
    ...(deps.tmpRoot !== undefined ? { tmpRoot: deps.tmpRoot } : {}),
  });
  const uploads = new PresignedUploads({
    db: deps.db,
    catalog,
    store: deps.store,
    ingest,
    registry: deps.routing.registry,
    maxAdapterBytes: deps.config.upload.maxUploadBytes,
    partSize: deps.config.upload.partSize,
    ttlS: deps.config.upload.ttlS,
  });
  const services: Services = {
    db: deps.db,
    store: deps.store,
    auth,
    catalog,
    ingest,
    uploads,
    validation: deps.validation,
    routing: deps.routing,
    config: deps.config,
  };

  const app: App = new OpenAPIHono<AuthEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
        return errorResponse(400, 'invalid_request', `${where}${issue?.message ?? 'invalid request'}`);
      }
      return undefined;
    },
  });
  app.onError(handleError);
  app.notFound((c) => errorResponse(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`));

  app.get('/health', (c) => c.json({ status: 'ok' }));
  // Readiness (database, healthy workers): a probe like /health, outside traces and request metrics.
  app.get('/ready', readyHandler(deps.db, deps.routing.registry));
  // Every request but the /health and /ready probes: its server span (traceparent in) and its metrics.
  const metrics = deps.metrics ?? new ApiMetrics({ maxTenants: deps.config.metricsMaxTenants ?? 100 });
  app.use('*', ...tracingMiddleware(deps.tracing), metrics.countRequests());
  // Prometheus text for the platform admin only: the series name tenants.
  app.get('/metrics', authenticate(auth), metrics.handler());
  // The size limit comes before authentication, so an oversized body is cut off whoever sends it.
  // `/` is LoRAX's combined route for POST only: a browser's GET / gets the landing page unauthenticated.
  const on = (p: string, mw: MiddlewareHandler<AuthEnv>): void =>
    void (p === '/' ? app.on('POST', p, mw) : app.use(p, mw));
  for (const p of JSON_BODIES) on(p, limitBody(MAX_BODY_BYTES));
  for (const p of AUTHENTICATED) on(p, maybeTraced(deps.tracing, 'auth', authenticate(auth)));
  for (const p of JSON_BODIES) on(p, checkJsonBody);

  registerTenantRoutes(app, services);
  registerKeyRoutes(app, services);
  registerUploadRoutes(app, services);
  registerAdapterRoutes(app, services);
  registerInferenceRoutes(app, services);
  registerModelRoutes(app, services);
  registerUsageRoutes(app, services);
  registerInternalRoutes(app, services);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'lpx_<prefix>_<secret> API key',
  });
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'loraplex API',
      version: '0.1.0',
      description: 'Multi-tenant LoRA adapter serving: tenants, keys, adapters and OpenAI/LoRAX-compatible inference.',
    },
  });
  registerDocRoutes(app);
  return { app, services };
}
