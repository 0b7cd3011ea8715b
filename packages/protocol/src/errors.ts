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
