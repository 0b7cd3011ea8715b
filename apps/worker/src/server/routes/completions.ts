// POST /v1/completions (OpenAI legacy completions, vLLM-compatible): one or many prompts (text or
// token ids), n choices each, streaming as SSE ending with `data: [DONE]`.
import type { Context } from 'hono';
import type { GeneratedToken, Sequence, SequenceParams } from '../../scheduler/sequence.js';
import { maxTokensFor, parseBody, refuseOversizedText, resolveModel, stopList } from '../../validation/common.js';
import { completionRequest, requestedFormat, type CompletionRequest } from '@loraplex/protocol';
import type { WorkerContext } from '../../worker-context.js';
import { BASE_LABEL } from '../../metrics.js';
import { admittedAll, cancelAll, requestId, TokenTexts } from '../generation.js';
import { attachConstraints, submitConstrained } from './json-mode.js';
import { mergeSequences, sseResponse } from '../sse.js';
import type { WorkerEnv } from '../types.js';
import { badRequest, errorBody, toApiError } from '../errors.js';
import {
  nowSeconds,
  openAiFinish,
  openAiSampling,
  stopReasonOf,
  usage,
  usageChunk,
  type StreamInfo,
} from './openai-common.js';

interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Array<Record<string, number>>;
  text_offset: number[];
}

async function logprobsOf(texts: TokenTexts, toks: GeneratedToken[], offset: number): Promise<CompletionLogprobs> {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const t of toks) {
    out.tokens.push(await texts.text(t.token));
    out.token_logprobs.push(t.logprob ?? Number.NaN);
    const top: Record<string, number> = {};
    for (const alt of t.top ?? []) top[await texts.text(alt.token)] = alt.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += t.tokenText.length;
  }
  return out;
}

async function promptsOf(ctx: WorkerContext, prompt: CompletionRequest['prompt']): Promise<number[][]> {
  const list: Array<string | number[]> =
    typeof prompt === 'string'
      ? [prompt]
      : typeof prompt[0] === 'number'
        ? [prompt as number[]]
        : (prompt as Array<string | number[]>);
  const vocab = ctx.engine.config.vocab;
  // Every text is checked before any is tokenized: one huge prompt among small ones costs nothing.
  for (const p of list) if (typeof p === 'string') refuseOversizedText(ctx, p.length, 'prompt');
  return Promise.all(
    list.map(async (p) => {
      if (typeof p === 'string') return ctx.engine.tokenizer!.encode(p);
      for (const t of p)
        if (t >= vocab) throw badRequest(`token id ${t} is outside the vocabulary of ${vocab} tokens`, 'prompt');
      return p;
    }),
  );
}

export function completions(ctx: WorkerContext) {
  return async function completionsHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = parseBody(completionRequest, c.get('body'));
    const model = await resolveModel(ctx, body.model);
    c.set('adapterLabel', model.adapter ?? BASE_LABEL);
    const prompts = await promptsOf(ctx, body.prompt);
    const n = body.n ?? 1;
    const logprobs = body.logprobs ?? undefined;
    const stop = stopList(body.stop);
    const params: SequenceParams[] = [];
    for (const prompt of prompts) {
      const maxTokens = maxTokensFor(ctx, prompt.length, body.max_tokens, 16);
      for (let i = 0; i < n; i++) {
        params.push({
          adapter: model.adapter,
          prompt,
          sampling: openAiSampling(ctx, body, maxTokens, logprobs, i),
          stop,
          includeStopString: false,
          promptLogprobs: false,
          route: 'completions',
        });
      }
    }
    await attachConstraints(ctx, params, requestedFormat(body.response_format));
    const seqs = submitConstrained(ctx, c, params);
    const id = requestId('cmpl');
    const created = nowSeconds();
    const modelName = body.model || ctx.modelId;
    const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
    const texts = new TokenTexts(ctx);
    if (!body.stream) {
      const results = await Promise.all(seqs.map((s) => s.done));
      const choices = await Promise.all(
        results.map(async (r, index) => ({
          index,
          text: r.text,
          logprobs: logprobs !== undefined ? await logprobsOf(texts, r.tokens, 0) : null,
          finish_reason: openAiFinish(r.finishReason),
          stop_reason: stopReasonOf(r.finishReason, r.stop, r.tokens.at(-1)?.token),
        })),
      );
      return c.json({
        id,
        object: 'text_completion',
        created,
        model: modelName,
        choices,
        usage: usage(promptTokens, results),
      });
    }
    await admittedAll(seqs);
    const includeUsage = body.stream_options?.include_usage === true;
    return sseResponse(
      streamChunks(seqs, texts, logprobs !== undefined, {
        id,
        created,
        model: modelName,
        promptTokens,
        includeUsage,
        path: c.req.path,
      }),
      () => cancelAll(ctx, seqs),
    );
  };
}

async function* streamChunks(
  seqs: Sequence[],
  texts: TokenTexts,
  wantLogprobs: boolean,
  info: StreamInfo,
): AsyncGenerator<string> {
  const chunk = (
    index: number,
    text: string,
    lp: CompletionLogprobs | null,
    finish: string | null,
    stopReason: string | number | null = null,
  ): string =>
    JSON.stringify({
      id: info.id,
      object: 'text_completion',
      created: info.created,
      model: info.model,
      choices: [{ index, text, logprobs: lp, finish_reason: finish, stop_reason: stopReason }],
    });
  const offsets = seqs.map(() => 0);
  const lastTokens: Array<number | undefined> = seqs.map(() => undefined);
  let generated = 0;
  try {
    for await (const { index, event } of mergeSequences(seqs)) {
      if (event.type === 'token') {
        generated++;
        lastTokens[index] = event.token;
        if (!wantLogprobs && event.text === '') continue;
        const lp = wantLogprobs ? await logprobsOf(texts, [event], offsets[index]!) : null;
        offsets[index]! += event.tokenText.length;
        yield chunk(index, event.text, lp, null);
      } else {
        const why = stopReasonOf(event.reason, event.stop, lastTokens[index]);
        yield chunk(index, event.text, null, openAiFinish(event.reason), why);
      }
    }
    if (info.includeUsage) yield usageChunk(info, 'text_completion', generated);
  } catch (e) {
    yield JSON.stringify(errorBody(info.path, toApiError(e)));
  }
  yield '[DONE]';
}
