// OpenAI-compatible request and response bodies (/v1/completions, /v1/chat/completions) with the vLLM sampling
// extensions the engine implements (top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids).
// Strict: any other field is a 400.
import { z } from 'zod';
import { neutralOnly, nullOnly, seedSchema } from './fields.js';
import { openAiFinishReason } from './finish.js';
import { openAiResponseFormat } from './response-format.js';

const tokenIds = z.array(z.number().int().min(0)).min(1);

/**
 * Most prompts one /v1/completions body may list (each becomes n sequences): what one request can
 * queue is bounded, as a 32 MiB body of one-character prompts would otherwise be millions of them.
 * vLLM and OpenAI set no number; 128 is half the scheduler's default of 256 sequences running at once.
 */
export const MAX_PROMPTS = 128;

const sampling = {
  model: z.string().nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  n: z.number().int().min(1).max(16).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().nullish() }).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  seed: seedSchema.nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(100).nullish(),
  ignore_eos: z.boolean().nullish(),
  stop_token_ids: z.array(z.number().int().min(0)).nullish(),
  /** Caller identity for abuse tracking: recorded nowhere, changes nothing (as in vLLM). */
  user: z.string().nullish(),
  logit_bias: z
    .union([z.null(), z.strictObject({}, { error: 'logit_bias is not supported (only {} or null)' })])
    .optional(),
  /** JSON mode (xgrammar), on both routes as in vLLM. */
  response_format: openAiResponseFormat,
};

export const completionRequest = z.strictObject({
  ...sampling,
  prompt: z
    .union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)])
    .refine(
      (p) => typeof p === 'string' || typeof p[0] === 'number' || p.length <= MAX_PROMPTS,
      `at most ${MAX_PROMPTS} prompts per request`,
    ),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: neutralOnly('echo', false),
  best_of: neutralOnly('best_of', 1),
  suffix: nullOnly('suffix'),
});
export type CompletionRequest = z.infer<typeof completionRequest>;

const textPart = z.strictObject({
  type: z.literal('text', { error: 'only text content parts are supported' }),
  text: z.string(),
});

const message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPart)]),
  name: z.string().optional(),
});

export const chatRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});
export type ChatRequest = z.infer<typeof chatRequest>;

/**
 * vLLM's extension of a choice: the stop string or stop token id that ended it; null when it ended at
 * EOS, at max_tokens, or still runs (stream chunks).
 */
export const stopReason = z.union([z.string(), z.number().int()]).nullable();

/** vLLM's POST /tokenize: a prompt, or chat messages rendered with the chat template. */
export const vllmTokenizeRequest = z.union([
  z.strictObject({
    model: z.string().nullish(),
    prompt: z.string(),
    add_special_tokens: z.boolean().nullish(),
  }),
  z.strictObject({
    model: z.string().nullish(),
    messages: z.array(message).min(1),
    add_special_tokens: z.boolean().nullish(),
    add_generation_prompt: z.boolean().nullish(),
  }),
]);
export type VllmTokenizeRequest = z.infer<typeof vllmTokenizeRequest>;
export const vllmTokenizeResponse = z.object({
  count: z.number().int(),
  max_model_len: z.number().int(),
  tokens: z.array(z.number().int()),
});
export type VllmTokenizeResponse = z.infer<typeof vllmTokenizeResponse>;

/** vLLM's POST /detokenize. */
export const vllmDetokenizeRequest = z.strictObject({
  model: z.string().nullish(),
  tokens: z.array(z.number().int().min(0)),
});
export const vllmDetokenizeResponse = z.object({ prompt: z.string() });

/** vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING). */
export const loadLoraAdapterRequest = z.object({ lora_name: z.string().nullish(), lora_path: z.string().nullish() });
export const unloadLoraAdapterRequest = z.object({
  lora_name: z.string().nullish(),
  lora_int_id: z.number().nullish(),
});

export const openAiUsage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
});
export type OpenAiUsage = z.infer<typeof openAiUsage>;

/** Per-choice logprobs are passed through as the worker writes them (their shape differs per route). */
const choiceLogprobs = z.unknown().nullable();

export const completionChoice = z.object({
  index: z.number().int(),
  text: z.string(),
  logprobs: choiceLogprobs,
  finish_reason: openAiFinishReason.nullable(),
  stop_reason: stopReason.optional(),
});

/** /v1/completions: the whole answer, or (choices one at a time, usage last) a stream chunk. */
export const completionResponse = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(completionChoice),
  usage: openAiUsage.optional(),
});
export type CompletionResponse = z.infer<typeof completionResponse>;

export const chatResponseMessage = z.object({ role: z.literal('assistant'), content: z.string() });

export const chatChoice = z.object({
  index: z.number().int(),
  message: chatResponseMessage,
  logprobs: choiceLogprobs,
  finish_reason: openAiFinishReason,
  stop_reason: stopReason.optional(),
});

export const chatResponse = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(chatChoice),
  usage: openAiUsage,
});
export type ChatResponse = z.infer<typeof chatResponse>;

export const chatChunk = z.object({
  id: z.string(),
  object: z.literal('chat.completion.chunk'),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      delta: z.object({ role: z.literal('assistant').optional(), content: z.string().optional() }),
      logprobs: choiceLogprobs,
      finish_reason: openAiFinishReason.nullable(),
      stop_reason: stopReason.optional(),
    }),
  ),
  usage: openAiUsage.optional(),
});
export type ChatChunk = z.infer<typeof chatChunk>;
