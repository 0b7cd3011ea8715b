// LoRAX-compatible generation: POST /generate, /generate_stream and / (dispatching on `stream`),
// with LoRAX's (text-generation-inference's) response and SSE shapes. Sampling follows TGI: greedy
// unless do_sample or a warper (temperature != 1, top_k, top_p < 1) is given. Stop sequences stay
// in generated_text, as in LoRAX.
import { resolveSampling, type ResolvedSampling } from '@loraplex/engine';
import type { Context } from 'hono';
import { checkAdapterSource } from '../../adapters/request-source.js';
import { BASE_LABEL } from '../../metrics.js';
import type {
  FinishReason,
  GeneratedToken,
  Sequence,
  SequenceParams,
  SequenceResult,
} from '../../scheduler/sequence.js';
import {
  maxTokensFor,
  parseBody,
  refuseOversizedText,
  resolveModel,
  type ResolvedModel,
} from '../../validation/common.js';
import {
  loraxRequest,
  requestedFormat,
  type LoraxBestOfSequence,
  type LoraxFinishReason,
  type LoraxGeneratedToken,
  type LoraxGenerateResponse,
  type LoraxParameters,
  type LoraxPrefillToken,
  type LoraxStreamDetails,
} from '@loraplex/protocol';
import type { WorkerContext } from '../../worker-context.js';
import { badRequest, errorBody, toApiError } from '../errors.js';
import { admittedAll, cancelAll, TokenTexts } from '../generation.js';
import { attachConstraints, submitConstrained } from './json-mode.js';
import { sseResponse } from '../sse.js';
import type { WorkerEnv } from '../types.js';

const FINISH: Record<FinishReason, LoraxFinishReason> = { eos: 'eos_token', stop: 'stop_sequence', length: 'length' };

interface Prepared {
  /** One sequence per best_of candidate (one without best_of). */
  seqs: Sequence[];
  params: LoraxParameters;
  inputs: string;
  sampling: ResolvedSampling[];
  doSample: boolean;
  adapter: string | undefined;
  promptTokens: number;
}

function loraxSampling(
  ctx: WorkerContext,
  p: LoraxParameters,
  maxTokens: number,
  logprobs: number,
): { sampling: ResolvedSampling; doSample: boolean } {
  const warped = (p.temperature != null && p.temperature !== 1) || p.top_k != null || (p.top_p != null && p.top_p < 1);
  const doSample = p.do_sample === true || warped;
  const sampling = resolveSampling(
    {
      maxTokens,
      temperature: doSample ? (p.temperature ?? 1) : 0,
      topK: p.top_k ?? 0,
      topP: p.top_p ?? 1,
      ...(p.seed != null ? { seed: p.seed } : {}),
      repetitionPenalty: p.repetition_penalty ?? 1,
      presencePenalty: p.presence_penalty ?? 0,
      frequencyPenalty: p.frequency_penalty ?? 0,
      ignoreEos: p.ignore_eos_token ?? false,
      logprobs,
    },
    ctx.engine.config.vocab,
  );
  return { sampling, doSample };
}

/** TGI's rules for best_of > 1: sampled, unseeded (each candidate draws its own seed), not streamed. */
function checkBestOf(p: LoraxParameters, streaming: boolean): number {
  const n = p.best_of ?? 1;
  if (n === 1) return 1;
  const param = 'parameters.best_of';
  if (streaming) throw badRequest('best_of > 1 is not supported when streaming tokens', param);
  if (p.seed != null)
    throw badRequest('seed must not be set when best_of > 1 (each candidate draws its own seed)', param);
  const sampling = p.do_sample === true || p.temperature != null || p.top_k != null || p.top_p != null;
  if (!sampling) throw badRequest('best_of > 1 needs sampling: set do_sample (or temperature, top_k or top_p)', param);
  return n;
}

/** The adapter (or the base model) adapter_id names, where adapter_source says it lives. */
async function resolveAdapter(ctx: WorkerContext, p: LoraxParameters): Promise<ResolvedModel> {
  const id = p.adapter_id;
  if (id === undefined || id === null || id === '' || id === ctx.modelId) return resolveModel(ctx, id);
  checkAdapterSource(ctx.adapterOrigin, p.adapter_source, ctx.hub !== undefined);
  // A hub repository is registered (its files' sizes read) under a worker-side adapter name.
  return resolveModel(ctx, p.adapter_source === 'hub' && ctx.hub ? await ctx.hub.resolve(id) : id);
}

