// App composition of the two modules beside the routes (contract §5): adapter validation and the
// worker side (registry, router, usage recorder, tenant limits). Tests may pass other wiring to
// startApiServer; production uses these.
import { extractArchive, validateAdapterFiles } from './adapter-validation/index.js';
import type { ApiConfig } from './config.js';
import type { Db } from './db/client.js';
import type { AdapterValidation, RoutingPorts } from './ports.js';
import { Router, TenantLimits, UsageRecorder, WorkerRegistry } from './worker-proxy/index.js';
import type { UpstreamError } from './worker-proxy/router.js';

export interface ClosableRouting extends RoutingPorts {
  /** Flushes usage and stops timers. */
  close(): Promise<void>;
}

/** What app composition observes of the routing module (metrics). */
export interface RoutingObservers {
  onUpstreamError?: (reason: UpstreamError, workerId: string) => void;
}

export function createValidation(): AdapterValidation {
  return {
    extractArchive: (input, format, destDir, limits) =>
      extractArchive(input, format, destDir, { ...limits, maxArchiveBytes: Number.MAX_SAFE_INTEGER }),
    validateAdapterFiles,
  };
}

export function createRouting(db: Db, config: ApiConfig, observers: RoutingObservers = {}): ClosableRouting {
  if (!config.workerSecret)
    throw new Error(
      'LORAPLEX_WORKER_SECRET is required: it authenticates worker heartbeats and signs adapter descriptors',
    );
  const registry = new WorkerRegistry(db, { staleAfterMs: 6000 });
  const usage = new UsageRecorder(db, { flushMs: 1000, maxBatch: 500 });
  const router = new Router(registry, {
    secret: config.workerSecret,
    descriptorTtlS: config.descriptorTtlS,
    timeouts: config.workerTimeouts,
    ...(observers.onUpstreamError ? { onUpstreamError: observers.onUpstreamError } : {}),
  });
  return {
    registry,
    usage,
    router,
    limits: new TenantLimits(config.limits),
    close: async () => {
      await usage.close();
      registry.close();
      router.close();
    },
  };
}
