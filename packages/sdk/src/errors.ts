// Typed errors: every failure a program can act on is its own class, carrying the HTTP status and
// the server's message ({error: {message, type, code}} from the API, LoRAX's {error, error_type}
// from a worker; both envelopes are @loraplex/protocol's).
import type { LoraxErrorEnvelope, OpenAiErrorEnvelope } from '@loraplex/protocol';

export class LoraplexError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly type?: string,
    readonly code?: string | number | null,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** 401: missing, malformed, unknown or revoked API key. */
export class AuthenticationError extends LoraplexError {}
/** 403: the key lacks the scope for this call. */
export class PermissionError extends LoraplexError {}
/** 404: no such adapter, model, key or route (another tenant's adapter looks the same). */
export class NotFoundError extends LoraplexError {}
/** 400, 409, 413, 422: the request or the uploaded adapter is invalid. */
export class ValidationError extends LoraplexError {}
/** 429: a rate, concurrency or adapter-capacity limit; retry after `retryAfter` seconds. */
export class RateLimitError extends LoraplexError {
  constructor(
    message: string,
    status: number,
    type: string | undefined,
    code: string | number | null | undefined,
    readonly retryAfter: number | undefined,
  ) {
    super(message, status, type, code);
  }
}
/** 503: no worker can take the request now; retry after `retryAfter` seconds. */
export class OverloadedError extends LoraplexError {
  constructor(
    message: string,
    status: number,
    type: string | undefined,
    code: string | number | null | undefined,
    readonly retryAfter: number | undefined,
  ) {
    super(message, status, type, code);
  }
}
/** Any other 5xx (and 424: an adapter that failed to load). */
export class ServerError extends LoraplexError {}
/** The server could not be reached, or the connection broke. */
export class ConnectionError extends LoraplexError {}
/** The request took longer than its timeout. */
export class TimeoutError extends LoraplexError {}

/** Retry-After: seconds, or an HTTP date. */
export function parseRetryAfter(v: string | null): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, (t - Date.now()) / 1000);
}

/** Either error envelope, read leniently: a proxy's or an older server's body may hold only some fields. */
type ErrorBody = {
  error?: Partial<Record<keyof OpenAiErrorEnvelope['error'], unknown>> | LoraxErrorEnvelope['error'] | null;
  error_type?: unknown;
};

/** The typed error for a non-2xx response body. */
export function errorFromResponse(status: number, body: unknown, headers: Headers): LoraplexError {
  let message = `HTTP ${status}`,
    type: string | undefined,
    code: string | number | null | undefined;
  const b = body as ErrorBody | null;
  if (b && typeof b.error === 'object' && b.error !== null) {
    const e = b.error;
    if (typeof e.message === 'string') message = e.message;
    if (typeof e.type === 'string') type = e.type;
    if (typeof e.code === 'string' || typeof e.code === 'number') code = e.code;
  } else if (b && typeof b.error === 'string') {
    message = b.error;
    if (typeof b.error_type === 'string') type = b.error_type;
  } else if (typeof body === 'string' && body) {
    message = body;
  }
  const retryAfter = parseRetryAfter(headers.get('retry-after'));
  if (status === 401) return new AuthenticationError(message, status, type, code);
  if (status === 403) return new PermissionError(message, status, type, code);
  if (status === 404) return new NotFoundError(message, status, type, code);
  if (status === 429) return new RateLimitError(message, status, type, code, retryAfter);
  if (status === 503) return new OverloadedError(message, status, type, code, retryAfter);
  if (status >= 400 && status < 500 && status !== 424) return new ValidationError(message, status, type, code);
  return new ServerError(message, status, type, code);
}
