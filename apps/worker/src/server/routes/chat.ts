// POST /v1/chat/completions: messages rendered with the chat template (the adapter's own when its
// directory ships tokenizer_config.json with a chat_template, else the base model's), tokenized
// without adding special tokens (the template places them, as vLLM does).
import type { ChatMessage } from '@loraplex/engine';
import type { Context } from 'hono';
import { BASE_LABEL } from '../../metrics.js';
import type { GeneratedToken, Sequence, SequenceParams } from '../../scheduler/sequence.js';
import { maxTokensFor, parseBody, refuseOversizedText, resolveModel, stopList } from '../../validation/common.js';
import { chatRequest, requestedFormat, type ChatRequest } from '@loraplex/protocol';
import type { WorkerContext } from '../../worker-context.js';
import { badRequest, errorBody, toApiError } from '../errors.js';
import { admittedAll, cancelAll, requestId, TokenTexts } from '../generation.js';
import { attachConstraints, submitConstrained } from './json-mode.js';
import { mergeSequences, sseResponse } from '../sse.js';
import type { WorkerEnv } from '../types.js';
import {
  nowSeconds,
  openAiFinish,
  openAiSampling,
  stopReasonOf,
  usage,
  usageChunk,
  type StreamInfo,
} from './openai-common.js';

interface TopEntry {
  token: string;
  logprob: number;
  bytes: number[];
}
interface ChatLogprobs {
  content: Array<TopEntry & { top_logprobs: TopEntry[] }>;
}

const bytesOf = (s: string): number[] => [...Buffer.from(s, 'utf8')];

async function chatLogprobs(texts: TokenTexts, toks: GeneratedToken[]): Promise<ChatLogprobs> {
  const content: ChatLogprobs['content'] = [];
  for (const t of toks) {
    const token = await texts.text(t.token);
    const top: TopEntry[] = [];
    for (const alt of t.top ?? []) {
      const s = await texts.text(alt.token);
      top.push({ token: s, logprob: alt.logprob, bytes: bytesOf(s) });
    }
    content.push({ token, logprob: t.logprob ?? Number.NaN, bytes: bytesOf(token), top_logprobs: top });
  }
  return { content };
}

/** Renders the conversation and tokenizes it. */
export async function chatPrompt(
  ctx: WorkerContext,
  messages: ChatRequest['messages'],
  template: string | undefined,
): Promise<number[]> {
  const tk = ctx.engine.tokenizer!;
  // The rendered prompt holds every content, so their length alone bounds it (checked before any copy).
  let chars = 0;
  for (const m of messages) {
    if (typeof m.content === 'string') chars += m.content.length;
    else for (const p of m.content) chars += p.text.length;
  }
  refuseOversizedText(ctx, chars, 'messages');
  const msgs: ChatMessage[] = messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
  }));
  if (!template && !tk.chatTemplate)
    throw badRequest('the model has no chat template (tokenizer_config.json chat_template); use /v1/completions');
  const text = tk.applyChatTemplate(msgs, { addGenerationPrompt: true, ...(template ? { template } : {}) });
  // What the template adds per message (roles, markers) counts too: many empty messages are no cheaper to tokenize.
  refuseOversizedText(ctx, text.length, 'messages');
  return tk.encode(text, false);
}

export function chatCompletions(ctx: WorkerContext) {
  return async function chatHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = parseBody(chatRequest, c.get('body'));
    const model = await resolveModel(ctx, body.model);
    c.set('adapterLabel', model.adapter ?? BASE_LABEL);
    if (body.top_logprobs != null && body.logprobs !== true)
      throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs');
    if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens)
      throw badRequest('max_tokens and max_completion_tokens disagree', 'max_completion_tokens');
    const prompt = await chatPrompt(ctx, body.messages, model.chatTemplate);
    const maxTokens = maxTokensFor(ctx, prompt.length, body.max_completion_tokens ?? body.max_tokens, 'rest');
    const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
    const stop = stopList(body.stop);
    const n = body.n ?? 1;
    const params: SequenceParams[] = Array.from({ length: n }, (_, i) => ({
      adapter: model.adapter,
      prompt,
      sampling: openAiSampling(ctx, body, maxTokens, logprobs, i),
      stop,
      includeStopString: false,
      promptLogprobs: false,
      route: 'chat',
    }));
    await attachConstraints(ctx, params, requestedFormat(body.response_format));
    const seqs = submitConstrained(ctx, c, params);
    const id = requestId('chatcmpl');
    const created = nowSeconds();
    const modelName = body.model || ctx.modelId;
    const texts = new TokenTexts(ctx);
    if (!body.stream) {
      const results = await Promise.all(seqs.map((s) => s.done));
      const choices = await Promise.all(
        results.map(async (r, index) => ({
          index,
          message: { role: 'assistant', content: r.text },
          logprobs: logprobs !== undefined ? await chatLogprobs(texts, r.tokens) : null,
          finish_reason: openAiFinish(r.finishReason),
          stop_reason: stopReasonOf(r.finishReason, r.stop, r.tokens.at(-1)?.token),
        })),
      );
      return c.json({
        id,
        object: 'chat.completion',
        created,
        model: modelName,
        choices,
        usage: usage(prompt.length, results),
      });
    }
    await admittedAll(seqs);
    const info = {
      id,
      created,
      model: modelName,
      promptTokens: prompt.length,
      includeUsage: body.stream_options?.include_usage === true,
      path: c.req.path,
    };
    return sseResponse(streamChunks(seqs, texts, logprobs !== undefined, info), () => cancelAll(ctx, seqs));
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
    delta: Record<string, string>,
    lp: ChatLogprobs | null,
    finish: string | null,
    stopReason: string | number | null = null,
  ): string =>
    JSON.stringify({
      id: info.id,
      object: 'chat.completion.chunk',
      created: info.created,
      model: info.model,
      choices: [{ index, delta, logprobs: lp, finish_reason: finish, stop_reason: stopReason }],
    });
  let generated = 0;
  const lastTokens: Array<number | undefined> = seqs.map(() => undefined);
  try {
    for (let i = 0; i < seqs.length; i++) yield chunk(i, { role: 'assistant', content: '' }, null, null);
    for await (const { index, event } of mergeSequences(seqs)) {
      if (event.type === 'token') {
        generated++;
        lastTokens[index] = event.token;
        if (!wantLogprobs && event.text === '') continue;
        yield chunk(index, { content: event.text }, wantLogprobs ? await chatLogprobs(texts, [event]) : null, null);
      } else {
        const why = stopReasonOf(event.reason, event.stop, lastTokens[index]);
        yield chunk(index, event.text ? { content: event.text } : {}, null, openAiFinish(event.reason), why);
      }
    }
    if (info.includeUsage) yield usageChunk(info, 'chat.completion.chunk', generated);
  } catch (e) {
    yield JSON.stringify(errorBody(info.path, toApiError(e)));
  }
  yield '[DONE]';
}
