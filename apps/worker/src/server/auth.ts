// Who may call a worker (issue 11): the platform, proven by a request signature made with the
// worker secret (contract §1a), or, for a worker run on its own, a holder of its API key (vLLM's
// --api-key: `Authorization: Bearer <key>`). A worker with neither is open; serve() lets that
// happen only on a loopback address. /health and /ready stay open for probes (state, no adapters or tenants).
//
// Every refusal is the same 401, whatever was wrong (no credentials, a bad or stale signature, a
// replayed nonce, a wrong key) and whatever the request names, so a caller learns nothing about
// adapters or tenants from it; the reason goes to the log only at debug level (LORAPLEX_DEBUG_AUTH).
import { timingSafeEqual, createHash } from 'node:crypto';
import { systemClock, type Clock } from '@loraplex/common';
import type { MiddlewareHandler } from 'hono';
import { ReplayCache, SIGNATURE_HEADER, verifyRequestSignature } from '@loraplex/protocol';
import { ApiError } from './errors.js';
import type { WorkerEnv } from './types.js';

export interface CallerAuth {
  /** The worker secret: requests signed with it come from the platform. */
  secret: string | undefined;
  /** A standalone worker's API key (--api-key / LORAPLEX_API_KEY / VLLM_API_KEY). */
  apiKey: string | undefined;
  replays: ReplayCache;
  /** Wall-clock time for the signature window and the replay cache (default systemClock; tests inject one). */
  clock?: Clock;
}

/** Paths any caller may reach: the liveness and readiness probes. */
const OPEN_PATHS = new Set(['/health', '/ready']);

export const UNAUTHORIZED_MESSAGE =
  'unauthorized: this worker serves the loraplex platform or holders of its API key only';
const unauthorized = (): ApiError => new ApiError(401, 'authentication_error', UNAUTHORIZED_MESSAGE);

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Compares digests, so the comparison takes the same time whatever the key's length. */
function keyMatches(authorization: string | undefined, apiKey: string): boolean {
  if (!authorization?.startsWith('Bearer ')) return false;
  return timingSafeEqual(sha256(authorization.slice(7).trim()), sha256(apiKey));
}

export function authenticateCaller(auth: CallerAuth): MiddlewareHandler<WorkerEnv> {
  const clock = auth.clock ?? systemClock;
  const debug = process.env.LORAPLEX_DEBUG_AUTH === '1';
  return async function authenticateCaller(c, next) {
    if (OPEN_PATHS.has(c.req.path) || (auth.secret === undefined && auth.apiKey === undefined)) return next();
    if (auth.apiKey !== undefined && keyMatches(c.req.header('authorization'), auth.apiKey)) return next();
    const signature = c.req.header(SIGNATURE_HEADER);
    let why = 'no credentials';
    if (auth.secret !== undefined && signature !== undefined) {
      const url = new URL(c.req.url);
      // The body as sent: Hono caches it, so the JSON parser later reads the same bytes.
      const body = new Uint8Array(await c.req.arrayBuffer());
      const t = clock.now() / 1000;
      const check = verifyRequestSignature(signature, auth.secret, c.req.method, url.pathname + url.search, body, t);
      if (check.ok && auth.replays.accept(check.nonce, check.t, t)) return next();
      why = check.ok ? 'replayed nonce' : check.reason;
    }
    if (debug) console.error(`[worker] 401 ${c.req.method} ${c.req.path}: ${why}`);
    throw unauthorized();
  };
}
