// Hono middleware: authenticate the caller, then check the scopes a route needs.
import type { MiddlewareHandler } from 'hono';
import type { Scope } from '../db/schema.js';
import { ApiError } from '../errors.js';
import type { Authenticator, Principal } from './authenticator.js';

export interface AuthEnv {
  Variables: { principal: Principal };
}

export function authenticate(auth: Authenticator): MiddlewareHandler<AuthEnv> {
  return async function authenticateRequest(c, next) {
    c.set('principal', await auth.verify(c.req.header('authorization')));
    await next();
  };
}

/** Needs one of `scopes`; tenant routes also need a tenant key (the platform admin has no tenant). */
export function requireScope(scopes: Scope[], opts: { tenant: boolean }): MiddlewareHandler<AuthEnv> {
  return async function checkScope(c, next) {
    const p = c.get('principal');
    if (!scopes.some((s) => p.scopes.includes(s))) {
      throw new ApiError(
        403,
        'insufficient_scope',
        `this API key lacks the scope this route needs (${scopes.join(' or ')})`,
      );
    }
    if (opts.tenant && p.tenantId === null) {
      throw new ApiError(
        403,
        'tenant_key_required',
        'the platform admin key belongs to no tenant: use a tenant API key here',
      );
    }
    await next();
  };
}

export function tenantOf(p: Principal): string {
  if (p.tenantId === null)
    throw new ApiError(
      403,
      'tenant_key_required',
      'the platform admin key belongs to no tenant: use a tenant API key here',
    );
  return p.tenantId;
}
