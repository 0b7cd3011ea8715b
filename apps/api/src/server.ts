// Starts the API from a configuration: database (migrated), object store, app, HTTP server.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { createApp } from './app.js';
import type { ApiConfig } from './config.js';
import { openDatabase, type OpenDatabase } from './db/client.js';
import type { AdapterValidation } from './ports.js';
import type { App, Services } from './services.js';
import { DirStore } from './storage/dir-store.js';
import type { ObjectStore } from './storage/object-store.js';
import { S3Store } from './storage/s3-store.js';
import { GracefulHttp } from './graceful-http.js';
import { OrphanSweeper } from './uploads/sweeper.js';
import { createRouting, createValidation, type ClosableRouting, type RoutingObservers } from './wiring.js';
import { Tracing } from '@loraplex/telemetry';
import { ApiMetrics } from './metrics.js';

export interface ApiServer {
  url: string;
  app: App;
  services: Services;
  /** Removes what failed uploads left in the object store (runs at start and every sweep.intervalS). */
  sweeper: OrphanSweeper;
  /**
   * Graceful stop: drains HTTP (see graceful-http.ts) within `deadlineMs` (default: the
   * configured shutdownTimeoutS), then flushes usage and closes the database. Resolves true when
   * every request finished before the deadline.
   */
  close(deadlineMs?: number): Promise<boolean>;
}

export interface ApiServerWiring {
  validation?: AdapterValidation;
  routing?: (db: OpenDatabase['db'], config: ApiConfig, observers: RoutingObservers) => ClosableRouting;
  /** OpenTelemetry traces; default from the OTEL_* variables (off unless they name an exporter). */
  tracing?: Tracing;
}

export function openStore(config: ApiConfig): ObjectStore {
  if (config.s3) return S3Store.fromConfig(config.s3);
  // Part URLs of the embedded store are signed with the worker secret, or a per-process key.
  return new DirStore(config.dataDir, config.workerSecret ?? randomBytes(32).toString('hex'));
}

export async function startApiServer(config: ApiConfig, wiring: ApiServerWiring = {}): Promise<ApiServer> {
  const database = await openDatabase(
    config.databaseUrl ? { databaseUrl: config.databaseUrl } : { dataDir: join(config.dataDir, 'pg') },
  );
  let routing: ClosableRouting | undefined;
  const metrics = new ApiMetrics({ maxTenants: config.metricsMaxTenants ?? 100 });
  const tracing = wiring.tracing ?? Tracing.fromEnv('loraplex-api');
  try {
    routing = (wiring.routing ?? createRouting)(database.db, config, {
      onUpstreamError: (reason) => metrics.upstreamError(reason),
    });
    const { app, services } = createApp({
      db: database.db,
      store: openStore(config),
      config,
      validation: wiring.validation ?? createValidation(),
      routing,
      metrics,
      tracing,
    });
    const graceful = new GracefulHttp(app.fetch as never);
    const server: ServerType = await new Promise((resolve, reject) => {
      const s = serve({ fetch: graceful.fetch as never, port: config.port, hostname: config.host }, () => resolve(s));
      graceful.attach(s as HttpServer);
      s.once('error', reject);
    });
    const sweeper = new OrphanSweeper({
      db: database.db,
      store: services.store,
      uploads: services.uploads,
      graceMs: config.sweep.orphanGraceS * 1000,
    });
    sweeper.start(config.sweep.intervalS * 1000);
    const addr = server.address() as AddressInfo;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
    const r = routing;
    return {
      url,
      app,
      services,
      sweeper,
      close: async (deadlineMs = config.shutdownTimeoutS * 1000) => {
        const clean = await graceful.drain(deadlineMs);
        if (!clean) console.warn(`[api] requests still running after ${deadlineMs} ms were cut`);
        await sweeper.stop();
        await r.close();
        await database.close();
        if (!wiring.tracing) await tracing.shutdown(); // exports what is left; a tracing passed in is its owner's
        return clean;
      },
    };
  } catch (e) {
    await routing?.close().catch(() => undefined);
    await database.close();
    throw e;
  }
}
