// Error responses. OpenAI routes (/v1/*) answer {error: {message, type, param, code}} (code = the
// HTTP status, as vLLM does); LoRAX routes answer LoRAX's {error, error_type}.
import { EngineError } from '@loraplex/engine';
import { loraxError, openAiError, type LoraxErrorEnvelope, type OpenAiErrorEnvelope } from '@loraplex/protocol';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { SequenceError } from '../scheduler/sequence.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param: string | null = null,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, param: string | null = null): ApiError =>
  new ApiError(400, 'invalid_request_error', message, param);
export const notFound = (message: string): ApiError => new ApiError(404, 'not_found_error', message);

export function isOpenAiPath(path: string): boolean {
  return path.startsWith('/v1/');
}

export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof SequenceError) return new ApiError(err.status, err.type, err.message, null, err.retryAfter);
  if (err instanceof EngineError && (err.code === 'INVALID_ARGUMENT' || err.code === 'TOKENIZER'))
    return new ApiError(400, 'invalid_request_error', err.message);
  if (err instanceof HTTPException)
    return new ApiError(
      err.status,
      err.status === 413 ? 'invalid_request_error' : 'http_error',
      err.message || `HTTP ${err.status}`,
    );
  return new ApiError(500, 'internal_error', err instanceof Error ? err.message : String(err));
}

/** The error as the JSON body of the route family. */
export function errorBody(path: string, e: ApiError): OpenAiErrorEnvelope | LoraxErrorEnvelope {
  if (isOpenAiPath(path)) return openAiError(e.status, e.type, e.message, e.param);
  return loraxError(e.status, e.type, e.message);
}

export function errorResponse(c: Context, err: unknown): Response {
  const e = toApiError(err);
  if (e.status >= 500 && e.status !== 503) console.error(`[worker] ${c.req.method} ${c.req.path}: ${e.message}`);
  if (e.retryAfter !== undefined) c.header('Retry-After', String(e.retryAfter));
  return c.json(errorBody(c.req.path, e), e.status as ContentfulStatusCode);
}
