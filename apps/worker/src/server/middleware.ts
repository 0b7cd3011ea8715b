// Middleware as named functions: JSON body parsing, the drain guard, request counting, body limit.
import type { Context, MiddlewareHandler, Next } from 'hono';
import { DESCRIPTOR_HEADER, verifyDescriptor, type DescriptorRegistry } from '../adapters/descriptors.js';
import { BASE_LABEL } from '../metrics.js';
import type { WorkerContext } from '../worker-context.js';
import { JsonBodyError, limitBodySize, parseJsonText } from '@loraplex/protocol';
import { ApiError, badRequest, errorResponse } from './errors.js';
import type { WorkerEnv } from './types.js';

/** Parses the body as JSON (whatever the content type says); malformed, too deep (json-body.ts) or a non-object is a 400. */
export async function parseJsonBody(c: Context<WorkerEnv>, next: Next): Promise<void> {
  const text = await c.req.text();
  let body: unknown;
  try {
    body = parseJsonText(text);
  } catch (e) {
    throw e instanceof JsonBodyError ? badRequest(e.message, e.param) : e;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('the request body must be a JSON object');
  c.set('body', body);
  await next();
}

/** New generation requests get 503 while the worker drains (SIGTERM). */
export function rejectWhileDraining(ctx: WorkerContext): MiddlewareHandler<WorkerEnv> {
  return async function rejectWhileDraining(_c, next) {
    if (!ctx.scheduler.isAccepting)
      throw new ApiError(503, 'unavailable', 'the worker is shutting down and accepts no new requests');
    await next();
  };
}

/** Counts generation requests by adapter, route and status (streams count when their headers go out). */
export function countRequests(ctx: WorkerContext, route: string): MiddlewareHandler<WorkerEnv> {
  return async function countRequests(c, next) {
    await next();
    const adapter = c.get('adapterLabel') ?? 'unresolved';
    ctx.metrics.requests.inc({ adapter, route, status: String(c.res.status) });
  };
}

/**
 * Bodies over `maxBytes` are a 413 in the route family's error shape, with Connection: close so the
 * rest of the body is not read (kept alive, the connection would be drained for the next request).
 */
export function limitBody(maxBytes: number): MiddlewareHandler<WorkerEnv> {
  return limitBodySize(maxBytes, (c: Context<WorkerEnv>) => {
    c.header('Connection', 'close');
    return errorResponse(
      c,
      new ApiError(413, 'invalid_request_error', `the request body is larger than ${maxBytes} bytes`),
    );
  });
}

/** Calls `fn` once when the client goes away (request signal aborted by @hono/node-server, or app.request's signal). */
export function onDisconnect(c: Context, fn: () => void): void {
  const signal = c.req.raw.signal;
  if (!signal) return;
  if (signal.aborted) fn();
  else signal.addEventListener('abort', fn, { once: true });
}

/** The adapter a generation body names: OpenAI `model` or LoRAX `parameters.adapter_id`. */
function adapterField(body: unknown): unknown {
  const b = body as { model?: unknown; parameters?: { adapter_id?: unknown } | null };
  return b.model !== undefined ? b.model : b.parameters?.adapter_id;
}

/**
 * Signed adapter descriptors (docs/platform-contract.md §1): a valid X-Loraplex-Adapter header
 * registers the adapter it describes for this request; a request naming a descriptor-registered
 * adapter without a valid descriptor for it gets the 404 of an unknown adapter. Runs after
 * parseJsonBody.
 */
export function adapterDescriptor(
  ctx: WorkerContext,
  registry: DescriptorRegistry,
  secret: string | undefined,
): MiddlewareHandler<WorkerEnv> {
  return async function adapterDescriptor(c, next) {
    const header = c.req.header(DESCRIPTOR_HEADER);
    const name = adapterField(c.get('body'));
    if (header !== undefined) {
      const d = verifyDescriptor(header, secret);
      if (name !== d.id)
        throw badRequest(`the request names adapter ${String(name)} but its descriptor is for ${d.id}`);
      if (d.base_model !== ctx.modelId)
        throw badRequest(
          `the descriptor's adapter is for base model ${d.base_model}; this worker serves ${ctx.modelId}`,
        );
      registry.register(d);
    } else if (typeof name === 'string' && registry.has(name)) {
      throw new ApiError(404, 'not_found_error', `The model \`${name}\` does not exist`);
    }
    await next();
  };
}
