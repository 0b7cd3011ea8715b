// The HTTP listener around a worker, with graceful drain: on SIGTERM/SIGINT (or drain()) the worker
// stops accepting (503 for new requests, /health 503), finishes what it accepted, closes the
// listener and the engine.
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { callerCredentials, createWorker, type Worker, type WorkerOptions } from './worker.js';

/** Whether a listen address is reachable only from this machine. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * A worker that anyone on the network could call must check who calls: binding to a non-loopback
 * address needs the worker secret (platform deployments) or an API key (standalone).
 */
export function assertSafeBind(host: string, opts: Pick<WorkerOptions, 'workerSecret' | 'apiKey'>): void {
  if (isLoopback(host)) return;
  const { workerSecret, apiKey } = callerCredentials(opts);
  if (workerSecret || apiKey) return;
  throw new Error(
    `refusing to listen on ${host} without authentication: anyone who can reach it could use this worker and list its adapters. ` +
      'Give --worker-secret (or LORAPLEX_WORKER_SECRET) when the loraplex API routes to it, or --api-key (or LORAPLEX_API_KEY / VLLM_API_KEY) for a standalone worker, ' +
      'or listen on a loopback address (the default, --host 127.0.0.1).',
  );
}

export interface RunningWorker {
  worker: Worker;
  server: ServerType;
  port: number;
  /** Drains and stops; resolves when the listener and the engine are closed. */
  drain(): Promise<void>;
}

export async function startWorker(opts: WorkerOptions & { port?: number; host?: string }): Promise<RunningWorker> {
  assertSafeBind(opts.host ?? '127.0.0.1', opts);
  const worker = await createWorker(opts);
  const { server, port } = await new Promise<{ server: ServerType; port: number }>((res, rej) => {
    const s = serve(
      { fetch: worker.app.fetch, port: opts.port ?? 8000, hostname: opts.host ?? '127.0.0.1' },
      (info: AddressInfo) => res({ server: s, port: info.port }),
    );
    s.once('error', rej);
  });
  const host = opts.host ?? '127.0.0.1';
  worker.heartbeat?.start(`http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`);
  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> => {
    draining ??= (async () => {
      await worker.shutdown();
      await new Promise<void>((res) => {
        server.close(() => res());
        (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      });
    })();
    return draining;
  };
  return { worker, server, port, drain };
}
