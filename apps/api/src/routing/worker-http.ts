// The HTTP client from the router to workers: node:http with keep-alive connections rather than
// fetch, because it costs less per request (the API's added latency is what the benchmark
// measures), and it hands back exactly what the router needs: status, headers, and the body either
// whole (JSON answers) or as a web stream reader (SSE). Aborting the signal destroys the socket,
// which the worker takes as a client disconnect and cancels the sequences.
//
// Three timeouts keep a hung worker from hanging its clients: connect (TCP connection), first byte
// (the response head after the request is sent) and idle (no body bytes while the router waits for
// some). A long generation that keeps streaming is never idle; a slow client that does not read is
// not the worker's fault, so the idle clock runs only while a read is pending. A request that
// fails before its response arrived rejects `post`, so the router can try another worker.
//
// A keep-alive connection the worker closed as idle (its keepAliveTimeout) while this side handed it
// to a new request fails with ECONNRESET/EPIPE before the worker read anything (Node's documented
// keep-alive race): that rejects with StaleConnectionError, which says nothing about the worker's
// health, and the router sends the request again.
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';

export interface WorkerResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The whole body as text (rejects if the connection breaks or idles before the end). */
  text(): Promise<string>;
  /** The body as a web stream reader (reads reject if the connection breaks or a read idles). */
  reader(): ReadableStreamDefaultReader<Uint8Array>;
  /** Throws the body away (and the connection with it, if it is still streaming). */
  discard(): void;
}

export type WorkerPost = (url: string, headers: Record<string, string>, body: string, signal: AbortSignal) => Promise<WorkerResponse>;

export interface WorkerTimeouts {
  /** Opening the TCP connection (ms). */
  connectMs: number;
  /** From the request sent to the response head (ms): a non-streamed answer comes whole, so this bounds its generation. */
  firstByteMs: number;
  /** Longest wait for the next body bytes while the router is reading (ms). */
  idleMs: number;
}

export const DEFAULT_WORKER_TIMEOUTS: WorkerTimeouts = { connectMs: 5_000, firstByteMs: 300_000, idleMs: 60_000 };

/** A worker did not answer in time; `phase` names which timeout fired. */
export class WorkerTimeoutError extends Error {
  constructor(readonly phase: 'connect' | 'first_byte' | 'idle', ms: number) {
    super(`the worker did not ${phase === 'connect' ? 'accept the connection' : phase === 'first_byte' ? 'start answering' : 'send anything'} within ${ms} ms`);
    this.name = 'WorkerTimeoutError';
  }
}

/** A reused keep-alive connection was already closed by the worker: the request never reached it. */
export class StaleConnectionError extends Error {
  constructor(readonly cause: Error) {
    super(`the reused connection to the worker was closed (${cause.message})`);
    this.name = 'StaleConnectionError';
  }
}

const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE']);

export function workerHttpClient(opts: { maxSockets?: number; timeouts?: Partial<WorkerTimeouts> } = {}): { post: WorkerPost; close(): void } {
  const timeouts: WorkerTimeouts = { ...DEFAULT_WORKER_TIMEOUTS, ...opts.timeouts };
  const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 256, scheduling: 'lifo' as const };
  const http = new HttpAgent(agentOpts);
  const https = new HttpsAgent(agentOpts);

  const post: WorkerPost = (url, headers, body, signal) =>
    new Promise<WorkerResponse>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason ?? new Error('aborted'));
      const u = new URL(url);
      const isHttps = u.protocol === 'https:';
      const req = (isHttps ? httpsRequest : httpRequest)(u, {
        method: 'POST', agent: isHttps ? https : http,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      });
      const onAbort = (): void => {
        req.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const clearHeadTimer = headTimer(req, timeouts);
      // `on`, not `once`: a worker that answers before reading the whole body (its 413) and closes
      // makes the rest of the write fail (EPIPE) after the first error or the response; with no
      // listener left, that error would end the API process.
      let responded = false;
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearHeadTimer();
        signal.removeEventListener('abort', onAbort);
        const stale = !responded && !signal.aborted && req.reusedSocket && STALE_SOCKET_CODES.has(e.code ?? '');
        reject(stale ? new StaleConnectionError(e) : e);
      });
      req.once('response', (res: IncomingMessage) => {
        responded = true;
        clearHeadTimer();
        // The listener stays until the body ends: an abort mid-body must still reach the socket.
        res.once('close', () => signal.removeEventListener('abort', onAbort));
        resolve(wrap(res, timeouts.idleMs));
      });
      req.end(body);
    });

  return {
    post,
    close() {
      http.destroy();
      https.destroy();
    },
  };
}

/**
 * Runs the connect timer from when the agent hands the request a socket until it is connected (a
 * reused keep-alive socket already is), then the first-byte timer until the response head; returns
 * the function that stops both. Time spent queued in the agent for a free socket is this process's
 * own backlog, not the worker being slow to accept, so no timer blames the worker for it (the
 * client's signal still bounds it).
 */
function headTimer(req: ClientRequest, t: WorkerTimeouts): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const arm = (phase: 'connect' | 'first_byte', ms: number): void => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(() => req.destroy(new WorkerTimeoutError(phase, ms)), ms);
  };
  req.once('socket', (socket) => {
    if (socket.connecting) {
      arm('connect', t.connectMs);
      socket.once('connect', () => arm('first_byte', t.firstByteMs));
    } else arm('first_byte', t.firstByteMs);
  });
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function wrap(res: IncomingMessage, idleMs: number): WorkerResponse {
  const idle = (): NodeJS.Timeout => setTimeout(() => res.destroy(new WorkerTimeoutError('idle', idleMs)), idleMs);
  return {
    status: res.statusCode ?? 502,
    headers: res.headers,
    text: () =>
      new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let timer = idle();
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          clearTimeout(timer);
          timer = idle();
        });
        res.once('end', () => {
          clearTimeout(timer);
          resolve(Buffer.concat(chunks).toString('utf8'));
        });
        res.once('error', reject);
        res.once('close', () => {
          clearTimeout(timer);
          if (!res.complete) reject(res.errored ?? new Error('the worker closed the connection mid-answer'));
        });
      }),
    reader: () => idleReader((Readable.toWeb(res) as ReadableStream<Uint8Array>).getReader(), idle),
    discard: () => {
      if (res.complete) res.resume();
      else res.destroy();
    },
  };
}

/** The reader with the idle clock running during each read (the destroyed body rejects the read). */
function idleReader(inner: ReadableStreamDefaultReader<Uint8Array>, idle: () => NodeJS.Timeout): ReadableStreamDefaultReader<Uint8Array> {
  return {
    get closed() {
      return inner.closed;
    },
    read: async () => {
      const timer = idle();
      try {
        return await inner.read();
      } finally {
        clearTimeout(timer);
      }
    },
    cancel: (reason?: unknown) => inner.cancel(reason),
    releaseLock: () => inner.releaseLock(),
  } as ReadableStreamDefaultReader<Uint8Array>;
}
