// The embedded single-machine stack (contract §4): the API on the embedded defaults plus one worker
// child process, resolving once the worker's first heartbeat arrived.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { configFromEnv, type ApiConfig, type S3Config } from './config.js';
import type { Db } from './db/client.js';
import type { RoutingPorts } from './ports.js';
import { startApiServer, type ApiServerWiring } from './server.js';
import { createRouting, type ClosableRouting } from './wiring.js';

export interface StackOptions {
  /**
   * The API's settings (upload, tenant limits, TTLs, timeouts...), as `loraplex-api serve` reads
   * them; default: from the environment. The options below override their parts of it.
   */
  config?: ApiConfig;
  /** The base model directory the worker serves. */
  model: string;
  servedModelName?: string;
  dataDir?: string;
  port?: number;
  host?: string;
  /** Default: the API port + 1. */
  workerPort?: number;
  databaseUrl?: string;
  s3?: S3Config;
  /**
   * The worker CLI to run (the built @loraplex/worker's dist/cli.js; default: $LORAPLEX_WORKER_CLI).
   * The API does not depend on the worker package, so its caller (the `loraplex` CLI) says where it is.
   */
  workerCli?: string;
  /** Extra worker flags (e.g. ['--backend', 'cpu']). */
  workerArgs?: string[];
  /** How long to wait for the worker's first heartbeat. */
  startTimeoutMs?: number;
  /**
   * The first delay before restarting a worker that exited unexpectedly; it doubles per restart up to
   * `restartBackoffMaxMs` (default 500 ms, cap 30 s) and resets once a worker has stayed up `restartResetMs` (60 s).
   */
  restartBackoffMs?: number;
  restartBackoffMaxMs?: number;
  restartResetMs?: number;
  /** Where the admin key line goes (default: stdout). Set to null to print nothing. */
  log?: ((line: string) => void) | null;
  /** Replaces the real modules (tests). */
  wiring?: ApiServerWiring;
}

export interface Stack {
  url: string;
  adminKey: string;
  workerUrl: string;
  /** The current worker child process's id (e.g. for a benchmark sampling its memory); changes on a restart. */
  readonly workerPid: number | undefined;
  /** The API's database (e.g. for a benchmark counting usage rows by status). */
  db: Db;
  /** Stops the API gracefully, then the worker; true when no request had to be cut. */
  close(): Promise<boolean>;
}

/** The worker CLI a stack runs: the option, else $LORAPLEX_WORKER_CLI; an error when neither names one. */
export function workerCliPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const cli = option ?? env.LORAPLEX_WORKER_CLI;
  if (!cli)
    throw new Error(
      "the stack needs the worker's CLI: --worker-cli PATH (the built @loraplex/worker's dist/cli.js) or LORAPLEX_WORKER_CLI",
    );
  return cli;
}

/** Wraps the routing ports so the stack learns of the worker's first heartbeat. */
function watchHeartbeats(
  make: NonNullable<ApiServerWiring['routing']>,
  onFirst: () => void,
): NonNullable<ApiServerWiring['routing']> {
  return (db, config, observers) => {
    const r: ClosableRouting = make(db, config, observers);
    const registry: RoutingPorts['registry'] = {
      heartbeat: async (body) => {
        const out = await r.registry.heartbeat(body);
        onFirst();
        return out;
      },
      baseModels: () => r.registry.baseModels(),
      ...(r.registry.servedBaseModels ? { servedBaseModels: () => r.registry.servedBaseModels!() } : {}),
    };
    return { ...r, registry };
  };
}

interface WorkerChild {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last 4000 characters of its stderr (for a start failure's message). */
  stderrTail(): string;
}

function spawnWorker(args: string[]): WorkerChild {
  // The IPC channel is the worker's lifeline: it drains and exits when this process dies, even by SIGKILL.
  const child: ChildProcess = spawn(process.execPath, args, {
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    env: process.env,
  });
  let tail = '';
  child.stderr?.on('data', (d: Buffer) => {
    process.stderr.write(d);
    tail = (tail + d.toString()).slice(-4000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal })),
  );
  return { child, exited, stderrTail: () => tail };
}

/**
 * The admin key kept in <dataDir>/admin-key (mode 600), created on first use, so that restarting
 * `loraplex dev` on the same data dir keeps the key a user already copied (like demo.json's tenant key).
 */
