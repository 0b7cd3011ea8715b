// vLLM's metric names beside loraplex's own (issue 12): LoRA-aware Kubernetes routers (Gateway API
// Inference Extension, llm-d) scrape a model server for vLLM's names, so a worker exports them as
// vLLM v1 does (vllm/v1/metrics/loggers.py): gauges and histograms labelled model_name (the served
// model name) and engine ("0": one engine per worker), and vllm:lora_requests_info with the
// adapters of running and waiting sequences. A worker sequence is what vLLM calls a request (vLLM
// also fans n > 1 out into one request per choice).
//
// vllm:lora_requests_info: vLLM keeps one series per label combination ever seen, each set to the
// time it was last current; routers read the series with the largest value. Here the gauge is reset
// at every scrape and holds one series, the current one, with the current time: the same reading
// for a router, and no series left behind as the adapter mix changes.
//
// The scheduler hooks that record these are WorkerMetrics' (metrics.ts): one hook set updates
// loraplex's series and vLLM's together, so a sequence event is one call, not a chain.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Sequence } from './scheduler/sequence.js';

/** What the scrape-time gauges read from the worker. */
export interface VllmSources {
  /** Engine LoRA slots (vLLM's max_loras, the max_lora label). */
  maxLora: number;
  running: () => number;
  waiting: () => number;
  kv: () => { free: number; total: number };
}

const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
];
const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const REQUEST_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
const LABELS = ['model_name', 'engine'];

export class VllmMetrics {
  readonly labels: { model_name: string; engine: string };
  readonly promptTokens: Counter<string>;
  readonly generationTokens: Counter<string>;
  readonly preemptions: Counter<string>;
  readonly success: Counter<string>;
  readonly ttft: Histogram<string>;
  readonly itl: Histogram<string>;
  readonly tpot: Histogram<string>;
  readonly e2e: Histogram<string>;
  readonly queue: Histogram<string>;
  /** Sequences submitted and not yet ended: their state and adapter make vllm:lora_requests_info. */
  readonly live = new Set<Sequence>();
  /** When each sequence's previous token came (inter-token latency). */
  readonly lastTokenAt = new WeakMap<Sequence, number>();

  /** `modelName`: the served model name (vLLM's model_name label). */
  constructor(
    private readonly registry: Registry,
    modelName: string,
  ) {
    this.labels = { model_name: modelName, engine: '0' };
    const registers = [registry];
    const counter = (name: string, help: string, extra: string[] = []): Counter<string> =>
      new Counter({ name, help, labelNames: [...LABELS, ...extra], registers });
    const histogram = (name: string, help: string, buckets: number[]): Histogram<string> =>
      new Histogram({ name, help, labelNames: LABELS, buckets, registers });
    this.promptTokens = counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.');
    this.generationTokens = counter('vllm:generation_tokens_total', 'Number of generation tokens processed.');
    this.preemptions = counter('vllm:num_preemptions_total', 'Cumulative number of preemption from the engine.');
    this.success = counter('vllm:request_success_total', 'Count of successfully processed requests.', [
      'finished_reason',
    ]);
    this.ttft = histogram(
      'vllm:time_to_first_token_seconds',
      'Histogram of time to first token in seconds.',
      TTFT_BUCKETS,
    );
    this.itl = histogram(
      'vllm:inter_token_latency_seconds',
      'Histogram of inter-token latency in seconds.',
      ITL_BUCKETS,
    );
    // vLLM's older name for the same observations, still read by dashboards and routers built on it.
    this.tpot = histogram(
      'vllm:time_per_output_token_seconds',
      'Histogram of time per output token in seconds.',
      ITL_BUCKETS,
    );
    this.e2e = histogram(
      'vllm:e2e_request_latency_seconds',
      'Histogram of e2e request latency in seconds.',
      REQUEST_BUCKETS,
    );
    const queueHelp = 'Histogram of time spent in WAITING phase for request.';
    this.queue = histogram('vllm:request_queue_time_seconds', queueHelp, REQUEST_BUCKETS);
  }

  /** The gauges, read at scrape time. */
  bindGauges(src: VllmSources): void {
    const registers = [this.registry];
    const labels = this.labels;
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        labelNames: LABELS,
        registers,
        collect() {
          this.set(labels, read());
        },
      });
    };
    gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', src.running);
    gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', src.waiting);
    const kvUsage = (): number => {
      const kv = src.kv();
      return kv.total > 0 ? (kv.total - kv.free) / kv.total : 0;
    };
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', kvUsage);
    // vLLM's name before 0.9, the default KV metric of earlier inference-extension releases.
    gauge('vllm:gpu_cache_usage_perc', 'KV-cache usage (older name of vllm:kv_cache_usage_perc).', kvUsage);
    const adapters = (): { running: string; waiting: string } => this.adapterLists();
    new Gauge({
      name: 'vllm:lora_requests_info',
      help: 'Running stats on lora requests.',
      registers,
      labelNames: ['max_lora', 'waiting_lora_adapters', 'running_lora_adapters'],
      collect() {
        const { running, waiting } = adapters();
        this.reset();
        const now = Date.now() / 1000;
        this.set(
          { max_lora: String(src.maxLora), waiting_lora_adapters: waiting, running_lora_adapters: running },
          now,
        );
      },
    });
  }

  /** The adapters of running and waiting sequences, each list sorted and comma-separated as vLLM joins them. */
  private adapterLists(): { running: string; waiting: string } {
    const running = new Set<string>(),
      waiting = new Set<string>();
    this.prune();
    for (const s of this.live) {
      if (s.params.adapter !== undefined) (s.state === 'running' ? running : waiting).add(s.params.adapter);
    }
    const names = (set: Set<string>): string => [...set].sort().join(',');
    return { running: names(running), waiting: names(waiting) };
  }

  /** Drops sequences that ended without a hook (e.g. max_tokens 0). */
  prune(): void {
    for (const s of this.live) if (s.isEnded || s.state === 'finished') this.live.delete(s);
  }
}
