// The HTTP listener around a worker, with graceful drain: on SIGTERM/SIGINT (or drain()) the worker
// stops accepting (503 for new requests, /health 503), finishes what it accepted, closes the
// listener and the engine.
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { createWorker, type Worker, type WorkerOptions } from './worker.js';

export interface RunningWorker {
  worker: Worker;
  server: ServerType;
  port: number;
  /** Drains and stops; resolves when the listener and the engine are closed. */
  drain(): Promise<void>;
}

export async function startWorker(opts: WorkerOptions & { port?: number; host?: string }): Promise<RunningWorker> {
  const worker = await createWorker(opts);
  const { server, port } = await new Promise<{ server: ServerType; port: number }>((res, rej) => {
    const s = serve({ fetch: worker.app.fetch, port: opts.port ?? 8000, hostname: opts.host ?? '127.0.0.1' }, (info: AddressInfo) => res({ server: s, port: info.port }));
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
