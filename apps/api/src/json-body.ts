// Every JSON body the API reads is bounded (docs/platform-contract.md §3): at most MAX_BODY_BYTES
// (413 with Connection: close, the rest not read, so a client pushing gigabytes is cut off rather
// than drained), parsed by the workers' own bounded parser (nesting depth, numbers JSON.parse turns
// into Infinity: 400) before any validator or route sees it. That parse is the only one: validators
// and routes read its value.
import { JsonBodyError, limitBodySize, parseJsonText } from '@loraplex/protocol';
import type { Context, MiddlewareHandler } from 'hono';
import { ApiError, errorResponse } from './errors.js';

const JSON_TYPE = /^application\/([a-z-.]+\+)?json/i;

/** Bodies over `maxBytes` (by Content-Length, or while a chunked one arrives) are a 413 and end the connection. */
export function limitBody(maxBytes: number): MiddlewareHandler {
  return limitBodySize(maxBytes, (_c: Context) =>
    errorResponse(413, 'payload_too_large', `the request body is larger than ${maxBytes} bytes`, {
      connection: 'close',
    }),
  );
}

/**
 * Parses a JSON body with the bounded parser; a body it refuses is a 400. The request's json() then
 * answers that value, so the route's validator (hono's, which calls c.req.json()) and handler use
 * this one parse instead of parsing the text again.
 */
export const checkJsonBody: MiddlewareHandler = async function checkJsonBody(c, next) {
  if (JSON_TYPE.test(c.req.header('content-type') ?? '')) {
    const text = await c.req.text();
    let value: unknown;
    try {
      value = parseJsonText(text);
    } catch (e) {
      if (e instanceof JsonBodyError) throw new ApiError(400, e.code, e.message);
      throw e;
    }
    const parsed = Promise.resolve(value);
    c.req.json = <T>() => parsed as Promise<T>;
  }
  await next();
};
