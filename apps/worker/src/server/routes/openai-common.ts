// What /v1/completions and /v1/chat/completions share: sampling from the body, finish reasons, usage.
import { resolveSampling, type ResolvedSampling } from '@loraplex/engine';
import type { FinishReason, SequenceResult } from '../../scheduler/sequence.js';
import type { WorkerContext } from '../../worker-context.js';
import type { ChatRequest, CompletionRequest, OpenAiFinishReason, OpenAiUsage } from '@loraplex/protocol';

type Body = CompletionRequest | ChatRequest;

/** Engine sampling for choice `choice` of a request: a seeded request gives choice i the seed + i. */
export function openAiSampling(
  ctx: WorkerContext,
  b: Body,
  maxTokens: number,
  logprobs: number | undefined,
  choice: number,
): ResolvedSampling {
  return resolveSampling(
    {
      maxTokens,
      temperature: b.temperature ?? 1,
      topK: b.top_k == null || b.top_k < 0 ? 0 : b.top_k,
      topP: b.top_p ?? 1,
      minP: b.min_p ?? 0,
      ...(b.seed != null ? { seed: b.seed + choice } : {}),
      repetitionPenalty: b.repetition_penalty ?? 1,
      presencePenalty: b.presence_penalty ?? 0,
      frequencyPenalty: b.frequency_penalty ?? 0,
      stopTokenIds: b.stop_token_ids ?? [],
      ignoreEos: b.ignore_eos ?? false,
      ...(logprobs !== undefined ? { logprobs } : {}),
    },
    ctx.engine.config.vocab,
  );
}

export function openAiFinish(r: FinishReason): OpenAiFinishReason {
  return r === 'length' ? 'length' : 'stop';
}

/**
 * vLLM's stop_reason: the stop string that matched, or the stop token id sampled last (finish 'stop'
 * without a string: a stop_token_ids hit); null for EOS and length.
 */
export function stopReasonOf(
  reason: FinishReason,
  stop: string | undefined,
  lastToken: number | undefined,
): string | number | null {
  if (stop !== undefined) return stop;
  return reason === 'stop' && lastToken !== undefined ? lastToken : null;
}

export type Usage = OpenAiUsage;

export function usage(promptTokens: number, results: Array<Pick<SequenceResult, 'tokens'>> | number): Usage {
  const completion = typeof results === 'number' ? results : results.reduce((n, r) => n + r.tokens.length, 0);
  return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** What a streamed OpenAI answer repeats in every chunk, and what its final usage chunk needs. */
export interface StreamInfo {
  id: string;
  created: number;
  model: string;
  promptTokens: number;
  includeUsage: boolean;
  path: string;
}

/** The last chunk of a stream with `stream_options.include_usage`: no choices, the usage of every choice. */
export function usageChunk(
  info: StreamInfo,
  object: 'text_completion' | 'chat.completion.chunk',
  generated: number,
): string {
  return JSON.stringify({
    id: info.id,
    object,
    created: info.created,
    model: info.model,
    choices: [],
    usage: usage(info.promptTokens, generated),
  });
}
