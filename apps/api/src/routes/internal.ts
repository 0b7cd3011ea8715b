// Worker heartbeats (contract §2), authenticated with the shared worker secret.
import { HEARTBEAT_PATH } from '@loraplex/protocol';
import type { Context } from 'hono';
import { sameSecret } from '../auth/keys.js';
import { ApiError, badRequest } from '../errors.js';
import type { App, Services } from '../services.js';

async function heartbeat(c: Context, s: Services): Promise<Response> {
  const secret = s.config.workerSecret;
  if (secret === undefined)
    throw new ApiError(
      401,
      'heartbeats_disabled',
      'this API has no LORAPLEX_WORKER_SECRET: worker heartbeats are refused',
    );
  const m = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
  if (!m || !sameSecret(m[1]!, secret)) throw new ApiError(401, 'invalid_worker_secret', 'invalid worker secret');
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw badRequest('malformed JSON in the heartbeat body', 'invalid_json');
  }
  await s.routing.registry.heartbeat(body);
  return c.json({ ok: true });
}

export function registerInternalRoutes(app: App, s: Services): void {
  app.post(HEARTBEAT_PATH, (c) => heartbeat(c, s));
}
