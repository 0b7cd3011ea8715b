// The routing-affinity soak (issue 11): two real workers (in this process, on the tiny fixture
// model), N tenant adapters, Zipf-distributed traffic from concurrent clients through the Router,
// heartbeats pushed into the registry every few requests. It counts engine slot loads per request
// with routing on engine slots apart from the host tier ('split') or as before the split
// ('host-as-slot': an adapter in host memory counted as resident like one in a slot), which let
// load spreading copy every adapter onto every worker.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Heartbeat } from '../../../worker/src/adapters/heartbeat.js';
import { startWorker, type RunningWorker } from '../../../worker/src/serve.js';
import { mulberry32 } from '../../../../packages/engine/test/helpers/gen-model.js';
import { SIGNATURE_HEADER, signRequest } from '@loraplex/protocol';
import { DESCRIPTOR_HEADER, signDescriptor, type AdapterTarget } from '../../src/worker-proxy/descriptor.js';
import { WorkerRegistry } from '../../src/worker-proxy/registry.js';
import { pickWorkers, preferResident } from '../../src/worker-proxy/rendezvous.js';
import { Router, type RouterOptions } from '../../src/worker-proxy/router.js';
import { adapterId, adapterTarget } from './routing-app.js';
import { openPgliteTestDb } from './routing-db.js';
import { BASE_MODEL, MODEL_CONFIG, MODEL_DIR, WORKER_SECRET } from './routing-workers.js';

export type HeartbeatMode = 'split' | 'host-as-slot';

export interface SoakOptions {
  mode: HeartbeatMode;
  workers?: number;
  adapters?: number;
  requests?: number;
  /** Concurrent clients. */
  concurrency?: number;
  /** Engine adapter slots per worker. */
  slots?: number;
  zipfS?: number;
  /**
   * Before measuring, every worker serves every adapter once (the steady state of a long soak, in
   * which each adapter has at some point spilled to each worker and stays in its host tier).
   */
  warmup?: boolean;
  /** Requests before measuring (the soak settles from the warm-up state). */
  settle?: number;
  /** Heartbeats from every worker after this many finished requests. */
  heartbeatEvery?: number;
  seed?: number;
}

export interface SoakResult {
  mode: HeartbeatMode;
  requests: number;
  slotLoads: number;
  loadsPerRequest: number;
  /** How many workers served each adapter that got traffic (mean). */
  workersPerAdapter: number;
  /** Requests each worker served. */
  perWorker: number[];
  /** CPU seconds this process spent (both workers and the router run in it). */
  cpuS: number;
}

/** N copies of a fixture adapter, each its own tenant adapter with its own ad_ id. */
function adapterFleet(dir: string, n: number): AdapterTarget[] {
  const proto = adapterTarget('lora_qv_r4');
  return Array.from({ length: n }, (_, i) => {
    const path = join(dir, `a${i}`);
    cpSync((proto.storage as { path: string }).path, path, { recursive: true });
    return { ...proto, id: adapterId(`soak-${i}`), storage: { kind: 'dir', path } };
  });
}

