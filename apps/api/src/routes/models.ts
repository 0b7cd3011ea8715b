// GET /v1/models (vLLM's shape): the base models, then the tenant's ready adapters, each version as
// name@version plus its name for the newest ready version; parent = the base model.
import { createRoute } from '@hono/zod-openapi';
import { LORAX_MAX_BEST_OF, LORAX_MAX_STOP_SEQUENCES, loraxInfo, type LoraxInfo } from '@loraplex/protocol';
import { ApiError } from '../errors.js';
import type { BaseModelRecord } from '../ports.js';
import { requireScope, tenantOf } from '../auth/middleware.js';
import type { App, Services } from '../services.js';
import { authErrors, errors, jsonResponse, listOf, ModelSchema, openapi } from './schemas.js';

const seconds = (d: Date): number => Math.floor(d.getTime() / 1000);

/**
 * LoRAX's /info for a base model, from what its workers reported (model_config). The API does not
 * see each worker's batch size or concurrency, so those are the model's context (one full
 * sequence) and the tenant's concurrency limit (0 = none).
 */
function infoOf(b: BaseModelRecord, maxConcurrent: number): LoraxInfo {
  const ctx = b.config.max_position_embeddings;
  const maxTotal = typeof ctx === 'number' && Number.isInteger(ctx) && ctx > 0 ? ctx : 0;
  const dtype = b.config.torch_dtype;
  return {
    model_id: b.id,
    model_sha: null,
    model_dtype: typeof dtype === 'string' ? dtype : 'float32',
    model_device_type: 'loraplex',
    model_pipeline_tag: 'lorax',
    max_concurrent_requests: maxConcurrent,
    max_best_of: LORAX_MAX_BEST_OF,
    max_stop_sequences: LORAX_MAX_STOP_SEQUENCES,
    max_input_length: Math.max(0, maxTotal - 1),
    max_total_tokens: maxTotal,
    waiting_served_ratio: 1.2,
    max_batch_total_tokens: maxTotal,
    max_waiting_tokens: 20,
    validation_workers: 1,
    version: '0.1.0',
    sha: null,
    docker_label: null,
  };
}

export function registerModelRoutes(app: App, s: Services): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/info',
      tags: ['inference'],
      security: [{ bearer: [] }],
      summary: 'LoRAX info: the served base model (the first, when several are served) and its limits',
      middleware: requireScope(['inference'], { tenant: true }),
      responses: { 200: jsonResponse(openapi(loraxInfo, 'LoraxInfo'), 'Info'), ...authErrors, 503: errors[503] },
    }),
    async (c) => {
      const bases = [...(await s.routing.registry.baseModels())].sort((a, b) => a.id.localeCompare(b.id));
      if (bases.length === 0)
        throw new ApiError(503, 'no_workers', 'no base model is being served yet', { 'Retry-After': '2' });
      return c.json(infoOf(bases[0]!, s.config.limits.maxConcurrent), 200);
    },
  );

  const started = seconds(new Date());
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/models',
      tags: ['inference'],
      summary: "Base models and the tenant's ready adapters",
      security: [{ bearer: [] }],
      middleware: requireScope(['inference'], { tenant: true }),
      responses: { 200: jsonResponse(listOf(ModelSchema), 'Models'), ...authErrors },
    }),
    async (c) => {
      const tenantId = tenantOf(c.get('principal'));
      const bases = await s.routing.registry.baseModels();
      const data = bases.map((b) => ({
        id: b.id,
        object: 'model' as const,
        created: started,
        owned_by: 'loraplex',
        root: b.id,
        parent: null,
      }));
      const ready = await s.catalog.readyList(tenantId); // by name, then version
      const newest = new Map<string, (typeof ready)[number]>();
      for (const a of ready) newest.set(a.name, a);
      for (const a of newest.values())
        data.push({
          id: a.name,
          object: 'model',
          created: seconds(a.createdAt),
          owned_by: tenantId,
          root: a.id,
          parent: a.baseModel,
        } as never);
      for (const a of ready)
        data.push({
          id: `${a.name}@${a.version}`,
          object: 'model',
          created: seconds(a.createdAt),
          owned_by: tenantId,
          root: a.id,
          parent: a.baseModel,
        } as never);
      return c.json({ object: 'list' as const, data }, 200);
    },
  );
}
