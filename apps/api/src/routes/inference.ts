// Inference: authenticate (scope inference), resolve the adapter inside the caller's tenant, build
// the worker's body once (worker-proxy/wire.ts prepareRequest: the adapter field rewritten to the adapter
// id, checked against the worker's schema from @loraplex/protocol, usage forced on), hold a
// tenant-limit slot for the whole response, and hand it to the router, recording usage and freeing
// the slot when the response has ended (the router reports that exactly once). The body is parsed
// once (json-body.ts) and shaped by the route's validator.
import { createRoute, z } from '@hono/zod-openapi';
import {
  chatRequest,
  completionRequest,
  describeIssues,
  LORAX_ADAPTER_SOURCES,
  loraxGenerateResponse,
  loraxRequest,
  loraxStreamEvent,
  loraxTokenizeRequest,
  loraxTokenizeResponse,
  type ChatRequest,
  type CompletionRequest,
  type LoraxRequest,
  type LoraxTokenizeRequest,
} from '@loraplex/protocol';
import type { Context } from 'hono';
import { activeTracing, inSpan } from '@loraplex/telemetry';
import { requireScope, tenantOf, type AuthEnv } from '../auth/middleware.js';
import { ApiError, badRequest, errorResponse } from '../errors.js';
import type { AdapterTarget, BaseModelRecord } from '../ports.js';
import { prepareRequest } from '../worker-proxy/index.js';
import type { App, Services } from '../services.js';
import { authErrors, errors, jsonBody, openapi } from './schemas.js';

type Family = 'openai' | 'lorax';

type InferencePath = '/v1/completions' | '/v1/chat/completions' | '/generate' | '/generate_stream' | '/' | '/tokenize';

/** What the worker's schema accepts. */
type WorkerRequest = CompletionRequest | ChatRequest | LoraxRequest | LoraxTokenizeRequest;

