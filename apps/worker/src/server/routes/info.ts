// GET /v1/models (vLLM's model cards), GET /health, GET /metrics (Prometheus text).
import type { Context } from 'hono';
import type { WorkerContext } from '../../worker-context.js';
import type { WorkerEnv } from '../types.js';

/** Base model first (root = model path, parent null), then every known adapter (root = adapter path, parent = base id). */
export function listModels(ctx: WorkerContext) {
  return async function modelsHandler(c: Context<WorkerEnv>): Promise<Response> {
    const card = (id: string, root: string, parent: string | null, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      id, object: 'model', created: ctx.startedAt, owned_by: 'loraplex', root, parent, ...extra,
      permission: [{ id: `modelperm-${id}`, object: 'model_permission', created: ctx.startedAt, allow_create_engine: false, allow_sampling: true, allow_logprobs: true, allow_search_indices: false, allow_view: true, allow_fine_tuning: false, organization: '*', group: null, is_blocking: false }],
    });
    const resident = new Set(ctx.adapters.resident());
    const adapters = await ctx.adapters.list();
    return c.json({
      object: 'list',
      data: [
        card(ctx.modelId, ctx.modelPath, null, { max_model_len: ctx.engine.config.maxPositions }),
        ...adapters.map((a) => card(a.name, a.path, ctx.modelId, { loaded: resident.has(a.name) })),
      ],
    });
  };
}

export function health(ctx: WorkerContext) {
  return function healthHandler(c: Context<WorkerEnv>): Response {
    if (!ctx.scheduler.isAccepting) return c.json({ status: 'draining' }, 503);
    return c.json({ status: 'ok' });
  };
}

export function metrics(ctx: WorkerContext) {
  return async function metricsHandler(c: Context<WorkerEnv>): Promise<Response> {
    const text = await ctx.metrics.registry.metrics();
    return c.text(text, 200, { 'Content-Type': ctx.metrics.registry.contentType });
  };
}