export async function storedAdminKey(dataDir: string): Promise<{ key: string; file: string }> {
  const file = join(dataDir, 'admin-key');
  try {
    const key = (await readFile(file, 'utf8')).trim();
    if (key) return { key, file };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const key = `lpx_admin_${randomBytes(24).toString('hex')}`;
  await mkdir(dataDir, { recursive: true });
  await writeFile(file, `${key}\n`, { mode: 0o600 });
  return { key, file };
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const workerCli = workerCliPath(opts.workerCli);
  const log = opts.log === undefined ? (l: string) => process.stdout.write(`${l}\n`) : opts.log;
  const base = opts.config ?? configFromEnv(process.env);
  const port = opts.port ?? base.port;
  const workerSecret = base.workerSecret ?? randomBytes(24).toString('hex');
  const configuredKey = base.adminKey;
  const dataDir = resolve(opts.dataDir ?? base.dataDir);
  let stored: { key: string; file: string } | undefined;
  const adminKey = configuredKey ?? (stored = await storedAdminKey(dataDir)).key;
  const config: ApiConfig = {
    ...base,
    dataDir,
    port,
    host: opts.host ?? base.host,
    workerSecret,
    adminKey,
    ...(opts.databaseUrl ? { databaseUrl: opts.databaseUrl } : {}),
    ...(opts.s3 ? { s3: opts.s3 } : {}),
  };

  let firstHeartbeat!: () => void;
  const heartbeat = new Promise<void>((res) => (firstHeartbeat = res));
  const api = await startApiServer(config, {
    ...opts.wiring,
    routing: watchHeartbeats(opts.wiring?.routing ?? createRouting, () => firstHeartbeat()),
  });

  const workerPort = opts.workerPort ?? (new URL(api.url).port ? Number(new URL(api.url).port) + 1 : port + 1);
  const workerHost = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  const workerUrl = `http://${workerHost}:${workerPort}`;
  const args = [
    workerCli,
    '--model',
    resolve(opts.model),
    '--served-model-name',
    opts.servedModelName ?? basename(resolve(opts.model)),
    '--host',
    workerHost,
    '--port',
    String(workerPort),
    '--api-url',
    api.url,
    '--worker-secret',
    workerSecret,
    '--advertise-url',
    workerUrl,
    ...(opts.workerArgs ?? []),
  ];
  let current = spawnWorker(args);
  // Supervision (after the first heartbeat): an unexpected exit restarts the worker with the same args,
  // so the API's admin key and worker secret stay valid; close() ends it.
  let closing = false;
  let restartTimer: NodeJS.Timeout | undefined;
  const initialBackoff = opts.restartBackoffMs ?? 500;
  let backoff = initialBackoff;
  const supervise = (w: WorkerChild): void => {
    const startedAt = Date.now();
    void w.exited.then(({ code, signal }) => {
      if (closing) return;
      if (Date.now() - startedAt >= (opts.restartResetMs ?? 60_000)) backoff = initialBackoff;
      const delay = backoff;
      backoff = Math.min(backoff * 2, opts.restartBackoffMaxMs ?? 30_000);
      log?.(`[stack] worker exited (code ${code} / signal ${signal}); restarting in ${delay} ms`);
      restartTimer = setTimeout(() => {
        restartTimer = undefined;
        if (closing) return;
        current = spawnWorker(args);
        supervise(current);
      }, delay);
    });
  };

  const stopWorker = async (): Promise<void> => {
    closing = true;
    clearTimeout(restartTimer);
    const { child, exited } = current;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
  };

  const timeoutMs = opts.startTimeoutMs ?? 180_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      heartbeat,
      current.exited.then(({ code }) => {
        throw new Error(`the worker exited (code ${code}) before its first heartbeat:\n${current.stderrTail()}`);
      }),
      new Promise<never>(
        (_, rej) =>
          (timer = setTimeout(
            () => rej(new Error(`no heartbeat from the worker within ${timeoutMs} ms:\n${current.stderrTail()}`)),
            timeoutMs,
          )),
      ),
    ]);
  } catch (e) {
    await stopWorker();
    await api.close();
    throw e;
  } finally {
    clearTimeout(timer);
  }

  supervise(current);

  log?.(`loraplex API: ${api.url}  (docs: ${api.url}/docs)`);
  if (stored) log?.(`admin key (kept in ${stored.file}): ${adminKey}`);
  return {
    url: api.url,
    adminKey,
    workerUrl,
    get workerPid() {
      return current.child.pid;
    },
    db: api.services.db,
    // The API drains first (its in-flight requests need the worker), then the worker.
    close: async () => {
      try {
        return await api.close();
      } finally {
        await stopWorker();
      }
    },
  };
}
