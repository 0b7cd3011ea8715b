// The lorax-client's (Python, clients/python/lorax/types.py) view of a server's answers, as zod
// schemas: what its pydantic models require, field by field (required = the key must be there with
// that type; Optional[...] = null or absent; extra keys are ignored, as pydantic does). Kept apart
// from @loraplex/protocol's server-side schemas on purpose: these are the client's contract, written
// from its models (see /work/shared/reference/lorax-client-models.md), and the tests check the
// servers' answers against them.
import { z } from 'zod';

const int = z.number().int();
/** pydantic's `float`: any JSON number (never null). */
const float = z.number();
/** pydantic's `Optional[X] = None`: null, absent, or X. */
const optional = <T extends z.ZodType>(t: T) => t.nullish();

const finishReason = z.enum(['length', 'eos_token', 'stop_sequence']);

export const clientInputToken = z.looseObject({ id: int, text: z.string(), logprob: optional(float) });
export const clientAlternativeToken = z.looseObject({ id: int, text: z.string(), logprob: float });
export const clientToken = z.looseObject({
  id: int,
  text: z.string(),
  logprob: float,
  special: z.boolean(),
  alternative_tokens: optional(z.array(clientAlternativeToken)),
  skipped: z.boolean(),
});
export const clientBestOfSequence = z.looseObject({
  generated_text: z.string(),
  finish_reason: finishReason,
  generated_tokens: int,
  seed: optional(int),
  prefill: z.array(clientInputToken),
  tokens: z.array(clientToken),
});
export const clientDetails = z.looseObject({
  finish_reason: finishReason,
  prompt_tokens: int,
  generated_tokens: int,
  skipped_tokens: int,
  seed: optional(int),
  prefill: z.array(clientInputToken),
  tokens: z.array(clientToken),
  best_of_sequences: optional(z.array(clientBestOfSequence)),
});
/** `Response` (Client.generate parses payload[0] of POST /, or the object of /generate). */
export const clientResponse = z.looseObject({ generated_text: z.string(), details: optional(clientDetails) });
export const clientStreamDetails = z.looseObject({
  finish_reason: finishReason,
  prompt_tokens: int,
  generated_tokens: int,
  seed: optional(int),
});
/** `StreamResponse`: one per SSE event. */
export const clientStreamResponse = z.looseObject({
  token: clientToken,
  generated_text: optional(z.string()),
  details: optional(clientStreamDetails),
});
/** errors.py's parse_error reads `error` (the message) and `error_type`. */
export const clientError = z.looseObject({ error: z.string(), error_type: z.string() });

/** /info as LoRAX's OpenAPI description requires it (the Python client has no /info call). */
export const clientInfo = z.looseObject({
  model_id: z.string(),
  model_dtype: z.string(),
  model_device_type: z.string(),
  max_concurrent_requests: int,
  max_best_of: int,
  max_stop_sequences: int,
  max_input_length: int,
  max_total_tokens: int,
  waiting_served_ratio: float,
  max_batch_total_tokens: int,
  max_waiting_tokens: int,
  validation_workers: int,
  version: z.string(),
  model_sha: optional(z.string()),
  model_pipeline_tag: optional(z.string()),
  sha: optional(z.string()),
  docker_label: optional(z.string()),
});
/** /tokenize: TGI's TokenizeResponse, a list of SimpleToken. */
export const clientTokenizeResponse = z.array(z.looseObject({ id: int, text: z.string(), start: int, stop: int }));

/** The body lorax-client sends: every Parameters field, null when unset (Request.dict()). */
export function clientBody(
  inputs: string,
  stream: boolean,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  const parameters = {
    adapter_id: null,
    adapter_source: null,
    merged_adapters: null,
    api_token: null,
    do_sample: false,
    max_new_tokens: 4,
    ignore_eos_token: false,
    repetition_penalty: null,
    return_full_text: false,
    stop: [],
    seed: null,
    temperature: null,
    top_k: null,
    top_p: null,
    truncate: null,
    typical_p: null,
    best_of: null,
    watermark: false,
    details: true,
    decoder_input_details: false,
    return_k_alternatives: null,
    response_format: null,
    ...over,
  };
  return { inputs, parameters, stream };
}

/** Parses with a client model, failing with zod's issues and the payload (what pydantic would refuse). */
export function asClient<T extends z.ZodType>(model: T, payload: unknown): z.infer<T> {
  const r = model.safeParse(payload);
  if (!r.success)
    throw new Error(
      `lorax-client would refuse this payload: ${z.prettifyError(r.error)}\n${JSON.stringify(payload).slice(0, 2000)}`,
    );
  return r.data;
}
