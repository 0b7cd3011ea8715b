// API keys: the platform admin manages every key; a tenant key with the admin scope manages its own
// tenant's keys. A key is returned once, at creation; lists show its prefix only.
import { createRoute, z } from '@hono/zod-openapi';
import { and, eq, isNull, type SQL } from 'drizzle-orm';
import { isPlatformAdmin, type Principal } from '../auth/authenticator.js';
import { generateKey } from '../auth/keys.js';
import { requireScope } from '../auth/middleware.js';
import type { Db } from '../db/client.js';
import { apiKeys, tenants, type Scope } from '../db/schema.js';
import { isUniqueViolation } from '../db/unique.js';
import { ApiError, badRequest, notFound } from '../errors.js';
import { newKeyId } from '../ids.js';
import type { App, Services } from '../services.js';
import {
  ApiKeySchema,
  authErrors,
  CreatedKeySchema,
  CreateKeySchema,
  errors,
  jsonBody,
  jsonResponse,
  listOf,
} from './schemas.js';

type KeyRow = typeof apiKeys.$inferSelect;

export const keyJson = (k: KeyRow) => ({
  id: k.id,
  object: 'api_key' as const,
  prefix: k.prefix,
  name: k.name,
  scopes: k.scopes,
  tenant_id: k.tenantId,
  created_at: k.createdAt.toISOString(),
  revoked_at: k.revokedAt?.toISOString() ?? null,
  last_used_at: k.lastUsedAt?.toISOString() ?? null,
});

const tenantMissing = (): ApiError => notFound('tenant not found', 'tenant_not_found');

/** The tenant a key operation applies to: the caller's own, or (platform admin) the one named. */
function targetTenant(p: Principal, requested: string | undefined): string | undefined {
  if (isPlatformAdmin(p)) return requested;
  if (requested !== undefined && requested !== p.tenantId) throw tenantMissing();
  return p.tenantId ?? undefined;
}

/** Inserts a key and returns it with the secret (shown once). tenantId null: a platform admin key. */
export async function createKey(
  db: Db,
  tenantId: string | null,
  scopes: Scope[],
  name: string | null,
): Promise<{ row: KeyRow; key: string }> {
  for (let attempt = 0; ; attempt++) {
    const k = generateKey();
    try {
      const [row] = await db
        .insert(apiKeys)
        .values({ id: newKeyId(), tenantId, name, prefix: k.prefix, hash: k.hash, scopes })
        .returning();
      return { row: row!, key: k.key };
    } catch (e) {
      // 32 random bits of prefix can collide (unique index); draw another key.
      if (attempt < 3 && isUniqueViolation(e)) continue;
      throw e;
    }
  }
}

const security = [{ bearer: [] }];
const admin = requireScope(['admin'], { tenant: false });

export function registerKeyRoutes(app: App, s: Services): void {
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/keys',
      tags: ['keys'],
      summary: 'Create an API key (shown once)',
      security,
      middleware: admin,
      request: { body: jsonBody(CreateKeySchema) },
      responses: {
        201: jsonResponse(CreatedKeySchema, 'The key, with its secret (shown only here)'),
        ...authErrors,
        404: errors[404],
      },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const p = c.get('principal');
      const tenantId = targetTenant(p, body.tenant_id);
      if (tenantId === undefined)
        throw badRequest('tenant_id is required: the platform admin creates keys for a tenant', 'tenant_id_required');
      const [t] = await s.db.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, tenantId));
      if (!t) throw tenantMissing();
      const { row, key } = await createKey(
        s.db,
        tenantId,
        body.scopes ?? ['inference', 'adapters:write'],
        body.name ?? null,
      );
      const { revoked_at: _r, last_used_at: _l, ...rest } = keyJson(row);
      return c.json({ ...rest, key }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/keys',
      tags: ['keys'],
      summary: 'List API keys (prefix only)',
      security,
      middleware: admin,
      request: { query: z.strictObject({ tenant_id: z.string().optional() }) },
      responses: { 200: jsonResponse(listOf(ApiKeySchema), 'Keys'), ...authErrors, 404: errors[404] },
    }),
    async (c) => {
      const p = c.get('principal');
      const tenantId = targetTenant(p, c.req.valid('query').tenant_id);
      const where: SQL | undefined = tenantId !== undefined ? eq(apiKeys.tenantId, tenantId) : undefined;
      const rows = await s.db.select().from(apiKeys).where(where).orderBy(apiKeys.createdAt);
      return c.json({ object: 'list' as const, data: rows.map(keyJson) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/keys/{id}',
      tags: ['keys'],
      summary: 'Revoke an API key',
      security,
      middleware: admin,
      request: { params: z.object({ id: z.string() }) },
      responses: {
        200: jsonResponse(
          z.object({ id: z.string(), object: z.literal('api_key'), revoked: z.literal(true) }),
          'Revoked',
        ),
        ...authErrors,
        404: errors[404],
      },
    }),
    async (c) => {
      const p = c.get('principal');
      const { id } = c.req.valid('param');
      const mine = isPlatformAdmin(p)
        ? eq(apiKeys.id, id)
        : and(eq(apiKeys.id, id), eq(apiKeys.tenantId, p.tenantId ?? ''));
      const [row] = await s.db.select({ id: apiKeys.id }).from(apiKeys).where(mine);
      if (!row) throw notFound('API key not found', 'key_not_found');
      await s.db
        .update(apiKeys)
        .set({ revokedAt: new Date() })
        .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)));
      s.auth.forget(id);
      return c.json({ id, object: 'api_key' as const, revoked: true as const }, 200);
    },
  );
}
