// Middleware as named functions: JSON body parsing, the drain guard, request counting, body limit.
import type { Context, MiddlewareHandler, Next } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { BASE_LABEL } from '../metrics.js';
import type { WorkerContext } from '../worker-context.js';
import { ApiError, badRequest, errorResponse } from './errors.js';
import type { WorkerEnv } from './types.js';

/** Parses the body as JSON (whatever the content type says); malformed JSON or a non-object is a 400. */
export async function parseJsonBody(c: Context<WorkerEnv>, next: Next): Promise<void> {
  const text = await c.req.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw badRequest(`malformed JSON body: ${(e as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  c.set('body', body);
  await next();
}

/** New generation requests get 503 while the worker drains (SIGTERM). */
export function rejectWhileDraining(ctx: WorkerContext): MiddlewareHandler<WorkerEnv> {
  return async function rejectWhileDraining(_c, next) {
    if (!ctx.scheduler.isAccepting) throw new ApiError(503, 'unavailable', 'the worker is shutting down and accepts no new requests');
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

/** Bodies over `maxBytes` are a 413 in the route family's error shape. */
export function limitBody(maxBytes: number): MiddlewareHandler<WorkerEnv> {
  return bodyLimit({ maxSize: maxBytes, onError: (c) => errorResponse(c, new ApiError(413, 'invalid_request_error', `the request body is larger than ${maxBytes} bytes`)) });
}

/** Calls `fn` once when the client goes away (request signal aborted by @hono/node-server, or app.request's signal). */
export function onDisconnect(c: Context, fn: () => void): void {
  const signal = c.req.raw.signal;
  if (!signal) return;
  if (signal.aborted) fn();
  else signal.addEventListener('abort', fn, { once: true });
}
