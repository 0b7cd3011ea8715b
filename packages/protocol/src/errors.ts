// Error bodies. OpenAI routes answer {error: {message, type, code, param?}}: the worker's `code` is
// the HTTP status (as vLLM's) and it names the field in `param`; the API's `code` is a machine
// string and it sends no `param`. LoRAX routes answer LoRAX's {error, error_type}.
import { z } from 'zod';

export const openAiErrorEnvelope = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable().optional(),
    code: z.union([z.string(), z.number()]).nullable(),
  }),
});
export type OpenAiErrorEnvelope = z.infer<typeof openAiErrorEnvelope>;

export const loraxErrorEnvelope = z.object({ error: z.string(), error_type: z.string() });
export type LoraxErrorEnvelope = z.infer<typeof loraxErrorEnvelope>;

/** The worker's OpenAI error: `code` is the status, `param` the field at fault (or null). */
export function openAiError(status: number, type: string, message: string, param: string | null): OpenAiErrorEnvelope {
  return { error: { message, type, param, code: status } };
}

/** LoRAX's error_type for a status; other statuses keep the OpenAI-style `type`. */
export function loraxErrorType(status: number, type: string): string {
  if (status === 400 || status === 422) return 'validation';
  if (status === 424 || status === 500) return 'generation';
  if (status === 503 || status === 429) return 'overloaded';
  return type;
}

export function loraxError(status: number, type: string, message: string): LoraxErrorEnvelope {
  return { error: message, error_type: loraxErrorType(status, type) };
}

/** What a client can read of any error body: either envelope, or only the parts that are there. */
export interface ErrorFields {
  message?: string;
  type?: string;
  code?: string | number;
}

/** Reads an error body leniently (a proxy's plain-text or partial body still gives what it has). */
export function readErrorBody(body: unknown): ErrorFields {
  const out: ErrorFields = {};
  const b = body as { error?: unknown; error_type?: unknown } | null;
  if (b && typeof b.error === 'object' && b.error !== null) {
    const e = b.error as { message?: unknown; type?: unknown; code?: unknown };
    if (typeof e.message === 'string') out.message = e.message;
    if (typeof e.type === 'string') out.type = e.type;
    if (typeof e.code === 'string' || typeof e.code === 'number') out.code = e.code;
  } else if (b && typeof b.error === 'string') {
    out.message = b.error;
    if (typeof b.error_type === 'string') out.type = b.error_type;
  } else if (typeof body === 'string' && body) {
    out.message = body;
  }
  return out;
}