async function prepare(ctx: WorkerContext, c: Context<WorkerEnv>, streaming: boolean): Promise<Prepared> {
  const body = parseBody(loraxRequest, c.get('body'));
  const p = body.parameters ?? {};
  if (streaming && p.decoder_input_details)
    throw badRequest(
      'decoder_input_details is not supported when streaming tokens',
      'parameters.decoder_input_details',
    );
  const n = checkBestOf(p, streaming);
  const model = await resolveAdapter(ctx, p);
  c.set('adapterLabel', model.adapter ?? BASE_LABEL);
  refuseOversizedText(ctx, body.inputs.length, 'inputs');
  let prompt = await ctx.engine.tokenizer!.encode(body.inputs);
  // truncate keeps the prompt's last tokens, as TGI does.
  if (p.truncate != null && prompt.length > p.truncate) prompt = prompt.slice(prompt.length - p.truncate);
  const maxTokens = maxTokensFor(ctx, prompt.length, p.max_new_tokens, 'rest');
  // logprobs >= 0 always: every token's logprob is reported (LoRAX's Token.logprob is required).
  const drawn = Array.from({ length: n }, () => loraxSampling(ctx, p, maxTokens, p.return_k_alternatives ?? 0));
  const route = streaming ? 'generate_stream' : 'generate';
  // Prompt logprobs are the same for every candidate: computed once, on the first.
  const params: SequenceParams[] = drawn.map((d, i) => ({
    adapter: model.adapter,
    prompt,
    sampling: d.sampling,
    stop: p.stop ?? [],
    includeStopString: true,
    promptLogprobs: i === 0 && p.decoder_input_details === true,
    route,
  }));
  await attachConstraints(ctx, params, requestedFormat(p.response_format, 'parameters.response_format'));
  const seqs = submitConstrained(ctx, c, params);
  return {
    seqs,
    params: p,
    inputs: body.inputs,
    sampling: drawn.map((d) => d.sampling),
    doSample: drawn[0]!.doSample,
    adapter: model.adapter,
    promptTokens: prompt.length,
  };
}

async function tokenOf(texts: TokenTexts, t: GeneratedToken): Promise<LoraxGeneratedToken> {
  const special = await texts.special(t.token);
  const out: LoraxGeneratedToken = {
    id: t.token,
    text: special ? await texts.text(t.token) : t.tokenText,
    logprob: t.logprob ?? 0, // always computed (sampling.logprobs >= 0)
    special,
    skipped: false, // no speculative decoding
  };
  if (t.top && t.top.length > 0) {
    out.alternative_tokens = await Promise.all(
      t.top.map(async (a) => ({ id: a.token, text: await texts.text(a.token), logprob: a.logprob })),
    );
  }
  return out;
}

async function prefillOf(texts: TokenTexts, r: SequenceResult): Promise<LoraxPrefillToken[]> {
  const lp = r.promptLogprobs;
  if (!lp) return [];
  return Promise.all(
    r.promptTokens.map(async (id, i) => ({
      id,
      text: await texts.text(id),
      logprob: Number.isFinite(lp[i]) ? lp[i]! : null,
    })),
  );
}

/** One candidate: its text, finish, seed, prefill and tokens (what details and best_of_sequences share). */
async function candidate(
  texts: TokenTexts,
  prep: Prepared,
  r: SequenceResult,
  i: number,
  prefill: LoraxPrefillToken[],
): Promise<LoraxBestOfSequence> {
  return {
    generated_text: (prep.params.return_full_text ? prep.inputs : '') + r.text,
    finish_reason: FINISH[r.finishReason],
    generated_tokens: r.tokens.length,
    seed: prep.doSample ? prep.sampling[i]!.seed : null,
    prefill,
    tokens: await Promise.all(r.tokens.map((t) => tokenOf(texts, t))),
  };
}

const sumLogprob = (r: SequenceResult): number => r.tokens.reduce((s, t) => s + (t.logprob ?? 0), 0);

function headers(ctx: WorkerContext, prep: Prepared, results?: SequenceResult[]): Record<string, string> {
  const origin = ctx.adapterOrigin === 'local' || ctx.adapterOrigin === 's3' ? ctx.adapterOrigin : 'local';
  const source = prep.adapter === undefined ? '' : prep.params.adapter_source === 'hub' ? 'hub' : origin;
  const h: Record<string, string> = {
    'x-model-id': ctx.modelId,
    'x-adapter-id': prep.adapter ?? '',
    'x-adapter-source': source,
    'x-prompt-tokens': String(prep.promptTokens),
  };
  if (results) {
    // Every candidate's tokens were generated: best_of counts them all (what the API meters).
    const generated = results.reduce((s, r) => s + r.tokens.length, 0);
    h['x-generated-tokens'] = String(generated);
    h['x-total-tokens'] = String(generated + prep.promptTokens);
    h['x-skipped-tokens'] = '0';
  }
  return h;
}

