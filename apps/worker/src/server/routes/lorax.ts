// LoRAX-compatible generation: POST /generate, /generate_stream and / (dispatching on `stream`),
// with LoRAX's (text-generation-inference's) response and SSE shapes. Sampling follows TGI: greedy
// unless do_sample or a warper (temperature != 1, top_k, top_p < 1) is given. Stop sequences stay
// in generated_text, as in LoRAX.
import { resolveSampling, type ResolvedSampling } from '@loraplex/engine';
import type { Context } from 'hono';
import { BASE_LABEL } from '../../metrics.js';
import type { FinishReason, GeneratedToken, Sequence, SequenceParams, SequenceResult } from '../../scheduler/sequence.js';
import { maxTokensFor, parseBody, refuseOversizedText, resolveModel } from '../../validation/common.js';
import {
  loraxRequest,
  requestedFormat,
  type LoraxDetails,
  type LoraxFinishReason,
  type LoraxGeneratedToken,
  type LoraxGenerateResponse,
  type LoraxParameters,
  type LoraxStreamDetails,
} from '@loraplex/protocol';
import type { WorkerContext } from '../../worker-context.js';
import { badRequest, errorBody, toApiError } from '../errors.js';
import { admittedAll, cancelAll, TokenTexts } from '../generation.js';
import { attachConstraints, submitConstrained } from './json-mode.js';
import { sseResponse } from '../sse.js';
import type { WorkerEnv } from '../types.js';

const FINISH: Record<FinishReason, LoraxFinishReason> = { eos: 'eos_token', stop: 'stop_sequence', length: 'length' };

interface Prepared { seq: Sequence; params: LoraxParameters; inputs: string; sampling: ResolvedSampling; doSample: boolean; adapter: string | undefined }

