// LoRAX / text-generation-inference request and response bodies (/generate, /generate_stream, POST /). Every
// field of LoRAX's GenerateParameters is recognised so that lorax-client (which sends all of them,
// mostly null) works; the ones the worker does not implement accept only their neutral value.
// Fields LoRAX does not have are a 400.
import { z } from 'zod';
import { neutralOnly, nullOnly, seedSchema } from './fields.js';
import { loraxFinishReason } from './finish.js';
import { loraxResponseFormat } from './response-format.js';

export const loraxParameters = z.strictObject({
  adapter_id: z.string().nullish(),
  adapter_source: z.enum(['local'], { error: 'adapter_source: only local adapters (the --adapter-dir) are served' }).nullish(),
  merged_adapters: nullOnly('merged_adapters'),
  api_token: nullOnly('api_token'),
  best_of: neutralOnly('best_of', 1),
  temperature: z.number().min(0).nullish(),
  repetition_penalty: z.number().gt(0).max(100).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  top_k: z.number().int().gt(0).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  typical_p: nullOnly('typical_p'),
  do_sample: z.boolean().nullish(),
  max_new_tokens: z.number().int().gt(0).nullish(),
  ignore_eos_token: z.boolean().nullish(),
  return_full_text: z.boolean().nullish(),
  stop: z.array(z.string()).max(16).nullish(),
  truncate: nullOnly('truncate'),
  watermark: neutralOnly('watermark', false),
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

/** One generated (or prefill) token as LoRAX reports it. */
export const loraxToken = z.object({
  id: z.number().int(),
  text: z.string(),
  logprob: z.number().nullable(),
  special: z.boolean(),
});
export type LoraxToken = z.infer<typeof loraxToken>;

export const loraxAlternativeToken = z.object({ id: z.number().int(), text: z.string(), logprob: z.number() });

export const loraxPrefillToken = z.object({ id: z.number().int(), text: z.string(), logprob: z.number().nullable() });

/** A generated token with its alternatives (return_k_alternatives). */
export const loraxGeneratedToken = loraxToken.extend({ alternative_tokens: z.array(loraxAlternativeToken).optional() });
export type LoraxGeneratedToken = z.infer<typeof loraxGeneratedToken>;

/** `details` of a /generate answer (parameters.details). */
export const loraxDetails = z.object({
  finish_reason: loraxFinishReason,
  prompt_tokens: z.number().int(),
  generated_tokens: z.number().int(),
  skipped_tokens: z.number().int(),
  seed: z.number().nullable(),
  prefill: z.array(loraxPrefillToken),
  tokens: z.array(loraxGeneratedToken),
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
  token: loraxGeneratedToken.nullable(),
  generated_text: z.string().nullable(),
  details: loraxStreamDetails.nullable(),
});
export type LoraxStreamEvent = z.infer<typeof loraxStreamEvent>;