async function generateOnce(
  ctx: WorkerContext,
  c: Context<WorkerEnv>,
): Promise<{ body: LoraxGenerateResponse; headers: Record<string, string> }> {
  const prep = await prepare(ctx, c, false);
  const results = await Promise.all(prep.seqs.map((s) => s.done));
  // best_of: the candidate with the highest sum of token logprobs (TGI); the first on ties.
  let best = 0;
  for (let i = 1; i < results.length; i++) if (sumLogprob(results[i]!) > sumLogprob(results[best]!)) best = i;
  const r = results[best]!;
  const body: LoraxGenerateResponse = { generated_text: (prep.params.return_full_text ? prep.inputs : '') + r.text };
  if (prep.params.details) {
    const texts = new TokenTexts(ctx);
    const prefill = await prefillOf(texts, results[0]!);
    const all = await Promise.all(results.map((x, i) => candidate(texts, prep, x, i, prefill)));
    const chosen = all[best]!;
    body.details = {
      finish_reason: chosen.finish_reason,
      prompt_tokens: prep.promptTokens,
      generated_tokens: chosen.generated_tokens,
      skipped_tokens: 0,
      seed: chosen.seed,
      prefill,
      tokens: chosen.tokens,
      ...(results.length > 1 ? { best_of_sequences: all.filter((_, i) => i !== best) } : {}),
    };
  }
  return { body, headers: headers(ctx, prep, results) };
}

async function generateStream(ctx: WorkerContext, c: Context<WorkerEnv>): Promise<Response> {
  const prep = await prepare(ctx, c, true);
  await admittedAll(prep.seqs);
  return sseResponse(streamEvents(ctx, prep, c.req.path), () => cancelAll(ctx, prep.seqs), headers(ctx, prep));
}

/** TGI's stream: one event per token; the last token's event carries generated_text and details. */
async function* streamEvents(ctx: WorkerContext, prep: Prepared, path: string): AsyncGenerator<string> {
  const texts = new TokenTexts(ctx);
  const seq = prep.seqs[0]!;
  let held: GeneratedToken | undefined;
  let text = prep.params.return_full_text ? prep.inputs : '';
  let count = 0;
  try {
    for await (const e of seq.stream()) {
      if (e.type === 'token') {
        if (held) yield JSON.stringify({ token: await tokenOf(texts, held), generated_text: null, details: null });
        held = e;
        text += e.text;
        count++;
        continue;
      }
      text += e.text;
      const d: LoraxStreamDetails | null = prep.params.details
        ? {
            finish_reason: FINISH[e.reason],
            prompt_tokens: prep.promptTokens,
            generated_tokens: count,
            seed: prep.doSample ? prep.sampling[0]!.seed : null,
          }
        : null;
      // A sequence always yields a token before it finishes (max_new_tokens > 0); `held` is only
      // missing if it was cancelled, and then no client reads this event.
      if (held) yield JSON.stringify({ token: await tokenOf(texts, held), generated_text: text, details: d });
    }
  } catch (e) {
    yield JSON.stringify(errorBody(path, toApiError(e)));
  }
}

export function loraxGenerate(ctx: WorkerContext) {
  return async function generateHandler(c: Context<WorkerEnv>): Promise<Response> {
    if ((c.get('body') as { stream?: unknown }).stream === true)
      throw badRequest('stream: true is for /generate_stream (or POST /)', 'stream');
    const r = await generateOnce(ctx, c);
    return c.json(r.body, 200, r.headers);
  };
}

export function loraxGenerateStream(ctx: WorkerContext) {
  return async function generateStreamHandler(c: Context<WorkerEnv>): Promise<Response> {
    if ((c.get('body') as { stream?: unknown }).stream === false)
      throw badRequest('stream: false is for /generate', 'stream');
    return generateStream(ctx, c);
  };
}

/** POST / (LoRAX's compat route, what lorax-client calls): streams when `stream` is true, else answers [GenerateResponse]. */
export function loraxCompat(ctx: WorkerContext) {
  return async function compatHandler(c: Context<WorkerEnv>): Promise<Response> {
    if ((c.get('body') as { stream?: unknown }).stream === true) return generateStream(ctx, c);
    const r = await generateOnce(ctx, c);
    return c.json([r.body], 200, r.headers);
  };
}
