// The worker heartbeat body (contract §2), validated before anything reaches Postgres. The schema
// is @loraplex/protocol's (the worker builds the same typed value); here is what the API makes of it.
import { heartbeat, type Heartbeat } from '@loraplex/protocol';

export const heartbeatBody = heartbeat;

export type HeartbeatBody = Heartbeat;

/** Where a worker holds adapters, whichever heartbeat version reported it. */
export interface Residency {
  /** In an engine slot. */
  slot: string[];
  /** In an engine slot or the host tier. */
  resident: string[];
}

/** An old worker's resident_adapters counts as host tier: it may need a slot load. */
export function residencyOf(hb: HeartbeatBody): Residency {
  const slot = hb.slot_adapters ?? [];
  const resident =
    hb.host_adapters !== undefined
      ? [...new Set([...slot, ...hb.host_adapters])]
      : [...new Set([...slot, ...(hb.resident_adapters ?? [])])];
  return { slot, resident };
}

/** A heartbeat the API refuses (answered 400 by the route). */
export class HeartbeatError extends Error {
  readonly status = 400;
  constructor(message: string) {
    super(message);
    this.name = 'HeartbeatError';
  }
}

export function parseHeartbeat(body: unknown): HeartbeatBody {
  const r = heartbeatBody.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  throw new HeartbeatError(`invalid heartbeat: ${issue.path.join('.') || '(body)'}: ${issue.message}`);
}
