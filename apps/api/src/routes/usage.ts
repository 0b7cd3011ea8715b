// GET /v1/usage: the tenant's usage events, summed per adapter over the range, or per adapter and
// day or hour (UTC).
import { createRoute, z } from '@hono/zod-openapi';
import { and, eq, gte, lt, sql } from 'drizzle-orm';
import { requireScope, tenantOf } from '../auth/middleware.js';
import { usageEvents } from '../db/schema.js';
import { badRequest } from '../errors.js';
import type { App, Services } from '../services.js';
import { authErrors, jsonResponse, listOf, UsageRowSchema } from './schemas.js';

const DAY_MS = 86_400_000;

/**
 * An ISO 8601 instant (zod checks the calendar) in years 1-9999 UTC: the range both Postgres and
 * JS dates hold (Postgres has no year 0, JS dates end in 275760), so no bad date reaches the query.
 */
const instant = (description: string) =>
  z.iso
    .datetime({ offset: true })
    .refine((s) => {
      const t = Date.parse(s);
      const year = new Date(t).getUTCFullYear();
      return Number.isFinite(t) && year >= 1 && year <= 9999;
    }, 'must be a date and time between the years 1 and 9999 (UTC)')
    .optional()
    .openapi({ description });

const Query = z.strictObject({
  start: instant('default: 30 days before end'),
  end: instant('default: now'),
  group_by: z.enum(['adapter', 'day', 'hour']).optional().openapi({ description: 'default: day' }),
});

export function registerUsageRoutes(app: App, s: Services): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/usage',
      tags: ['inference'],
      summary: "The tenant's usage",
      security: [{ bearer: [] }],
      middleware: requireScope(['inference'], { tenant: true }),
      request: { query: Query },
      responses: { 200: jsonResponse(listOf(UsageRowSchema), 'Usage rows'), ...authErrors },
    }),
    async (c) => {
      const tenantId = tenantOf(c.get('principal'));
      const q = c.req.valid('query');
      const end = q.end ? new Date(q.end) : new Date();
      const start = q.start ? new Date(q.start) : new Date(end.getTime() - 30 * DAY_MS);
      if (!(start < end)) throw badRequest('start must be before end');
      const groupBy = q.group_by ?? 'day';
      const period =
        groupBy === 'adapter'
          ? sql<string>`${start.toISOString()}::timestamptz`
          : sql<string>`date_trunc(${groupBy}, ${usageEvents.createdAt}, 'UTC')`;
      const rows = await s.db
        .select({
          adapter: usageEvents.adapterRef,
          baseModel: usageEvents.baseModel,
          periodStart: sql<string | Date>`${period}`.as('period_start'),
          requests: sql<string>`count(*)`,
          promptTokens: sql<string>`coalesce(sum(${usageEvents.promptTokens}), 0)`,
          completionTokens: sql<string>`coalesce(sum(${usageEvents.completionTokens}), 0)`,
          avgLatencyMs: sql<string>`coalesce(avg(${usageEvents.latencyMs}), 0)`,
        })
        .from(usageEvents)
        .where(
          and(eq(usageEvents.tenantId, tenantId), gte(usageEvents.createdAt, start), lt(usageEvents.createdAt, end)),
        )
        .groupBy(sql`period_start`, usageEvents.adapterRef, usageEvents.baseModel)
        .orderBy(sql`period_start`, usageEvents.adapterRef);
      const data = rows.map((r) => ({
        adapter: r.adapter,
        base_model: r.baseModel,
        period_start: new Date(r.periodStart).toISOString(),
        requests: Number(r.requests),
        prompt_tokens: Number(r.promptTokens),
        completion_tokens: Number(r.completionTokens),
        avg_latency_ms: Number(r.avgLatencyMs),
      }));
      return c.json({ object: 'list' as const, data }, 200);
    },
  );
}
