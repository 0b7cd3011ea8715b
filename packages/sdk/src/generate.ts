// LoRAX-shaped generation (POST /generate, /generate_stream) and OpenAI chat, mapped to the SDK's
// camelCase results.
import { json, send, type HttpOptions } from './http.js';
import { LoraplexError } from './errors.js';
import { sseData } from './sse.js';
import type {
  ChatRequest,
  ChatResponse,
  LoraxGenerateResponse,
  LoraxParameters,
  LoraxStreamDetails,
  LoraxStreamEvent,
} from '@loraplex/protocol';
import type { WireChatChunk } from './wire.js';
import type {
  ChatMessage,
  ChatOptions,
  ChatResult,
  ChatStreamEvent,
  GenerateOptions,
  GenerateResult,
  SamplingOptions,
  StreamEvent,
  TokenDetail,
} from './types.js';

/** The details a result is made of: a /generate answer's, or a stream's last event's with the tokens collected. */
type LoraxDetails = LoraxStreamDetails & { tokens?: TokenDetail[] };

/** SDK sampling option -> wire field (checked against the protocol's bodies), for LoRAX parameters and OpenAI bodies. */
const LORAX_FIELDS = {
  maxNewTokens: 'max_new_tokens',
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  seed: 'seed',
  stop: 'stop',
  repetitionPenalty: 'repetition_penalty',
} as const satisfies Record<string, keyof LoraxParameters>;
const OPENAI_FIELDS = { ...LORAX_FIELDS, maxNewTokens: 'max_tokens' } as const satisfies Record<
  string,
  keyof ChatRequest
>;

function wireFields(o: SamplingOptions, fields: Record<keyof typeof LORAX_FIELDS, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, wire] of Object.entries(fields)) {
    const v = o[k as keyof typeof LORAX_FIELDS];
    if (v !== undefined) out[wire] = v;
  }
  return out;
}

export function loraxBody(prompt: string, o: GenerateOptions): Record<string, unknown> {
  const p: Record<string, unknown> = { details: true, ...wireFields(o, LORAX_FIELDS) };
  if (o.adapterId !== undefined) p.adapter_id = o.adapterId;
  if (o.temperature !== undefined && o.temperature > 0) p.do_sample = true;
  if (o.responseFormat)
    p.response_format = o.responseFormat.schema
      ? { type: 'json_object', schema: o.responseFormat.schema }
      : { type: 'json_object' };
  return { inputs: prompt, parameters: p };
}

function result(text: string, d: LoraxDetails, withTokens: boolean): GenerateResult {
  const r: GenerateResult = {
    text,
    finishReason: d.finish_reason,
    promptTokens: d.prompt_tokens ?? 0,
    generatedTokens: d.generated_tokens,
    seed: d.seed ?? null,
  };
  if (withTokens && d.tokens)
    r.tokens = d.tokens.map((t) => ({ id: t.id, text: t.text, logprob: t.logprob, special: t.special }));
  return r;
}

export async function generate(h: HttpOptions, prompt: string, o: GenerateOptions): Promise<GenerateResult> {
  const res = await send(h, {
    path: '/generate',
    json: loraxBody(prompt, o),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.timeout ? { timeout: o.timeout } : {}),
  });
  // details: true is always sent, so the answer has them.
  const body = await json<LoraxGenerateResponse & { details: LoraxDetails }>(res);
  return result(body.generated_text, body.details, o.details === true);
}

export async function* generateStream(h: HttpOptions, prompt: string, o: GenerateOptions): AsyncGenerator<StreamEvent> {
  const res = await send(h, {
    path: '/generate_stream',
    json: loraxBody(prompt, o),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.timeout ? { timeout: o.timeout } : {}),
  });
  (res as Response & { clearTimeout?: () => void }).clearTimeout?.();
  const tokens: TokenDetail[] = [];
  for await (const ev of sseData(res)) {
    const e = ev as LoraxStreamEvent & { token: TokenDetail };
    tokens.push(e.token);
    const out: StreamEvent = {
      token: { id: e.token.id, text: e.token.text, logprob: e.token.logprob, special: e.token.special },
    };
    if (e.generated_text !== null && e.generated_text !== undefined && e.details) {
      out.final = result(e.generated_text, { ...e.details, tokens }, o.details === true);
    }
    yield out;
  }
}

export function parseJson<T>(r: GenerateResult): T {
  try {
    return JSON.parse(r.text) as T;
  } catch (e) {
    throw new LoraplexError(`the output is not valid JSON (finish reason ${r.finishReason}): ${(e as Error).message}`);
  }
}

async function chatBody(
  messages: ChatMessage[],
  o: ChatOptions,
  baseModel: () => Promise<string>,
): Promise<Record<string, unknown>> {
  const body: Record<string, unknown> = {
    model: o.adapterId ?? (await baseModel()),
    messages,
    ...wireFields(o, OPENAI_FIELDS),
  };
  if (o.responseFormat)
    body.response_format = o.responseFormat.schema
      ? { type: 'json_schema', json_schema: { name: 'response', schema: o.responseFormat.schema } }
      : { type: 'json_object' };
  return body;
}

const callOptions = (o: ChatOptions): { signal?: AbortSignal; timeout?: number } => ({
  ...(o.signal ? { signal: o.signal } : {}),
  ...(o.timeout ? { timeout: o.timeout } : {}),
});

export async function chat(
  h: HttpOptions,
  messages: ChatMessage[],
  o: ChatOptions,
  baseModel: () => Promise<string>,
): Promise<ChatResult> {
  const body = await chatBody(messages, o, baseModel);
  const res = await send(h, { path: '/v1/chat/completions', json: body, ...callOptions(o) });
  const r = await json<ChatResponse>(res);
  const c = r.choices[0]!;
  return {
    message: { role: c.message.role, content: c.message.content },
    finishReason: c.finish_reason,
    promptTokens: r.usage.prompt_tokens,
    completionTokens: r.usage.completion_tokens,
  };
}

/** Chat as server-sent chunks (OpenAI `stream: true`), usage requested as the last one. */
export async function* chatStream(
  h: HttpOptions,
  messages: ChatMessage[],
  o: ChatOptions,
  baseModel: () => Promise<string>,
): AsyncGenerator<ChatStreamEvent> {
  const body = { ...(await chatBody(messages, o, baseModel)), stream: true, stream_options: { include_usage: true } };
  const res = await send(h, { path: '/v1/chat/completions', json: body, ...callOptions(o) });
  // The timeout bounds the wait for the answer to start; a long stream is the caller's to cancel.
  (res as Response & { clearTimeout?: () => void }).clearTimeout?.();
  for await (const data of sseData(res)) {
    const chunk = data as WireChatChunk;
    const choice = chunk.choices[0];
    const ev: ChatStreamEvent = { delta: choice?.delta.content ?? '' };
    if (choice?.finish_reason) ev.finishReason = choice.finish_reason;
    if (chunk.usage)
      ev.usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
    yield ev;
    // Chunks already received are not handed out after the caller aborted.
    o.signal?.throwIfAborted();
  }
}
