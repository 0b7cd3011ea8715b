// A Router over a PGlite registry behind the minimal HTTP front, and real workers started and
// registered for it: the set-up the fault and timeout tests share.
import { WorkerRegistry } from '../../src/worker-proxy/registry.js';
import { Router, type RouterOptions } from '../../src/worker-proxy/router.js';
import { adapterId, serveRouter, type RoutingServer } from './routing-app.js';
import { openPgliteTestDb, type TestDb } from './routing-db.js';
import { BASE_MODEL, heartbeatFor, startWorker, WORKER_SECRET, type WorkerProcess } from './routing-workers.js';

export interface RoutingHarness {
  registry: WorkerRegistry;
  router: Router;
  api: RoutingServer;
  /** Workers started by the test: stopWorkers() resumes (SIGCONT) and kills them by PID. */
  running: WorkerProcess[];
  /** Two fresh workers, registered; returned in the router's order for `adapter`. */
  twoWorkers(tag: string, adapter: string): Promise<[WorkerProcess, WorkerProcess]>;
  stopWorkers(): Promise<void>;
  close(): Promise<void>;
}

export async function startRoutingHarness(opts: Omit<RouterOptions, 'secret'> = {}): Promise<RoutingHarness> {
  const t: TestDb = await openPgliteTestDb();
  const registry = new WorkerRegistry(t.db, { staleAfterMs: 600_000 });
  const router = new Router(registry, { secret: WORKER_SECRET, ...opts });
  const api = await serveRouter(router);
  const h: RoutingHarness = {
    registry,
    router,
    api,
    running: [],
    async twoWorkers(tag, adapter) {
      h.running = await Promise.all([startWorker(`wk_${tag}_1`), startWorker(`wk_${tag}_2`)]);
      for (const w of h.running) await registry.heartbeat(heartbeatFor(w.id, w.url));
      const first = router.order(BASE_MODEL, adapterId(adapter))[0]!.id;
      const [a, b] = h.running as [WorkerProcess, WorkerProcess];
      return a.id === first ? [a, b] : [b, a];
    },
    async stopWorkers() {
      for (const w of h.running) w.child.kill('SIGCONT');
      await Promise.all(h.running.map((w) => w.kill('SIGKILL')));
      h.running = [];
    },
    async close() {
      await h.stopWorkers();
      await api.close();
      router.close();
      await registry.close();
      await t.close();
    },
  };
  return h;
}
