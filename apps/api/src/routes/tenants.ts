// Tenants: created and listed by the platform admin.
import { createRoute } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { isPlatformAdmin } from '../auth/authenticator.js';
import type { AuthEnv } from '../auth/middleware.js';
import { tenants } from '../db/schema.js';
import { ApiError } from '../errors.js';
import { newTenantId } from '../ids.js';
import type { App, Services } from '../services.js';
import { authErrors, CreateTenantSchema, errors, jsonBody, jsonResponse, listOf, TenantSchema } from './schemas.js';

export const tenantJson = (t: typeof tenants.$inferSelect) => ({
  id: t.id,
  object: 'tenant' as const,
  name: t.name,
  created_at: t.createdAt.toISOString(),
});

export const requirePlatformAdmin: MiddlewareHandler<AuthEnv> = async function requirePlatformAdmin(c, next) {
  if (!isPlatformAdmin(c.get('principal')))
    throw new ApiError(403, 'platform_admin_required', 'only the platform admin key manages tenants');
  await next();
};

const security = [{ bearer: [] }];

export function registerTenantRoutes(app: App, s: Services): void {
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/tenants',
      tags: ['tenants'],
      summary: 'Create a tenant (platform admin)',
      security,
      middleware: requirePlatformAdmin,
      request: { body: jsonBody(CreateTenantSchema) },
      responses: { 201: jsonResponse(TenantSchema, 'The tenant'), ...authErrors, 409: errors[409] },
    }),
    async (c) => {
      const { name } = c.req.valid('json');
      const [row] = await s.db
        .insert(tenants)
        .values({ id: newTenantId(), name })
        .onConflictDoNothing({ target: tenants.name })
        .returning();
      if (!row) throw new ApiError(409, 'tenant_exists', `a tenant named ${JSON.stringify(name)} already exists`);
      return c.json(tenantJson(row), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/tenants',
      tags: ['tenants'],
      summary: 'List tenants (platform admin)',
      security,
      middleware: requirePlatformAdmin,
      responses: { 200: jsonResponse(listOf(TenantSchema), 'Every tenant'), ...authErrors },
    }),
    async (c) => {
      const rows = await s.db.select().from(tenants).orderBy(tenants.createdAt);
      return c.json({ object: 'list' as const, data: rows.map(tenantJson) }, 200);
    },
  );
}
