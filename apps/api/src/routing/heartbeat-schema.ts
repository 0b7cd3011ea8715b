// The worker heartbeat body (contract §2), validated before anything reaches Postgres. Unknown
// fields are dropped rather than refused, so a newer worker can report more than this API reads.
import { z } from 'zod';

const count = z.number().int().min(0).max(2 ** 31 - 1);
const adapterIds = z.array(z.string().min(1).max(256)).max(100_000);

export const heartbeatBody = z.object({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'a worker id is 1-128 letters, digits or _.:- characters'),
  url: z.string().max(2048).refine((u) => {
    try {
      const p = new URL(u).protocol;
      return p === 'http:' || p === 'https:';
    } catch {
      return false;
    }
  }, 'url must be an absolute http(s) URL'),
  base_model: z.string().min(1).max(256),
  model_config: z.record(z.string(), z.unknown()),
  max_lora_rank: z.number().int().min(1).max(4096),
  capacity: z.object({ adapter_slots: count, host_adapters: count, kv_blocks: count, max_batch_tokens: count }),
  load: z.object({ running: count, waiting: count, kv_free_blocks: count }),
  /** In an engine slot: served at once. */
  slot_adapters: adapterIds.optional(),
  /** In the host-memory tier: a slot load away. */
  host_adapters: adapterIds.optional(),
  /** Slots and host tier together: what workers before the split send (still sent, for older APIs). */
  resident_adapters: adapterIds.optional(),
  draining: z.boolean(),
});

export type HeartbeatBody = z.infer<typeof heartbeatBody>;

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
  const resident = hb.host_adapters !== undefined ? [...new Set([...slot, ...hb.host_adapters])] : [...new Set([...slot, ...(hb.resident_adapters ?? [])])];
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
