// The API's Prometheus metrics (GET /metrics, platform admin key only): requests and their latency
// by route, status and tenant, and the router's upstream (worker) errors. One registry per app, so
// several apps can live in one process (tests).
//
// Tenant cardinality is bounded: the first `maxTenants` tenants seen since the process started keep
// their id as the `tenant` label, every later one is counted as 'other' (the first come keep theirs,
// so a tenant's series never moves from its id to 'other' and back). Requests without a tenant are
// 'admin' (the platform admin key) or 'none' (no valid key, or a route without authentication).
// Routes are the matched route patterns ('unmatched' for a 404 with no route), never raw paths.
import { Counter, Histogram, Registry } from 'prom-client';
import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import type { AuthEnv } from './auth/middleware.js';
import { isPlatformAdmin } from './auth/authenticator.js';
import { ApiError } from './errors.js';
import type { UpstreamError } from './worker-proxy/router.js';

export const OTHER_TENANTS = 'other';

/** The tenant label: its id while under the cap, else 'other'. */
export class TenantLabels {
  private readonly known = new Set<string>();
  constructor(readonly maxTenants: number) {}

  label(tenantId: string): string {
    if (this.known.has(tenantId)) return tenantId;
    if (this.known.size >= this.maxTenants) return OTHER_TENANTS;
    this.known.add(tenantId);
    return tenantId;
  }
}

export class ApiMetrics {
  readonly registry = new Registry();
  readonly tenants: TenantLabels;
  readonly requests = new Counter({
    name: 'loraplex_api_requests_total',
    help: 'API requests by route, status and tenant',
    labelNames: ['route', 'method', 'status', 'tenant'],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'loraplex_api_request_duration_seconds',
    help: 'Time to the response head by route and tenant (a stream: to its first event)',
    labelNames: ['route', 'tenant'],
    buckets: [0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly upstreamErrors = new Counter({
    name: 'loraplex_api_upstream_errors_total',
    help: 'Failed worker attempts: unreachable, refused (429/503), failed (before an answer), broken (a stream cut mid-answer)',
    labelNames: ['reason'],
    registers: [this.registry],
  });

  constructor(opts: { maxTenants?: number } = {}) {
    this.tenants = new TenantLabels(opts.maxTenants ?? 100);
  }

  upstreamError(reason: UpstreamError): void {
    this.upstreamErrors.inc({ reason });
  }

  /** Counts every request once its response head is ready. */
  countRequests(): MiddlewareHandler<AuthEnv> {
    return async (c, next) => {
      const t0 = performance.now();
      await next();
      const route = routeOf(c);
      const tenant = this.tenantOf(c);
      this.requests.inc({ route, method: c.req.method, status: String(c.res.status), tenant });
      this.duration.observe({ route, tenant }, (performance.now() - t0) / 1000);
    };
  }

  private tenantOf(c: Context<AuthEnv>): string {
    const p = c.get('principal');
    if (!p) return 'none';
    if (p.tenantId === null) return 'admin';
    return this.tenants.label(p.tenantId);
  }

  /** GET /metrics: the platform admin only (any other caller gets the authentication middleware's 401 or this 403). */
  handler(): (c: Context<AuthEnv>) => Promise<Response> {
    return async (c) => {
      const admin = isPlatformAdmin(c.get('principal'));
      if (!admin) throw new ApiError(403, 'insufficient_scope', '/metrics needs the platform admin key');
      return c.text(await this.registry.metrics(), 200, { 'Content-Type': this.registry.contentType });
    };
  }
}

/** The last matched route pattern (the handler's, even when a middleware answered); 'unmatched' when only '*' matched. */
function routeOf(c: Context): string {
  const r = routePath(c, -1);
  return r && r !== '*' && r !== '/*' ? r : 'unmatched';
}
