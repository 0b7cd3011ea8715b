// GET /ready, the readiness probe (GET /health stays the liveness probe: the process answers).
// Ready means this instance can serve inference: the database answers and at least one healthy
// worker (fresh heartbeat, not draining) serves a base model. Otherwise 503 with the reasons, so
// a load balancer sends no traffic here and an operator reads why.
//
// Workers send their heartbeats to the API, so they must reach an instance that is not ready yet:
// the Helm chart gives them a Service that publishes not-ready addresses (api-internal).
import { sql } from 'drizzle-orm';
import type { Context } from 'hono';
import type { Db } from '../db/client.js';
import type { WorkerRegistryPort } from '../ports.js';

export interface ReadinessOptions {
  /** A database ping that takes longer counts as unreachable. Default 2000 ms. */
  dbTimeoutMs?: number;
}

export interface Readiness {
  ready: boolean;
  database: 'ok' | 'unreachable';
  /** Base models with at least one healthy worker; null when the registry cannot tell. */
  served_models: string[] | null;
  /** Base models known (reported by a worker once) that have no healthy worker now. */
  unserved_models: string[];
  /** Why not ready (empty when ready). */
  reasons: string[];
}

async function pingDatabase(db: Db, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  // Both drizzle flavours (node-postgres, PGlite) have execute(); their union type does not call it.
  const query = (db as unknown as { execute(q: ReturnType<typeof sql>): Promise<unknown> }).execute(sql`select 1`);
  const timeout = new Promise<never>(
    (_, rej) => (timer = setTimeout(() => rej(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)),
  );
  try {
    await Promise.race([query, timeout]);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    clearTimeout(timer);
  }
}

export async function checkReadiness(
  db: Db,
  registry: WorkerRegistryPort,
  opts: ReadinessOptions = {},
): Promise<Readiness> {
  const reasons: string[] = [];
  const dbError = await pingDatabase(db, opts.dbTimeoutMs ?? 2000);
  if (dbError !== undefined) reasons.push(`database unreachable: ${dbError}`);
  const served = registry.servedBaseModels ? registry.servedBaseModels() : null;
  let known: string[] = [];
  try {
    known = (await registry.baseModels()).map((m) => m.id);
  } catch {
    // Base models are read from the database, whose failure is already a reason.
  }
  if (served !== null && served.length === 0) reasons.push('no healthy worker: no worker has sent a recent heartbeat');
  return {
    ready: reasons.length === 0,
    database: dbError === undefined ? 'ok' : 'unreachable',
    served_models: served,
    unserved_models: served === null ? [] : known.filter((m) => !served.includes(m)),
    reasons,
  };
}

export function readyHandler(db: Db, registry: WorkerRegistryPort, opts: ReadinessOptions = {}) {
  return async function ready(c: Context): Promise<Response> {
    const r = await checkReadiness(db, registry, opts);
    return c.json({ status: r.ready ? 'ready' : 'not_ready', ...r }, r.ready ? 200 : 503);
  };
}