interface Target {
  baseModel: string;
  adapter?: AdapterTarget;
  adapterRef: string | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The adapter a request names, or undefined for the base model. */
function requestedRef(family: Family, body: Record<string, unknown>): string | undefined {
  if (family === 'openai') {
    if (typeof body.model !== 'string' || body.model === '')
      throw badRequest('model is required: a base model id or an adapter (name, name@version or id)', 'missing_model');
    return body.model;
  }
  // Workers read an OpenAI `model` before `parameters.adapter_id`; a LoRAX body carrying one would
  // reach a worker naming an adapter the API never resolved for this tenant (and could probe which
  // adapter ids a worker knows), so it is refused here, as LoRAX itself has no such field.
  if (body.model !== undefined)
    throw badRequest(
      'model is not a field of LoRAX requests: name the adapter in parameters.adapter_id',
      'unsupported_parameter',
    );
  const params = body.parameters;
  if (params === undefined || params === null) return undefined;
  if (!isObject(params)) throw badRequest('parameters must be an object');
  if (params.merged_adapters !== undefined && params.merged_adapters !== null)
    throw badRequest('merged_adapters is not supported', 'unsupported_parameter');
  checkAdapterSource(params.adapter_source);
  const id = params.adapter_id;
  if (id === undefined || id === null || id === '') return undefined;
  if (typeof id !== 'string') throw badRequest('parameters.adapter_id must be a string');
  return id;
}

/** Where each refused adapter_source's adapter can be taken from before it is uploaded here. */
const SOURCE_HINT: Record<string, string> = {
  hub: 'download it from the Hugging Face Hub',
  s3: 'copy it out of S3',
  pbase: 'export it from Predibase',
};

/**
 * adapter_source on the API (docs/lorax.md): null, absent or "local" = this tenant's uploaded
 * adapters (the API's own store, as a worker's "local" is its own --adapter-dir). The API fetches
 * nothing from elsewhere, so hub, s3 and pbase are a 400 saying how to serve the adapter instead.
 */
function checkAdapterSource(src: unknown): void {
  if (src === undefined || src === null || src === 'local') return;
  if (typeof src !== 'string' || !(LORAX_ADAPTER_SOURCES as readonly string[]).includes(src)) {
    throw badRequest(
      `adapter_source must be one of ${LORAX_ADAPTER_SOURCES.join(', ')} (or null)`,
      'invalid_adapter_source',
    );
  }
  throw badRequest(
    `adapter_source ${JSON.stringify(src)} is not served by this API: it serves only your tenant's uploaded adapters. ` +
      `To use this adapter, ${SOURCE_HINT[src]!}, upload it (POST /v1/adapters or /v1/adapters/uploads), then name it in ` +
      'parameters.adapter_id (name, name@version or id) with adapter_source "local" or null.',
    'invalid_adapter_source',
  );
}

async function resolveTarget(
  s: Services,
  tenantId: string,
  family: Family,
  body: Record<string, unknown>,
): Promise<Target> {
  const ref = requestedRef(family, body);
  const bases: BaseModelRecord[] = await s.routing.registry.baseModels();
  if (ref === undefined || bases.some((b) => b.id === ref)) {
    const baseModel = ref ?? (bases.length === 1 ? bases[0]!.id : undefined);
    if (baseModel === undefined) {
      throw bases.length === 0
        ? new ApiError(503, 'no_workers', 'no base model is being served yet', { 'Retry-After': '2' })
        : badRequest(
            `several base models are served (${bases.map((b) => b.id).join(', ')}): name one in parameters.adapter_id`,
            'base_model_required',
          );
    }
    return { baseModel, adapterRef: null };
  }
  const row = await s.catalog.resolveReady(tenantId, ref);
  return {
    baseModel: row.baseModel,
    adapterRef: `${row.name}@${row.version}`,
    adapter: {
      id: row.id,
      baseModel: row.baseModel,
      rank: row.rank ?? 0,
      storage: s.store.descriptorStorage(row.storageKey),
      files: row.files ?? [],
    },
  };
}

/** The worker's own schema for each route: the API refuses what a worker would, before routing. */
const WORKER_SCHEMAS: Record<InferencePath, z.ZodType<WorkerRequest>> = {
  '/v1/completions': completionRequest,
  '/v1/chat/completions': chatRequest,
  '/generate': loraxRequest,
  '/generate_stream': loraxRequest,
  '/': loraxRequest,
  '/tokenize': loraxTokenizeRequest,
};

/**
 * Checks the body a worker will get (before usage is forced on) with the worker's schema (a 400
 * worded as the worker's), so nothing is forwarded that the worker would refuse, nor anything JSON
 * cannot carry unchanged. The schemas only check (strict objects, no defaults or transforms), so
 * the checked body is what is sent.
 */
function checkWorkerBody(path: string, forwarded: Record<string, unknown>): WorkerRequest {
  const r = WORKER_SCHEMAS[path as InferencePath].safeParse(forwarded);
  if (!r.success) throw badRequest(describeIssues(r.error.issues).message);
  return r.data;
}

async function infer(
  c: Context<AuthEnv>,
  s: Services,
  path: InferencePath,
  family: Family,
  body: Record<string, unknown>,
): Promise<Response> {
  const tenantId = tenantOf(c.get('principal'));
  const target = activeTracing()
    ? await inSpan('adapter.resolve', () => resolveTarget(s, tenantId, family, body))
    : await resolveTarget(s, tenantId, family, body);
  const prepared = prepareRequest(path, body, target.adapter?.id, target.baseModel, undefined, checkWorkerBody);
  const slot = s.routing.limits.acquire(tenantId);
  if (typeof slot !== 'function') {
    return errorResponse(429, 'rate_limited', `too many requests for this tenant; retry after ${slot.retryAfterS} s`, {
      'Retry-After': String(slot.retryAfterS),
    });
  }
  try {
    return await s.routing.router.forward({
      path,
      body,
      prepared,
      ...(target.adapter ? { adapter: target.adapter } : {}),
      baseModel: target.baseModel,
      signal: c.req.raw.signal,
      // Once, when the response has ended (a stream: after its last byte, or when it was cancelled).
      onUsage: (u) => {
        slot(u.promptTokens + u.completionTokens);
        s.routing.usage.record({
          tenantId,
          adapterId: target.adapter?.id ?? null,
          adapterRef: target.adapterRef,
          baseModel: target.baseModel,
          route: path,
          status: u.status,
          promptTokens: u.promptTokens,
          completionTokens: u.completionTokens,
          latencyMs: u.latencyMs,
        });
      },
    });
  } catch (e) {
    slot();
    throw e;
  }
}

const security = [{ bearer: [] }];
const inference = requireScope(['inference'], { tenant: true });

const OpenAIBody = z.looseObject({
  model: z.string().openapi({ description: 'A base model id, or an adapter: name, name@version or id' }),
});
const LoraxBody = z.looseObject({
  inputs: z.string(),
  parameters: z
    .looseObject({
      adapter_id: z.string().nullish().openapi({
        description: "null or absent: the base model; else one of the tenant's adapters (name, name@version or id)",
      }),
      adapter_source: z
        .string()
        .nullish()
        .openapi({ description: 'null or "local" (the tenant\'s uploaded adapters); hub, s3 and pbase are refused' }),
    })
    .nullish(),
  stream: z
    .boolean()
    .nullish()
    .openapi({ description: 'POST / only: true answers server-sent events, else [GenerateResponse]' }),
});
const TokenizeBody = z.looseObject({ inputs: z.string(), add_special_tokens: z.boolean().nullish() });

const proxiedErrors = { ...authErrors, 404: errors[404], 429: errors[429], 503: errors[503] };
const proxied = {
  200: { description: "The worker's response (JSON, or text/event-stream when streaming)" },
  ...proxiedErrors,
};

/** The LoRAX answers' schemas (@loraplex/protocol's), for the OpenAPI document. */
const GenerateResponse = openapi(loraxGenerateResponse, 'LoraxGenerateResponse');
const StreamEvent = openapi(loraxStreamEvent, 'LoraxStreamEvent');
const sse = { 'text/event-stream': { schema: StreamEvent } };
const LORAX_RESPONSES: Partial<Record<InferencePath, Record<number, unknown>>> = {
  '/generate': {
    200: {
      description: 'The generated text (details when parameters.details)',
      content: { 'application/json': { schema: GenerateResponse } },
    },
    ...proxiedErrors,
  },
  '/generate_stream': {
    200: {
      description: 'One server-sent event per token; the last carries generated_text (and details)',
      content: sse,
    },
    ...proxiedErrors,
  },
  '/': {
    200: {
      description: '[GenerateResponse], or the events of /generate_stream when `stream` is true',
      content: { 'application/json': { schema: z.array(GenerateResponse) }, ...sse },
    },
    ...proxiedErrors,
  },
  '/tokenize': {
    200: {
      description: 'The tokens of inputs',
      content: { 'application/json': { schema: openapi(loraxTokenizeResponse, 'LoraxTokenizeResponse') } },
    },
    ...proxiedErrors,
  },
};

export function registerInferenceRoutes(app: App, s: Services): void {
  const routes: Array<{ path: InferencePath; family: Family; summary: string }> = [
    { path: '/v1/completions', family: 'openai', summary: 'OpenAI completions' },
    { path: '/v1/chat/completions', family: 'openai', summary: 'OpenAI chat completions' },
    { path: '/generate', family: 'lorax', summary: 'LoRAX generate' },
    { path: '/generate_stream', family: 'lorax', summary: 'LoRAX generate (server-sent events)' },
    {
      path: '/',
      family: 'lorax',
      summary: 'LoRAX generate, streamed when `stream` is true (the route lorax-client calls)',
    },
    {
      path: '/tokenize',
      family: 'lorax',
      summary: "LoRAX tokenize: the base model's tokens of `inputs`, with their spans",
    },
  ];
  for (const r of routes) {
    app.openapi(
      createRoute({
        method: 'post',
        path: r.path,
        tags: ['inference'],
        summary: r.summary,
        security,
        middleware: inference,
        request: {
          body: jsonBody(r.family === 'openai' ? OpenAIBody : r.path === '/tokenize' ? TokenizeBody : LoraxBody),
        },
        responses: (LORAX_RESPONSES[r.path] ?? proxied) as typeof proxied,
      }),
      // The validator's value: the body as parsed once by checkJsonBody, shaped by OpenAIBody / LoraxBody.
      async (c) => infer(c, s, r.path, r.family, c.req.valid('json')) as never,
    );
  }
}
