// LoRAX / text-generation-inference request and response bodies (/generate, /generate_stream, POST /). Every
// field of LoRAX's GenerateParameters is recognised so that lorax-client (which sends all of them,
// mostly null) works; the ones the worker does not implement accept only their neutral value.
// Fields LoRAX does not have are a 400.
import { z } from 'zod';
import { neutralOnly, nullOnly, seedSchema } from './fields.js';
import { loraxFinishReason } from './finish.js';
import { loraxResponseFormat } from './response-format.js';

/** LoRAX's adapter sources. What each means for a worker and for the API: docs/lorax.md. */
export const LORAX_ADAPTER_SOURCES = ['local', 'hub', 's3', 'pbase'] as const;
export type LoraxAdapterSource = (typeof LORAX_ADAPTER_SOURCES)[number];

/** Most candidates of best_of (LoRAX's --max-best-of defaults to 2). */
export const LORAX_MAX_BEST_OF = 4;
/** Most stop sequences per request. */
export const LORAX_MAX_STOP_SEQUENCES = 16;

export const loraxParameters = z.strictObject({
  /** null, absent, "" or the base model id: the base model. */
  adapter_id: z.string().nullish(),
  adapter_source: z
    .enum(LORAX_ADAPTER_SOURCES, {
      error: `adapter_source must be one of ${LORAX_ADAPTER_SOURCES.join(', ')} (or null)`,
    })
    .nullish(),
  merged_adapters: nullOnly('merged_adapters'),
  api_token: nullOnly('api_token'),
  /** n sampled candidates, the one with the highest sum of token logprobs answered (TGI). */
  best_of: z.number().int().gt(0).max(LORAX_MAX_BEST_OF).nullish(),
  temperature: z.number().min(0).nullish(),
  repetition_penalty: z.number().gt(0).max(100).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  top_k: z.number().int().gt(0).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  // The engine's sampler has no typical-decoding filter: only the neutral value (>= 1, i.e. off) is accepted.
  typical_p: z
    .number()
    .min(1, {
      error: 'typical_p is not supported: typical decoding is not implemented (only null or >= 1.0, which is off)',
    })
    .nullish(),
  do_sample: z.boolean().nullish(),
  max_new_tokens: z.number().int().gt(0).nullish(),
  ignore_eos_token: z.boolean().nullish(),
  return_full_text: z.boolean().nullish(),
  stop: z.array(z.string()).max(LORAX_MAX_STOP_SEQUENCES).nullish(),
  /** Keep only the last `truncate` prompt tokens (TGI). */
  truncate: z.number().int().gt(0).nullish(),
  watermark: z
    .literal(false, { error: 'watermark is not supported: generations are never watermarked (only false or null)' })
    .nullish(),
  details: z.boolean().nullish(),
  decoder_input_details: z.boolean().nullish(),
  return_k_alternatives: z.number().int().gt(0).max(20).nullish(),
  apply_chat_template: neutralOnly('apply_chat_template', false),
  seed: seedSchema.nullish(),
  response_format: loraxResponseFormat,
});
export type LoraxParameters = z.infer<typeof loraxParameters>;

export const loraxRequest = z.strictObject({
  inputs: z.string(),
  parameters: loraxParameters.nullish(),
  stream: z.boolean().nullish(),
});
export type LoraxRequest = z.infer<typeof loraxRequest>;

/** One generated token as LoRAX reports it (`skipped`: speculative tokens, never here). */
export const loraxToken = z.object({
  id: z.number().int(),
  text: z.string(),
  logprob: z.number(),
  special: z.boolean(),
  skipped: z.boolean(),
});
export type LoraxToken = z.infer<typeof loraxToken>;

export const loraxAlternativeToken = z.object({ id: z.number().int(), text: z.string(), logprob: z.number() });

export const loraxPrefillToken = z.object({ id: z.number().int(), text: z.string(), logprob: z.number().nullable() });
export type LoraxPrefillToken = z.infer<typeof loraxPrefillToken>;

