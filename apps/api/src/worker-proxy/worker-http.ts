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
import {
  Agent as HttpAgent,
  request as httpRequest,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { once } from 'node:events';
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

export type WorkerPost = (
  url: string,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal,
) => Promise<WorkerResponse>;

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
  constructor(
    readonly phase: 'connect' | 'first_byte' | 'idle',
    ms: number,
  ) {
    super(
      `the worker did not ${phase === 'connect' ? 'accept the connection' : phase === 'first_byte' ? 'start answering' : 'send anything'} within ${ms} ms`,
    );
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

export function workerHttpClient(opts: { maxSockets?: number; timeouts?: Partial<WorkerTimeouts> } = {}): {
  post: WorkerPost;
  close(): void;
} {
  const timeouts: WorkerTimeouts = { ...DEFAULT_WORKER_TIMEOUTS, ...opts.timeouts };
  const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 256, scheduling: 'lifo' as const };
  const http = new HttpAgent(agentOpts);
  const https = new HttpsAgent(agentOpts);

  // One request is one timer and a few listeners; no per-phase helper objects.
  async function post(
    url: string,
    headers: Record<string, string>,
    body: string,
    signal: AbortSignal,
  ): Promise<WorkerResponse> {
    if (signal.aborted) throw signal.reason ?? new Error('aborted');
    const u = new URL(url);
    const isHttps = u.protocol === 'https:';
    const req = (isHttps ? httpsRequest : httpRequest)(u, {
      method: 'POST',
      agent: isHttps ? https : http,
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    });
    const onAbort = (): void => {
      req.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // A worker that answers before reading the whole body (its 413) and closes makes the rest of the
    // write fail (EPIPE) after the first error or the response; with no listener left, that error
    // would end the API process. This listener stays for the request's life.
    req.on('error', ignoreError);
    // The connect timer runs from when the agent hands the request a socket until it is connected (a
    // reused keep-alive socket already is), then the first-byte timer until the response head. Time
    // spent queued in the agent for a free socket is this process's own backlog, not the worker being
    // slow to accept, so no timer blames the worker for it (the client's signal still bounds it).
    let headTimer: NodeJS.Timeout | undefined;
    let settled = false;
    req.once('socket', (socket) => {
      if (settled) return;
      if (!socket.connecting) {
        headTimer = setTimeout(expireHead, timeouts.firstByteMs, req, 'first_byte', timeouts.firstByteMs);
        return;
      }
      headTimer = setTimeout(expireHead, timeouts.connectMs, req, 'connect', timeouts.connectMs);
      socket.once('connect', () => {
        clearTimeout(headTimer);
        if (!settled) headTimer = setTimeout(expireHead, timeouts.firstByteMs, req, 'first_byte', timeouts.firstByteMs);
      });
    });
    req.end(body);
    try {
      const [res] = (await once(req, 'response')) as [IncomingMessage];
      return new WorkerAnswer(res.statusCode ?? 502, res.headers, res, timeouts.idleMs, signal, onAbort);
    } catch (err) {
      signal.removeEventListener('abort', onAbort);
      const e = err as NodeJS.ErrnoException;
      const stale = !signal.aborted && req.reusedSocket && STALE_SOCKET_CODES.has(e.code ?? '');
      throw stale ? new StaleConnectionError(e) : e;
    } finally {
      settled = true;
      clearTimeout(headTimer);
    }
  }

  return {
    post,
    close() {
      http.destroy();
      https.destroy();
    },
  };
}

function ignoreError(): void {}

function expireHead(req: ClientRequest, phase: 'connect' | 'first_byte', ms: number): void {
  req.destroy(new WorkerTimeoutError(phase, ms));
}

function expireIdle(res: IncomingMessage, ms: number): void {
  res.destroy(new WorkerTimeoutError('idle', ms));
}

/**
 * The response: the client's abort listener stays until the body is read, thrown away or closed
 * (an abort mid-body must still reach the socket).
 */
class WorkerAnswer implements WorkerResponse {
  constructor(
    readonly status: number,
    readonly headers: IncomingHttpHeaders,
    private readonly res: IncomingMessage,
    private readonly idleMs: number,
    private readonly signal: AbortSignal,
    private readonly onAbort: () => void,
  ) {}

  /** One idle timer, pushed back by every chunk (a destroyed body ends the loop with its error). */
  async text(): Promise<string> {
    const res = this.res;
    const chunks: Buffer[] = [];
    const timer = setTimeout(expireIdle, this.idleMs, res, this.idleMs);
    try {
      for await (const chunk of res) {
        chunks.push(chunk as Buffer);
        timer.refresh();
      }
    } finally {
      clearTimeout(timer);
      this.signal.removeEventListener('abort', this.onAbort);
    }
    if (!res.complete) throw res.errored ?? new Error('the worker closed the connection mid-answer');
    return Buffer.concat(chunks).toString('utf8');
  }

  reader(): ReadableStreamDefaultReader<Uint8Array> {
    const { res, idleMs, signal, onAbort } = this;
    res.once('close', () => signal.removeEventListener('abort', onAbort));
    const idle = (): NodeJS.Timeout => setTimeout(expireIdle, idleMs, res, idleMs);
    return idleReader((Readable.toWeb(res) as ReadableStream<Uint8Array>).getReader(), idle);
  }

  discard(): void {
    this.signal.removeEventListener('abort', this.onAbort);
    if (this.res.complete) this.res.resume();
    else this.res.destroy();
  }
}

/** The reader with the idle clock running during each read (the destroyed body rejects the read). */
function idleReader(
  inner: ReadableStreamDefaultReader<Uint8Array>,
  idle: () => NodeJS.Timeout,
): ReadableStreamDefaultReader<Uint8Array> {
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
