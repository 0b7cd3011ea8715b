// LoRAX's GET /info (what is served, and the limits requests are checked against) and POST /tokenize
// (the prompt's tokens, with their spans in the input).
import type { Context } from 'hono';
import {
  LORAX_MAX_BEST_OF,
  LORAX_MAX_STOP_SEQUENCES,
  loraxTokenizeRequest,
  type LoraxInfo,
  type LoraxTokenizeResponse,
} from '@loraplex/protocol';
import { parseBody, refuseOversizedText } from '../../validation/common.js';
import type { WorkerContext } from '../../worker-context.js';
import type { WorkerEnv } from '../types.js';

/** The worker's version, reported in /info. */
export const WORKER_VERSION = '0.1.0';

export function loraxInfoOf(ctx: WorkerContext): LoraxInfo {
  const maxTotal = ctx.engine.config.maxPositions;
  return {
    model_id: ctx.modelId,
    model_sha: null,
    model_dtype: 'float32',
    model_device_type: ctx.engine.backend,
    model_pipeline_tag: 'lorax',
    max_concurrent_requests: ctx.maxRunning,
    max_best_of: LORAX_MAX_BEST_OF,
    max_stop_sequences: LORAX_MAX_STOP_SEQUENCES,
    max_input_length: maxTotal - 1,
    max_total_tokens: maxTotal,
    waiting_served_ratio: 1.2,
    max_batch_total_tokens: ctx.engine.options.maxBatchTokens,
    max_waiting_tokens: 20,
    validation_workers: 1,
    version: WORKER_VERSION,
    sha: null,
    docker_label: null,
  };
}

export function loraxInfo(ctx: WorkerContext) {
  return function infoHandler(c: Context<WorkerEnv>): Response {
    return c.json(loraxInfoOf(ctx));
  };
}

/** POST /tokenize: `inputs` with the base tokenizer (adapters share it); nothing is generated. */
export function loraxTokenize(ctx: WorkerContext) {
  return async function tokenizeHandler(c: Context<WorkerEnv>): Promise<Response> {
    const body = parseBody(loraxTokenizeRequest, c.get('body'));
    refuseOversizedText(ctx, body.inputs.length, 'inputs');
    const enc = await ctx.engine.tokenizer!.encodeWithOffsets(body.inputs, body.add_special_tokens ?? true);
    const tokens: LoraxTokenizeResponse = enc.ids.map((id, i) => {
      const [start, stop] = enc.offsets[i]!;
      return { id, text: body.inputs.slice(start, stop), start, stop };
    });
    // Usage headers: a tokenization generates nothing and is metered as no tokens.
    return c.json(tokens, 200, { 'x-prompt-tokens': '0', 'x-generated-tokens': '0' });
  };
}