function zipfSampler(n: number, s: number, rand: () => number): () => number {
  const cdf: number[] = [];
  let sum = 0;
  for (let k = 1; k <= n; k++) cdf.push((sum += 1 / k ** s));
  return () => {
    const x = rand() * sum;
    let lo = 0,
      hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

async function slotLoadsOf(running: RunningWorker[]): Promise<number> {
  let n = 0;
  for (const w of running)
    n += (await w.worker.metrics.adapterLoads.get()).values
      .filter((v) => v.labels.result === 'ok')
      .reduce((a, v) => a + v.value, 0);
  return n;
}

/**
 * The router before the split, verbatim: resident (slot or host alike) cost nothing, a cold worker
 * coldPenalty, otherwise requests in flight decide, with no margin for the rendezvous order.
 */
class ResidentRouter extends Router {
  constructor(
    private readonly workers: WorkerRegistry,
    opts: RouterOptions,
  ) {
    super(workers, opts);
  }

  override order(baseModel: string, adapterId: string | undefined) {
    if (adapterId === undefined) return super.order(baseModel, adapterId);
    const healthy = this.workers.healthy(baseModel).map((w) => ({ ...w, slotAdapters: w.residentAdapters }));
    return preferResident(pickWorkers(healthy, adapterId), adapterId, {
      inFlight: (id) => this.inFlightTo(id),
      slotLoadPenalty: 0,
      spillMargin: 0,
    });
  }
}

export async function runAffinitySoak(opts: SoakOptions): Promise<SoakResult> {
  const nWorkers = opts.workers ?? 2,
    nAdapters = opts.adapters ?? 50,
    total = opts.requests ?? 400;
  const concurrency = opts.concurrency ?? 8,
    every = opts.heartbeatEvery ?? 10;
  const tmp = mkdtempSync(join(tmpdir(), 'lp-affinity-'));
  const db = await openPgliteTestDb();
  const running: RunningWorker[] = [];
  const registry = new WorkerRegistry(db.db, { staleAfterMs: 600_000 });
  let router: Router | undefined;
  try {
    const targets = adapterFleet(tmp, nAdapters);
    for (let i = 0; i < nWorkers; i++) {
      running.push(
        await startWorker({
          model: MODEL_DIR,
          servedModelName: BASE_MODEL,
          workerSecret: WORKER_SECRET,
          adapterCacheDir: join(tmp, `cache${i}`),
          backend: 'cpu',
          threads: 1,
          maxAdapters: opts.slots ?? 8,
          port: 0,
        }),
      );
    }
    const beats = running.map(
      (r, i) =>
        new Heartbeat(r.worker, {
          apiUrl: 'http://unused.invalid',
          advertiseUrl: `http://127.0.0.1:${r.port}`,
          workerId: `wk_${i}`,
          intervalS: 2,
          secret: WORKER_SECRET,
          modelConfig: MODEL_CONFIG,
          maxLoraRank: r.worker.engine.options.maxLoraRank,
          hostAdapters: 64,
        }),
    );
    const pushHeartbeats = async (): Promise<void> => {
      for (const hb of beats) {
        await registry.heartbeat(hb.body(false));
      }
    };
    if (opts.warmup ?? true) {
      for (const w of running) {
        for (const t of targets) {
          const body = JSON.stringify({ model: t.id, prompt: 'hi', max_tokens: 1 });
          const res = await fetch(`http://127.0.0.1:${w.port}/v1/completions`, {
            method: 'POST',
            body,
            headers: {
              'content-type': 'application/json',
              [DESCRIPTOR_HEADER]: signDescriptor(t, WORKER_SECRET, Math.floor(Date.now() / 1000) + 300),
              [SIGNATURE_HEADER]: signRequest(WORKER_SECRET, 'POST', '/v1/completions', body),
            },
          });
          if (res.status !== 200) throw new Error(`warm-up request failed: ${res.status} ${await res.text()}`);
        }
      }
    }
    router =
      opts.mode === 'host-as-slot'
        ? new ResidentRouter(registry, { secret: WORKER_SECRET })
        : new Router(registry, { secret: WORKER_SECRET });
    const r = router;
    const next = zipfSampler(nAdapters, opts.zipfS ?? 1.1, mulberry32(opts.seed ?? 11));
    const servedBy = new Map<string, Set<string>>();
    const perWorker = new Map<string, number>();
    let done = 0;
    /** `n` requests from `concurrency` clients; heartbeats every `every` finished requests. */
    const phase = async (n: number, record: boolean): Promise<void> => {
      let issued = 0;
      const client = async (): Promise<void> => {
        while (issued < n) {
          issued++;
          const adapter = targets[next()]!;
          let workerId: string | undefined;
          const res = await r.forward({
            path: '/v1/completions',
            body: { model: 'x', prompt: 'hi', max_tokens: 2, temperature: 0 },
            adapter,
            baseModel: BASE_MODEL,
            onUsage: (u) => (workerId = u.workerId),
          });
          const text = await res.text();
          if (res.status !== 200 || !workerId) throw new Error(`soak request failed: ${res.status} ${text}`);
          if (record) {
            (servedBy.get(adapter.id) ?? servedBy.set(adapter.id, new Set()).get(adapter.id)!).add(workerId);
            perWorker.set(workerId, (perWorker.get(workerId) ?? 0) + 1);
          }
          if (++done % every === 0) await pushHeartbeats();
        }
      };
      await Promise.all(Array.from({ length: concurrency }, client));
    };
    await pushHeartbeats();
    await phase(opts.settle ?? 200, false);
    const loadsBefore = await slotLoadsOf(running);
    const cpu0 = process.cpuUsage();
    await phase(total, true);
    const slotLoads = (await slotLoadsOf(running)) - loadsBefore;
    const spread = [...servedBy.values()].map((s) => s.size);
    return {
      mode: opts.mode,
      requests: total,
      slotLoads,
      loadsPerRequest: slotLoads / total,
      workersPerAdapter: spread.reduce((a, b) => a + b, 0) / spread.length,
      perWorker: beats.map((_, i) => perWorker.get(`wk_${i}`) ?? 0),
      cpuS: ((c) => (c.user + c.system) / 1e6)(process.cpuUsage(cpu0)),
    };
  } finally {
    router?.close();
    await Promise.all(running.map((w) => w.drain()));
    await registry.close();
    await db.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}
