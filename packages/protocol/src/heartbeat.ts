// The worker heartbeat body (docs/platform-contract.md §2): POST /internal/workers/heartbeat, every
// interval, telling the API who a worker is, what it serves and what it holds. Unknown fields are
// dropped rather than refused, so a newer worker can report more than an API reads.
import { z } from 'zod';

const count = z
  .number()
  .int()
  .min(0)
  .max(2 ** 31 - 1);
const adapterIds = z.array(z.string().min(1).max(256)).max(100_000);

export const HEARTBEAT_PATH = '/internal/workers/heartbeat';

export const heartbeat = z.object({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'a worker id is 1-128 letters, digits or _.:- characters'),
  url: z
    .string()
    .max(2048)
    .refine((u) => {
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

export type Heartbeat = z.infer<typeof heartbeat>;
