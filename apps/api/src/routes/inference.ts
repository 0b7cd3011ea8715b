// Inference: authenticate (scope inference), resolve the adapter inside the caller's tenant, build
// the worker's body once (routing/wire.ts prepareRequest: the adapter field rewritten to the adapter
// id, checked against the worker's schema from @loraplex/protocol, usage forced on), hold a
// tenant-limit slot for the whole response, and hand it to the router, recording usage and freeing
// the slot when the response has ended (the router reports that exactly once). The body is parsed
// once (json-body.ts) and shaped by the route's validator.
import { createRoute, z } from '@hono/zod-openapi';
import { chatRequest, completionRequest, describeIssues, loraxRequest, type ChatRequest, type CompletionRequest, type LoraxRequest } from '@loraplex/protocol';
import type { Context } from 'hono';
import { activeTracing, inSpan } from '@loraplex/telemetry';
import { requireScope, tenantOf, type AuthEnv } from '../auth/middleware.js';
import { ApiError, badRequest, errorResponse } from '../errors.js';
import type { AdapterTarget, BaseModelRecord } from '../ports.js';
import { prepareRequest } from '../routing/index.js';
import type { App, Services } from '../services.js';
import { authErrors, errors, jsonBody } from './schemas.js';

type Family = 'openai' | 'lorax';

type InferencePath = '/v1/completions' | '/v1/chat/completions' | '/generate' | '/generate_stream';

/** What the worker's schema accepts. */
type WorkerRequest = CompletionRequest | ChatRequest | LoraxRequest;

interface Target {
  baseModel: string;
  adapter?: AdapterTarget;
  adapterRef: string | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The adapter a request names, or undefined for the base model. */
function requestedRef(family: Family, body: Record<string, unknown>): string | undefined {
  if (family === 'openai') {
    if (typeof body.model !== 'string' || body.model === '') throw badRequest('model is required: a base model id or an adapter (name, name@version or id)', 'missing_model');
    return body.model;
  }
  // Workers read an OpenAI `model` before `parameters.adapter_id`; a LoRAX body carrying one would
  // reach a worker naming an adapter the API never resolved for this tenant (and could probe which
  // adapter ids a worker knows), so it is refused here, as LoRAX itself has no such field.
  if (body.model !== undefined) throw badRequest('model is not a field of LoRAX requests: name the adapter in parameters.adapter_id', 'unsupported_parameter');
  const params = body.parameters;
  if (params === undefined) return undefined;
  if (!isObject(params)) throw badRequest('parameters must be an object');
  if (params.merged_adapters !== undefined && params.merged_adapters !== null) throw badRequest('merged_adapters is not supported', 'unsupported_parameter');
  const src = params.adapter_source;
  if (src !== undefined && src !== null && src !== 'hub') throw badRequest(`adapter_source ${JSON.stringify(src)} is not accepted: adapters are uploaded to this API and named by adapter_id`, 'invalid_adapter_source');
  const id = params.adapter_id;
  if (id === undefined || id === null || id === '') return undefined;
  if (typeof id !== 'string') throw badRequest('parameters.adapter_id must be a string');
  return id;
}

async function resolveTarget(s: Services, tenantId: string, family: Family, body: Record<string, unknown>): Promise<Target> {
  const ref = requestedRef(family, body);
  const bases: BaseModelRecord[] = await s.routing.registry.baseModels();
  if (ref === undefined || bases.some((b) => b.id === ref)) {
    const baseModel = ref ?? (bases.length === 1 ? bases[0]!.id : undefined);
    if (baseModel === undefined) {
      throw bases.length === 0 ? new ApiError(503, 'no_workers', 'no base model is being served yet', { 'Retry-After': '2' }) : badRequest(`several base models are served (${bases.map((b) => b.id).join(', ')}): name one in parameters.adapter_id`, 'base_model_required');
    }
    return { baseModel, adapterRef: null };
  }
  const row = await s.catalog.resolveReady(tenantId, ref);
  return {
    baseModel: row.baseModel,
    adapterRef: `${row.name}@${row.version}`,
    adapter: { id: row.id, baseModel: row.baseModel, rank: row.rank ?? 0, storage: s.store.descriptorStorage(row.storageKey), files: row.files ?? [] },
  };
}

/** The worker's own schema for each route: the API refuses what a worker would, before routing. */
const WORKER_SCHEMAS: Record<InferencePath, z.ZodType<WorkerRequest>> = {
  '/v1/completions': completionRequest,
  '/v1/chat/completions': chatRequest,
  '/generate': loraxRequest,
  '/generate_stream': loraxRequest,
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

async function infer(c: Context<AuthEnv>, s: Services, path: InferencePath, family: Family, body: Record<string, unknown>): Promise<Response> {
  const tenantId = tenantOf(c.get('principal'));
  const target = activeTracing() ? await inSpan('adapter.resolve', () => resolveTarget(s, tenantId, family, body)) : await resolveTarget(s, tenantId, family, body);
  const prepared = prepareRequest(path, body, target.adapter?.id, target.baseModel, undefined, checkWorkerBody);
  const slot = s.routing.limits.acquire(tenantId);
  if (typeof slot !== 'function') {
    return errorResponse(429, 'rate_limited', `too many requests for this tenant; retry after ${slot.retryAfterS} s`, { 'Retry-After': String(slot.retryAfterS) });
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

const OpenAIBody = z.looseObject({ model: z.string().openapi({ description: 'A base model id, or an adapter: name, name@version or id' }) });
const LoraxBody = z.looseObject({ inputs: z.string(), parameters: z.looseObject({ adapter_id: z.string().optional() }).optional() });

const proxied = { 200: { description: "The worker's response (JSON, or text/event-stream when streaming)" }, ...authErrors, 404: errors[404], 429: errors[429], 503: errors[503] };

export function registerInferenceRoutes(app: App, s: Services): void {
  const routes: Array<{ path: InferencePath; family: Family; summary: string }> = [
    { path: '/v1/completions', family: 'openai', summary: 'OpenAI completions' },
    { path: '/v1/chat/completions', family: 'openai', summary: 'OpenAI chat completions' },
    { path: '/generate', family: 'lorax', summary: 'LoRAX generate' },
    { path: '/generate_stream', family: 'lorax', summary: 'LoRAX generate (server-sent events)' },
  ];
  for (const r of routes) {
    app.openapi(
      createRoute({
        method: 'post', path: r.path, tags: ['inference'], summary: r.summary, security, middleware: inference,
        request: { body: jsonBody(r.family === 'openai' ? OpenAIBody : LoraxBody) },
        responses: proxied,
      }),
      // The validator's value: the body as parsed once by checkJsonBody, shaped by OpenAIBody / LoraxBody.
      async (c) => infer(c, s, r.path, r.family, c.req.valid('json')) as never,
    );
  }
}
