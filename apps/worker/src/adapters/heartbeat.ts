// Worker registration (docs/platform-contract.md §2): every interval the worker tells the API who
// it is, what it serves and what it holds, so the API can route to it; on shutdown it says it is
// draining. An unreachable API is logged (once per outage) and never stops the worker.
import { HEARTBEAT_PATH, type Heartbeat as HeartbeatBody } from '@loraplex/protocol';
import type { WorkerContext } from '../worker-context.js';

export interface HeartbeatOptions {
  apiUrl: string;
  /** How the API reaches this worker; serve() fills it in from the listener when unset. */
  advertiseUrl?: string;
  workerId: string;
  intervalS: number;
  secret: string;
  /** The base model's config.json, verbatim. */
  modelConfig: Record<string, unknown>;
  maxLoraRank: number;
  hostAdapters: number;
}

export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  /** Heartbeats the API accepted (tests and logs). */
  sent = 0;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly opts: HeartbeatOptions,
  ) {}

  /** The body, typed by the API's schema (@loraplex/protocol); `url` is empty only before start(). */
  body(draining: boolean): HeartbeatBody {
    const { engine, scheduler, adapters } = this.ctx;
    const slots = adapters.resident();
    const host = adapters.tiers.hostNames();
    return {
      id: this.opts.workerId,
      url: this.opts.advertiseUrl ?? '',
      base_model: this.ctx.modelId,
      model_config: this.opts.modelConfig,
      max_lora_rank: this.opts.maxLoraRank,
      capacity: {
        adapter_slots: engine.options.maxAdapters,
        host_adapters: this.opts.hostAdapters,
        kv_blocks: engine.kvUsage().totalBlocks,
        max_batch_tokens: engine.options.maxBatchTokens,
      },
      load: {
        running: scheduler.runningCount,
        waiting: scheduler.waitingCount,
        kv_free_blocks: engine.kvUsage().freeBlocks,
      },
      // Routing affinity: adapters in engine slots serve at once; the host tier still costs a slot
      // load. The API prefers the former, then the latter (contract §2). resident_adapters (both)
      // is kept for APIs that predate the split.
      slot_adapters: slots,
      host_adapters: host,
      resident_adapters: [...new Set([...slots, ...host])],
      draining,
    };
  }

  private post(body: string): Promise<Response> {
    return fetch(new URL(HEARTBEAT_PATH, this.opts.apiUrl), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.opts.secret}` },
      body,
      signal: AbortSignal.timeout(5000),
    });
  }

  async send(draining = false): Promise<boolean> {
    try {
      const body = JSON.stringify(this.body(draining));
      // Once more at once when the request did not go through (fetch's TypeError, e.g. a
      // keep-alive connection the API had just closed as idle): a missed beat under load costs
      // the interval, and three in a row take this worker out of routing.
      const r = await this.post(body).catch((e: unknown) => {
        if (e instanceof TypeError) return this.post(body);
        throw e;
      });
      await r.body?.cancel();
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      if (this.failing) console.error(`[worker] heartbeats to ${this.opts.apiUrl} recovered`);
      this.failing = false;
      this.sent++;
      return true;
    } catch (e) {
      if (!this.failing) console.error(`[worker] heartbeat to ${this.opts.apiUrl} failed: ${(e as Error).message}`);
      this.failing = true;
      return false;
    }
  }

  /** Starts beating; `listening` is the listener's own URL, the default advertised address. */
  start(listening: string): void {
    this.opts.advertiseUrl ??= listening;
    void this.send();
    this.timer = setInterval(() => void this.send(), this.opts.intervalS * 1000);
    this.timer.unref();
  }

  /** Stops the beat and tells the API this worker is draining. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.send(true);
  }
}
