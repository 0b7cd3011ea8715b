// GET /v1/models (vLLM's model cards), GET /health (liveness), GET /ready (readiness), GET /metrics (Prometheus text).
import { monotonicClock, type Clock } from '@loraplex/common';
import type { Context } from 'hono';
import type { WorkerContext } from '../../worker-context.js';
import type { WorkerEnv } from '../types.js';

/** Base model first (root = model path, parent null), then every known adapter (root = adapter path, parent = base id). */
export function listModels(ctx: WorkerContext) {
  return async function modelsHandler(c: Context<WorkerEnv>): Promise<Response> {
    const card = (
      id: string,
      root: string,
      parent: string | null,
      extra: Record<string, unknown> = {},
    ): Record<string, unknown> => ({
      id,
      object: 'model',
      created: ctx.startedAt,
      owned_by: 'loraplex',
      root,
      parent,
      ...extra,
      permission: [
        {
          id: `modelperm-${id}`,
          object: 'model_permission',
          created: ctx.startedAt,
          allow_create_engine: false,
          allow_sampling: true,
          allow_logprobs: true,
          allow_search_indices: false,
          allow_view: true,
          allow_fine_tuning: false,
          organization: '*',
          group: null,
          is_blocking: false,
        },
      ],
    });
    const resident = new Set(ctx.adapters.resident());
    const adapters = await ctx.adapters.list();
    // Adapters the worker cannot serve (NeMo format) are listed with the reason, as NIM lists them.
    const served = new Set(adapters.map((a) => a.name));
    const unsupported = ((await ctx.unsupportedAdapters?.()) ?? []).filter((u) => !served.has(u.name));
    return c.json({
      object: 'list',
      data: [
        card(ctx.modelId, ctx.modelPath, null, { max_model_len: ctx.engine.config.maxPositions }),
        ...adapters.map((a) => card(a.name, a.path, ctx.modelId, { loaded: resident.has(a.name) })),
        ...unsupported.map((u) => card(u.name, u.path, ctx.modelId, { status: 'unsupported', error: u.reason })),
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

export interface ReadinessOptions {
  /** The clock stall ages are read on (default monotonicClock; tests drive one). */
  clock?: Clock;
  /** Sequences running and no scheduler step completed for this long: not ready. Default 60 s. */
  stallMs?: number;
}

/**
 * Ready: the model is loaded (the server listens only after loading it), the worker accepts work
 * (503 while draining), and the scheduler loop is alive: it is idle, or it has completed a step
 * within stallMs while sequences were running. Sequences only waiting (for an adapter load) do
 * not count as a stall: the loop has nothing to step until the load finishes.
 */
export function ready(ctx: WorkerContext, opts: ReadinessOptions = {}) {
  const clock = opts.clock ?? monotonicClock;
  const stallMs = opts.stallMs ?? 60_000;
  let lastSteps = ctx.scheduler.steps;
  let progressAt = clock.now();
  return function readyHandler(c: Context<WorkerEnv>): Response {
    const s = ctx.scheduler;
    const now = clock.now();
    if (s.steps !== lastSteps || s.runningCount === 0) {
      lastSteps = s.steps;
      progressAt = now;
    }
    const state = { model: ctx.modelId, running: s.runningCount, waiting: s.waitingCount, steps: s.steps };
    if (!s.isAccepting) return c.json({ status: 'draining', reason: 'the worker is shutting down', ...state }, 503);
    const stalledMs = now - progressAt;
    if (stalledMs >= stallMs) {
      const reason = `the scheduler completed no step in ${Math.round(stalledMs / 1000)} s with ${s.runningCount} sequences running`;
      return c.json({ status: 'stalled', reason, ...state }, 503);
    }
    return c.json({ status: 'ready', ...state });
  };
}

export function metrics(ctx: WorkerContext) {
  return async function metricsHandler(c: Context<WorkerEnv>): Promise<Response> {
    const text = await ctx.metrics.registry.metrics();
    return c.text(text, 200, { 'Content-Type': ctx.metrics.registry.contentType });
  };
}
