// GET /v1/models (vLLM's shape): the base models, then the tenant's ready adapters, each version as
// name@version plus its name for the newest ready version; parent = the base model.
import { createRoute } from '@hono/zod-openapi';
import { requireScope, tenantOf } from '../auth/middleware.js';
import type { App, Services } from '../services.js';
import { authErrors, jsonResponse, listOf, ModelSchema } from './schemas.js';

const seconds = (d: Date): number => Math.floor(d.getTime() / 1000);

export function registerModelRoutes(app: App, s: Services): void {
  const started = seconds(new Date());
  app.openapi(
    createRoute({
      method: 'get', path: '/v1/models', tags: ['inference'], summary: "Base models and the tenant's ready adapters", security: [{ bearer: [] }],
      middleware: requireScope(['inference'], { tenant: true }),
      responses: { 200: jsonResponse(listOf(ModelSchema), 'Models'), ...authErrors },
    }),
    async (c) => {
      const tenantId = tenantOf(c.get('principal'));
      const bases = await s.routing.registry.baseModels();
      const data = bases.map((b) => ({ id: b.id, object: 'model' as const, created: started, owned_by: 'loraplex', root: b.id, parent: null }));
      const ready = await s.catalog.readyList(tenantId); // by name, then version
      const newest = new Map<string, (typeof ready)[number]>();
      for (const a of ready) newest.set(a.name, a);
      for (const a of newest.values()) data.push({ id: a.name, object: 'model', created: seconds(a.createdAt), owned_by: tenantId, root: a.id, parent: a.baseModel } as never);
      for (const a of ready) data.push({ id: `${a.name}@${a.version}`, object: 'model', created: seconds(a.createdAt), owned_by: tenantId, root: a.id, parent: a.baseModel } as never);
      return c.json({ object: 'list' as const, data }, 200);
    },
  );
}