function loraxSampling(ctx: WorkerContext, p: LoraxParameters, maxTokens: number, logprobs: number): { sampling: ResolvedSampling; doSample: boolean } {
  const warped = (p.temperature != null && p.temperature !== 1) || p.top_k != null || (p.top_p != null && p.top_p < 1);
  const doSample = p.do_sample === true || warped;
  const sampling = resolveSampling(
    {
      maxTokens,
      temperature: doSample ? p.temperature ?? 1 : 0,
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

async function prepare(ctx: WorkerContext, c: Context<WorkerEnv>, streaming: boolean): Promise<Prepared> {
  const body = parseBody(loraxRequest, c.get('body'));
  const p = body.parameters ?? {};
  if (streaming && p.decoder_input_details) throw badRequest('decoder_input_details is not supported when streaming tokens', 'parameters.decoder_input_details');
  const model = await resolveModel(ctx, p.adapter_id);
  c.set('adapterLabel', model.adapter ?? BASE_LABEL);
  refuseOversizedText(ctx, body.inputs.length, 'inputs');
  const prompt = await ctx.engine.tokenizer!.encode(body.inputs);
  const maxTokens = maxTokensFor(ctx, prompt.length, p.max_new_tokens, 'rest');
  const { sampling, doSample } = loraxSampling(ctx, p, maxTokens, p.return_k_alternatives ?? 0);
  const params: SequenceParams[] = [{
    adapter: model.adapter, prompt, sampling, stop: p.stop ?? [], includeStopString: true, promptLogprobs: p.decoder_input_details === true, route: streaming ? 'generate_stream' : 'generate',
  }];
  await attachConstraints(ctx, params, requestedFormat(p.response_format, 'parameters.response_format'));
  const [seq] = submitConstrained(ctx, c, params);
  return { seq: seq!, params: p, inputs: body.inputs, sampling, doSample, adapter: model.adapter };
}

async function tokenOf(texts: TokenTexts, t: GeneratedToken): Promise<LoraxGeneratedToken> {
  const special = await texts.special(t.token);
  const out: LoraxGeneratedToken = { id: t.token, text: special ? await texts.text(t.token) : t.tokenText, logprob: t.logprob ?? null, special };
  if (t.top && t.top.length > 0) out.alternative_tokens = await Promise.all(t.top.map(async (a) => ({ id: a.token, text: await texts.text(a.token), logprob: a.logprob })));
  return out;
}

async function details(texts: TokenTexts, prep: Prepared, r: SequenceResult): Promise<LoraxDetails> {
  const prefill = r.promptLogprobs
    ? await Promise.all(r.promptTokens.map(async (id, i) => ({ id, text: await texts.text(id), logprob: Number.isFinite(r.promptLogprobs![i]) ? r.promptLogprobs![i]! : null })))
    : [];
  return {
    finish_reason: FINISH[r.finishReason],
    prompt_tokens: r.promptTokens.length,
    generated_tokens: r.tokens.length,
    skipped_tokens: 0,
    seed: prep.doSample ? prep.sampling.seed : null,
    prefill,
    tokens: await Promise.all(r.tokens.map((t) => tokenOf(texts, t))),
  };
}

function headers(ctx: WorkerContext, prep: Prepared, r?: SequenceResult): Record<string, string> {
  const h: Record<string, string> = { 'x-model-id': ctx.modelId, 'x-adapter-id': prep.adapter ?? '', 'x-adapter-source': 'local', 'x-prompt-tokens': String(prep.seq.params.prompt.length) };
  if (r) {
    h['x-generated-tokens'] = String(r.tokens.length);
    h['x-total-tokens'] = String(r.tokens.length + r.promptTokens.length);
    h['x-skipped-tokens'] = '0';
  }
  return h;
}

async function generateOnce(ctx: WorkerContext, c: Context<WorkerEnv>): Promise<{ body: LoraxGenerateResponse; headers: Record<string, string> }> {
  const prep = await prepare(ctx, c, false);
  const r = await prep.seq.done;
  const texts = new TokenTexts(ctx);
  const body: LoraxGenerateResponse = { generated_text: (prep.params.return_full_text ? prep.inputs : '') + r.text };
  if (prep.params.details) body.details = await details(texts, prep, r);
  return { body, headers: headers(ctx, prep, r) };
}

async function generateStream(ctx: WorkerContext, c: Context<WorkerEnv>): Promise<Response> {
  const prep = await prepare(ctx, c, true);
  await admittedAll([prep.seq]);
  return sseResponse(streamEvents(ctx, prep, c.req.path), () => cancelAll(ctx, [prep.seq]), headers(ctx, prep));
}

/** TGI's stream: one event per token; the last token's event carries generated_text and details. */
async function* streamEvents(ctx: WorkerContext, prep: Prepared, path: string): AsyncGenerator<string> {
  const texts = new TokenTexts(ctx);
  let held: GeneratedToken | undefined;
  let text = prep.params.return_full_text ? prep.inputs : '';
  let count = 0;
  try {
    for await (const e of prep.seq.stream()) {
      if (e.type === 'token') {
        if (held) yield JSON.stringify({ token: await tokenOf(texts, held), generated_text: null, details: null });
        held = e;
        text += e.text;
        count++;
        continue;
      }
      text += e.text;
      const d: LoraxStreamDetails | null = prep.params.details ? { finish_reason: FINISH[e.reason], prompt_tokens: prep.seq.params.prompt.length, generated_tokens: count, seed: prep.doSample ? prep.sampling.seed : null } : null;
      yield JSON.stringify({ token: held ? await tokenOf(texts, held) : null, generated_text: text, details: d });
    }
  } catch (e) {
    yield JSON.stringify(errorBody(path, toApiError(e)));
  }
}

export function loraxGenerate(ctx: WorkerContext) {
  return async function generateHandler(c: Context<WorkerEnv>): Promise<Response> {
    if ((c.get('body') as { stream?: unknown }).stream === true) throw badRequest('stream: true is for /generate_stream (or POST /)', 'stream');
    const r = await generateOnce(ctx, c);
    return c.json(r.body, 200, r.headers);
  };
}

export function loraxGenerateStream(ctx: WorkerContext) {
  return async function generateStreamHandler(c: Context<WorkerEnv>): Promise<Response> {
    if ((c.get('body') as { stream?: unknown }).stream === false) throw badRequest('stream: false is for /generate', 'stream');
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
