// Prometheus metrics (prom-client), one registry per worker so several workers can live in one
// process (tests). Per-adapter series use the adapter name as the `adapter` label, `__base__` for
// the base model. KV and queue gauges are read at scrape time. vLLM's names for the same state
// (vllm-metrics.ts) are exported beside these, for routers that read vLLM's.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AdapterHooks } from './adapters/adapter-manager.js';
import type { AdapterTiers } from './adapters/tiers.js';
import type { Scheduler, SchedulerHooks } from './scheduler/scheduler.js';
import type { Sequence } from './scheduler/sequence.js';
import { VllmMetrics } from './vllm-metrics.js';

export const BASE_LABEL = '__base__';
const label = (s: Sequence): string => s.params.adapter ?? BASE_LABEL;

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'loraplex_requests_total',
    help: 'HTTP generation requests by adapter, route and status',
    labelNames: ['adapter', 'route', 'status'],
    registers: [this.registry],
  });
  readonly sequences = new Counter({
    name: 'loraplex_sequences_total',
    help: 'Sequences submitted (n > 1 submits several per request)',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly promptTokens = new Counter({
    name: 'loraplex_prompt_tokens_total',
    help: 'Prompt tokens of admitted sequences',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({
    name: 'loraplex_generated_tokens_total',
    help: 'Generated tokens',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly finished = new Counter({
    name: 'loraplex_sequences_finished_total',
    help: 'Sequences finished, by finish reason',
    labelNames: ['adapter', 'reason'],
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'loraplex_sequences_failed_total',
    help: 'Sequences that failed (adapter load, engine error)',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly preemptions = new Counter({
    name: 'loraplex_preemptions_total',
    help: 'Sequences preempted by recompute when the KV cache ran out',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly cancelled = new Counter({
    name: 'loraplex_sequences_cancelled_total',
    help: 'Sequences cancelled because the client went away',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly adapterLoads = new Counter({
    name: 'loraplex_adapter_loads_total',
    help: 'Adapter loads into an engine slot, by result',
    labelNames: ['adapter', 'result'],
    registers: [this.registry],
  });
  readonly adapterEvictions = new Counter({
    name: 'loraplex_adapter_evictions_total',
    help: 'Adapters unloaded from an engine slot',
    labelNames: ['adapter'],
    registers: [this.registry],
  });
  readonly adapterLoadSeconds = new Histogram({
    name: 'loraplex_adapter_load_seconds',
    help: 'Time to load an adapter into a slot',
    buckets: [0.005, 0.02, 0.1, 0.5, 2, 10],
    registers: [this.registry],
  });
  readonly stepSeconds = new Histogram({
    name: 'loraplex_step_seconds',
    help: 'Duration of one engine step',
    buckets: [0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly stepTokens = new Histogram({
    name: 'loraplex_step_tokens',
    help: 'Tokens (decode + prefill) in one step',
    buckets: [1, 4, 16, 64, 256, 1024, 4096],
    registers: [this.registry],
  });
  readonly queueSeconds = new Histogram({
    name: 'loraplex_queue_seconds',
    help: 'Time from submission to admission',
    labelNames: ['adapter'],
    buckets: [0.001, 0.01, 0.1, 0.5, 2, 10, 60],
    registers: [this.registry],
  });
  readonly ttftSeconds = new Histogram({
    name: 'loraplex_time_to_first_token_seconds',
    help: 'Time from submission to the first generated token',
    labelNames: ['adapter'],
    buckets: [0.005, 0.02, 0.1, 0.5, 2, 10, 60],
    registers: [this.registry],
  });

  /** vLLM's metric names, labelled with the served model name. */
  readonly vllm: VllmMetrics;

  constructor(opts: { defaultMetrics?: boolean; modelName?: string } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
    this.vllm = new VllmMetrics(this.registry, opts.modelName ?? '');
  }

  /** Gauges read from the live scheduler, KV allocator and adapter manager. */
  bindGauges(src: {
    scheduler: () => Scheduler;
    kv: () => { free: number; total: number };
    residentAdapters: () => number;
    slots: number;
    tiers: () => AdapterTiers;
  }): void {
    const reg = [this.registry];
    new Gauge({
      name: 'loraplex_sequences_running',
      help: 'Sequences in the running batch',
      registers: reg,
      collect() {
        this.set(src.scheduler().runningCount);
      },
    });
    new Gauge({
      name: 'loraplex_sequences_waiting',
      help: 'Sequences waiting for admission',
      registers: reg,
      collect() {
        this.set(src.scheduler().waitingCount);
      },
    });
    new Gauge({
      name: 'loraplex_kv_blocks_total',
      help: 'KV cache blocks',
      registers: reg,
      collect() {
        this.set(src.kv().total);
      },
    });
    new Gauge({
      name: 'loraplex_kv_blocks_free',
      help: 'KV cache blocks free',
      registers: reg,
      collect() {
        this.set(src.kv().free);
      },
    });
    new Gauge({
      name: 'loraplex_kv_blocks_used',
      help: 'KV cache blocks held by sequences',
      registers: reg,
      collect() {
        const k = src.kv();
        this.set(k.total - k.free);
      },
    });
    new Gauge({
      name: 'loraplex_adapters_resident',
      help: 'Adapters in engine slots',
      registers: reg,
      collect() {
        this.set(src.residentAdapters());
      },
    });
    new Gauge({
      name: 'loraplex_adapter_slots',
      help: 'Engine adapter slots',
      registers: reg,
      collect() {
        this.set(src.slots);
      },
    });
    new Gauge({
      name: 'loraplex_adapters_host',
      help: 'Adapters in the host-memory tier',
      registers: reg,
      collect() {
        this.set(src.tiers().hostNames().length);
      },
    });
    new Gauge({
      name: 'loraplex_adapter_host_bytes',
      help: 'Bytes of adapter files in the host-memory tier',
      registers: reg,
      collect() {
        this.set(src.tiers().hostBytes);
      },
    });
    new Gauge({
      name: 'loraplex_adapters_disk',
      help: 'Adapters in the disk-cache tier',
      registers: reg,
      collect() {
        this.set(src.tiers().disk.size);
      },
    });
    new Gauge({
      name: 'loraplex_adapter_disk_bytes',
      help: 'Bytes in the disk-cache tier',
      registers: reg,
      collect() {
        this.set(src.tiers().disk.bytes);
      },
    });
    new Gauge({
      name: 'loraplex_accepting',
      help: '1 while the worker accepts requests, 0 while draining',
      registers: reg,
      collect() {
        this.set(src.scheduler().isAccepting ? 1 : 0);
      },
    });
    this.vllm.bindGauges({
      maxLora: src.slots,
      running: () => src.scheduler().runningCount,
      waiting: () => src.scheduler().waitingCount,
      kv: src.kv,
    });
  }

  /** One hook set for loraplex's series and vLLM's (vllm-metrics.ts) together. */
  schedulerHooks(): SchedulerHooks {
    const v = this.vllm;
    const l = v.labels;
    return {
      submitted: (s) => {
        this.sequences.inc({ adapter: label(s) });
        if (v.live.size >= 100_000) v.prune(); // bounded even when nobody scrapes
        v.live.add(s);
      },
      admitted: (s) => {
        const queued = (performance.now() - s.enqueuedAt) / 1000;
        const adapter = label(s);
        this.promptTokens.inc({ adapter }, s.params.prompt.length);
        this.queueSeconds.observe({ adapter }, queued);
        v.promptTokens.inc(l, s.params.prompt.length);
        v.queue.observe(l, queued);
      },
      token: (s) => {
        const now = performance.now();
        const adapter = label(s);
        this.generatedTokens.inc({ adapter });
        if (s.output.length === 1 && s.firstTokenAt !== undefined)
          this.ttftSeconds.observe({ adapter }, (s.firstTokenAt - s.enqueuedAt) / 1000);
        v.generationTokens.inc(l);
        const last = v.lastTokenAt.get(s);
        if (last === undefined) v.ttft.observe(l, (now - s.enqueuedAt) / 1000);
        else {
          v.itl.observe(l, (now - last) / 1000);
          v.tpot.observe(l, (now - last) / 1000);
        }
        v.lastTokenAt.set(s, now);
      },
      finished: (s, reason) => {
        this.finished.inc({ adapter: label(s), reason });
        v.live.delete(s);
        // vLLM's finished_reason values: an EOS token is a 'stop' there.
        v.success.inc({ ...l, finished_reason: reason === 'eos' ? 'stop' : reason });
        v.e2e.observe(l, (performance.now() - s.enqueuedAt) / 1000);
      },
      failed: (s) => {
        this.failed.inc({ adapter: label(s) });
        v.live.delete(s);
      },
      cancelled: (s) => {
        this.cancelled.inc({ adapter: label(s) });
        v.live.delete(s);
        v.success.inc({ ...l, finished_reason: 'abort' });
      },
      preempted: (s) => {
        this.preemptions.inc({ adapter: label(s) });
        v.preemptions.inc(l);
      },
      step: (sec, b) => {
        this.stepSeconds.observe(sec);
        this.stepTokens.observe(b.prefillTokens + b.decodeTokens);
      },
    };
  }

  adapterHooks(): AdapterHooks {
    return {
      loaded: (name, sec) => {
        this.adapterLoads.inc({ adapter: name, result: 'ok' });
        this.adapterLoadSeconds.observe(sec);
      },
      loadFailed: (name) => this.adapterLoads.inc({ adapter: name, result: 'error' }),
      evicted: (name) => this.adapterEvictions.inc({ adapter: name }),
    };
  }
}

type Hook = (...args: unknown[]) => void;

/** One hook set calling each set's hook in turn (metrics, vLLM metrics, tracing). */
export function combineHooks<H extends object>(...sets: H[]): H {
  const out: Record<string, Hook> = {};
  const all = sets as Array<Record<string, Hook | undefined>>;
  for (const key of new Set(all.flatMap((s) => Object.keys(s)))) {
    const fns = all.map((s) => s[key]).filter((f): f is Hook => f !== undefined);
    out[key] =
      fns.length === 1
        ? fns[0]!
        : (...args: unknown[]) => {
            for (const f of fns) f(...args);
          };
  }
  return out as H;
}
