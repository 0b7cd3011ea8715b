// The HTTP client from the router to workers: node:http with keep-alive connections rather than
// fetch, because it costs less per request (the API's added latency is what the benchmark
// measures), and it hands back exactly what the router needs: status, headers, and the body either
// whole (JSON answers) or as a web stream reader (SSE). Aborting the signal destroys the socket,
// which the worker takes as a client disconnect and cancels the sequences.
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';

export interface WorkerResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The whole body as text (rejects if the connection breaks before the end). */
  text(): Promise<string>;
  /** The body as a web stream reader (reads reject if the connection breaks). */
  reader(): ReadableStreamDefaultReader<Uint8Array>;
  /** Throws the body away (and the connection with it, if it is still streaming). */
  discard(): void;
}

export type WorkerPost = (url: string, headers: Record<string, string>, body: string, signal: AbortSignal) => Promise<WorkerResponse>;

export function workerHttpClient(opts: { maxSockets?: number } = {}): { post: WorkerPost; close(): void } {
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
      // `on`, not `once`: a worker that answers before reading the whole body (its 413) and closes
      // makes the rest of the write fail (EPIPE) after the first error or the response; with no
      // listener left, that error would end the API process.
      req.on('error', (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      });
      req.once('response', (res: IncomingMessage) => {
        // The listener stays until the body ends: an abort mid-body must still reach the socket.
        res.once('close', () => signal.removeEventListener('abort', onAbort));
        resolve(wrap(res));
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

function wrap(res: IncomingMessage): WorkerResponse {
  return {
    status: res.statusCode ?? 502,
    headers: res.headers,
    text: () =>
      new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.once('error', reject);
        res.once('close', () => {
          if (!res.complete) reject(new Error('the worker closed the connection mid-answer'));
        });
      }),
    reader: () => (Readable.toWeb(res) as ReadableStream<Uint8Array>).getReader(),
    discard: () => {
      if (res.complete) res.resume();
      else res.destroy();
    },
  };
}