/** A generated token with its alternatives (return_k_alternatives). */
export const loraxGeneratedToken = loraxToken.extend({ alternative_tokens: z.array(loraxAlternativeToken).optional() });
export type LoraxGeneratedToken = z.infer<typeof loraxGeneratedToken>;

/** The other candidates of best_of, in `details.best_of_sequences`. */
export const loraxBestOfSequence = z.object({
  generated_text: z.string(),
  finish_reason: loraxFinishReason,
  generated_tokens: z.number().int(),
  seed: z.number().int().nullable(),
  prefill: z.array(loraxPrefillToken),
  tokens: z.array(loraxGeneratedToken),
});
export type LoraxBestOfSequence = z.infer<typeof loraxBestOfSequence>;

/** `details` of a /generate answer (parameters.details). */
export const loraxDetails = z.object({
  finish_reason: loraxFinishReason,
  prompt_tokens: z.number().int(),
  generated_tokens: z.number().int(),
  skipped_tokens: z.number().int(),
  seed: z.number().int().nullable(),
  prefill: z.array(loraxPrefillToken),
  tokens: z.array(loraxGeneratedToken),
  best_of_sequences: z.array(loraxBestOfSequence).optional(),
});
export type LoraxDetails = z.infer<typeof loraxDetails>;

/** The answer of /generate (and, in a one-element array, of POST / without stream). */
export const loraxGenerateResponse = z.object({ generated_text: z.string(), details: loraxDetails.optional() });
export type LoraxGenerateResponse = z.infer<typeof loraxGenerateResponse>;

/** `details` of a stream's last event. */
export const loraxStreamDetails = z.object({
  finish_reason: loraxFinishReason,
  prompt_tokens: z.number().int(),
  generated_tokens: z.number().int(),
  seed: z.number().nullable(),
});
export type LoraxStreamDetails = z.infer<typeof loraxStreamDetails>;

/** One event of /generate_stream: a token, and on the last one the whole text (and details when asked). */
export const loraxStreamEvent = z.object({
  token: loraxGeneratedToken,
  generated_text: z.string().nullable(),
  details: loraxStreamDetails.nullable(),
});
export type LoraxStreamEvent = z.infer<typeof loraxStreamEvent>;

/** POST /tokenize: TGI's body ({inputs, parameters}) plus add_special_tokens (default true). */
export const loraxTokenizeRequest = z.strictObject({
  inputs: z.string(),
  parameters: z.looseObject({ adapter_id: z.string().nullish() }).nullish(),
  add_special_tokens: z.boolean().nullish(),
});
export type LoraxTokenizeRequest = z.infer<typeof loraxTokenizeRequest>;

/** One token of /tokenize: its id, its text and its [start, stop) span in `inputs` (UTF-16 units). */
export const loraxSimpleToken = z.object({
  id: z.number().int(),
  text: z.string(),
  start: z.number().int(),
  stop: z.number().int(),
});
export const loraxTokenizeResponse = z.array(loraxSimpleToken);
export type LoraxTokenizeResponse = z.infer<typeof loraxTokenizeResponse>;

/** GET /info (LoRAX's Info: every field its OpenAPI description marks required, plus the nullable ones). */
export const loraxInfo = z.object({
  model_id: z.string(),
  model_sha: z.string().nullable(),
  model_dtype: z.string(),
  model_device_type: z.string(),
  model_pipeline_tag: z.string().nullable(),
  max_concurrent_requests: z.number().int(),
  max_best_of: z.number().int(),
  max_stop_sequences: z.number().int(),
  max_input_length: z.number().int(),
  max_total_tokens: z.number().int(),
  waiting_served_ratio: z.number(),
  max_batch_total_tokens: z.number().int(),
  max_waiting_tokens: z.number().int(),
  validation_workers: z.number().int(),
  version: z.string(),
  sha: z.string().nullable(),
  docker_label: z.string().nullable(),
});
export type LoraxInfo = z.infer<typeof loraxInfo>;
