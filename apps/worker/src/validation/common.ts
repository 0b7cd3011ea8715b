// What the worker checks of a request beyond its schema (the schemas are in @loraplex/protocol):
// zod parsing into 400s, model/adapter resolution, and context-length checks.
import type { z } from 'zod';
import { ApiError, badRequest, notFound } from '../server/errors.js';
import type { WorkerContext } from '../worker-context.js';
import { describeIssues } from '@loraplex/protocol';

export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const { message, param } = describeIssues(r.error.issues);
  throw badRequest(message, param);
}

export interface ResolvedModel {
  /** Adapter name, undefined for the base model. */
  adapter: string | undefined;
  /** The adapter's own chat template, when its directory ships one. */
  chatTemplate?: string;
}

/** The `model` (OpenAI) / `adapter_id` (LoRAX) value: empty or the base id = base model; else a known adapter or 404. */
export async function resolveModel(ctx: WorkerContext, name: string | null | undefined): Promise<ResolvedModel> {
  if (name === undefined || name === null || name === '' || name === ctx.modelId) return { adapter: undefined };
  const d = await ctx.adapters.lookup(name);
  if (!d) {
    const unsupported = (await ctx.unsupportedAdapters?.())?.find((u) => u.name === name);
    if (unsupported) throw notFound(`The model \`${name}\` is not served: ${unsupported.reason}`);
  }
  if (!d)
    throw notFound(
      `The model \`${name}\` does not exist: it is neither the base model (${ctx.modelId}) nor an adapter in the adapter directory`,
    );
  return { adapter: d.name, ...(d.chatTemplate !== undefined ? { chatTemplate: d.chatTemplate } : {}) };
}

/**
 * Refuses a prompt text that cannot fit the context whatever its tokens are, before it is tokenized
 * or rendered (tokenizing megabytes costs gigabytes): no token covers more than the vocabulary's
 * longest token, so a text longer than context x that (x2 for normalizers that shorten text) needs
 * more tokens than the context holds. `chars` is the prompt's length in UTF-16 code units.
 */
export function refuseOversizedText(ctx: WorkerContext, chars: number, param: string): void {
  const tk = ctx.engine.tokenizer;
  if (!tk) return;
  const ctxLen = ctx.engine.config.maxPositions;
  const limit = ctxLen * tk.maxTokenChars * 2;
  if (chars > limit) {
    throw badRequest(
      `This model's maximum context length is ${ctxLen} tokens. However, the prompt has ${chars} characters, more than that many tokens can hold (at most ${limit} characters).`,
      param,
    );
  }
}

/** Checks prompt + max tokens against the context (vLLM's 400) and returns the max tokens to use. */
export function maxTokensFor(
  ctx: WorkerContext,
  promptLength: number,
  requested: number | null | undefined,
  fallback: number | 'rest',
): number {
  const ctxLen = ctx.engine.config.maxPositions;
  if (promptLength === 0) throw badRequest('the prompt is empty');
  if (promptLength >= ctxLen)
    throw badRequest(
      `This model's maximum context length is ${ctxLen} tokens. However, the prompt has ${promptLength} tokens, leaving no room to generate.`,
    );
  const max = requested ?? (fallback === 'rest' ? ctxLen - promptLength : fallback);
  if (promptLength + max > ctxLen) {
    throw new ApiError(
      400,
      'invalid_request_error',
      `This model's maximum context length is ${ctxLen} tokens. However, you requested ${promptLength + max} tokens (${promptLength} in the prompt, ${max} for the completion). Please reduce the prompt or the maximum tokens.`,
      requested == null ? null : 'max_tokens',
    );
  }
  return max;
}

export function stopList(stop: string | string[] | null | undefined): string[] {
  const list = stop == null ? [] : typeof stop === 'string' ? [stop] : stop;
  if (list.some((s) => s.length === 0)) throw badRequest('stop strings must not be empty', 'stop');
  return list;
}
