// OpenAI-style errors: {error: {message, type, code}} with the matching status (contract §3); the
// body's schema is @loraplex/protocol's apiError.
import type { ApiErrorBody } from '@loraplex/protocol';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
  503: 'overloaded_error',
};

export function errorType(status: number): string {
  return TYPE_BY_STATUS[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
}

/** An error the API answers as is; everything else becomes a 500 with no internals. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, code = 'invalid_request'): ApiError => new ApiError(400, code, message);
export const notFound = (message: string, code = 'not_found'): ApiError => new ApiError(404, code, message);
export const tooLarge = (message: string): ApiError => new ApiError(413, 'payload_too_large', message);
export const unavailable = (message: string, retryAfterS = 1): ApiError =>
  new ApiError(503, 'unavailable', message, { 'Retry-After': String(retryAfterS) });

/** The object store (S3 or the data directory) failed: distinct from the database being down. */
export function objectStoreUnavailable(what: string, cause: unknown): ApiError {
  const e = new ApiError(
    503,
    'object_store_unavailable',
    `the object store is unreachable (${what} failed); retry shortly`,
    { 'Retry-After': '2' },
  );
  e.cause = cause;
  return e;
}

export function errorBody(status: number, code: string, message: string): ApiErrorBody {
  return { error: { message, type: errorType(status), code } };
}

export function errorResponse(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(errorBody(status, code, message)), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** app.onError: ApiError and HTTPException keep their status; anything else is logged and hidden. */
export function handleError(err: Error, c: Context): Response {
  if (err instanceof ApiError) return errorResponse(err.status, err.code, err.message, err.headers);
  if (err instanceof HTTPException) {
    const status = err.status;
    const message = err.message || (status === 400 ? 'malformed request' : 'request failed');
    const code = /malformed json/i.test(message)
      ? 'invalid_json'
      : status === 413
        ? 'payload_too_large'
        : 'invalid_request';
    return errorResponse(status, code, message);
  }
  if (isDatabaseUnreachable(err)) {
    console.warn(`[api] ${c.req.method} ${c.req.path}: database unreachable: ${err.message}`);
    return errorResponse(503, 'database_unavailable', 'the database is unreachable; retry shortly', {
      'Retry-After': '2',
    });
  }
  const s = (err as { status?: unknown }).status;
  if (typeof s === 'number' && s >= 400 && s < 500) {
    const code =
      typeof (err as { code?: unknown }).code === 'string'
        ? (err as unknown as { code: string }).code
        : 'invalid_request';
    return errorResponse(s, code, err.message);
  }
  console.error(`[api] ${c.req.method} ${c.req.path}:`, err);
  return errorResponse(500, 'internal_error', 'internal server error');
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08006',
]);

/** Postgres down or restarting (node-postgres errors, possibly wrapped by drizzle). */
export function isDatabaseUnreachable(err: unknown): boolean {
  for (let x: unknown = err, depth = 0; x && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    const code = (x as { code?: unknown }).code;
    if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) return true;
    const msg = x instanceof Error ? x.message : '';
    if (
      /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
        msg,
      )
    )
      return true;
  }
  return false;
}
