// One request with timeout, cancellation and retries: 429 and 503 (honouring Retry-After) and
// connection failures are retried with exponential backoff and jitter; everything else is not.
import {
  ConnectionError,
  errorFromResponse,
  LoraplexError,
  OverloadedError,
  RateLimitError,
  TimeoutError,
} from './errors.js';

export interface HttpOptions {
  baseURL: string;
  apiKey?: string;
  /** Milliseconds per attempt. Default 60 000. */
  timeout: number;
  /** Retries after the first attempt. Default 2. */
  maxRetries: number;
  fetch: typeof fetch;
  /** Base of the exponential backoff in ms (tests shorten it). Default 500. */
  backoffMs: number;
}

export interface RequestOptions {
  method?: string;
  path: string;
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  timeout?: number;
  /** Absolute URL (presigned part uploads): no base URL, no API key. */
  url?: string;
  /** Retries for this request (default: the client's). */
  maxRetries?: number;
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((res, rej) => {
    const t = setTimeout(res, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        rej(signal.reason);
      },
      { once: true },
    );
  });

function delayFor(attempt: number, err: LoraplexError, backoffMs: number): number {
  const retryAfter = err instanceof RateLimitError || err instanceof OverloadedError ? err.retryAfter : undefined;
  if (retryAfter !== undefined) return Math.min(retryAfter, 60) * 1000;
  return backoffMs * 2 ** attempt * (0.75 + Math.random() * 0.5);
}

const retriable = (e: LoraplexError): boolean =>
  e instanceof RateLimitError || e instanceof OverloadedError || e instanceof ConnectionError;

/** Sends a request; returns the (2xx) Response; throws a typed LoraplexError otherwise. */
export async function send(o: HttpOptions, r: RequestOptions): Promise<Response> {
  const retries = r.maxRetries ?? o.maxRetries;
  for (let attempt = 0; ; attempt++) {
    try {
      return await once(o, r);
    } catch (e) {
      const err = e as LoraplexError;
      // A streamed request body cannot be sent twice.
      const replayable = !(typeof ReadableStream !== 'undefined' && r.body instanceof ReadableStream);
      if (attempt >= retries || !retriable(err) || !replayable || r.signal?.aborted) throw err;
      await sleep(delayFor(attempt, err, o.backoffMs), r.signal);
    }
  }
}

async function once(o: HttpOptions, r: RequestOptions): Promise<Response> {
  let url = r.url ?? `${o.baseURL.replace(/\/+$/, '')}${r.path}`;
  if (r.query) {
    const q = Object.entries(r.query)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
    if (q.length) url += `?${q.join('&')}`;
  }
  const headers: Record<string, string> = { ...r.headers };
  if (o.apiKey && !r.url) headers.authorization = `Bearer ${o.apiKey}`;
  let body = r.body;
  if (r.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(r.json);
  }
  const timeoutMs = r.timeout ?? o.timeout;
  const timer = new AbortController();
  const t = setTimeout(() => timer.abort(new TimeoutError(`the request took longer than ${timeoutMs} ms`)), timeoutMs);
  // The timer alone must never keep a process alive: a response nobody reads to the end (a part
  // upload's empty body) would otherwise hold a finished program for the whole timeout. The open
  // request itself keeps the event loop busy while it matters.
  (t as { unref?: () => void }).unref?.();
  const signal = r.signal ? AbortSignal.any([r.signal, timer.signal]) : timer.signal;
  let res: Response;
  try {
    const init: RequestInit & { duplex?: 'half' } = {
      method: r.method ?? (body === undefined ? 'GET' : 'POST'),
      headers,
      signal,
    };
    if (body !== undefined) init.body = body;
    if (typeof ReadableStream !== 'undefined' && body instanceof ReadableStream) init.duplex = 'half';
    res = await o.fetch(url, init);
  } catch (e) {
    clearTimeout(t);
    if (timer.signal.aborted && !r.signal?.aborted) throw timer.signal.reason as TimeoutError;
    if (r.signal?.aborted) throw r.signal.reason ?? e;
    throw new ConnectionError(
      `cannot reach ${url}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`,
    );
  }
  // The timeout covers the whole exchange of a non-streaming call; a stream clears it on its own.
  (res as Response & { clearTimeout?: () => void }).clearTimeout = () => clearTimeout(t);
  if (res.ok) return res;
  clearTimeout(t);
  const text = await res.text().catch(() => '');
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: the raw text is the message
  }
  throw errorFromResponse(res.status, parsed, res.headers);
}

/** Ends an exchange whose body is not needed (a part upload's answer): frees its timer and connection. */
export async function discard(res: Response): Promise<void> {
  (res as Response & { clearTimeout?: () => void }).clearTimeout?.();
  await res.body?.cancel().catch(() => undefined);
}

/** The JSON body of a successful response. */
export async function json<T>(res: Response): Promise<T> {
  try {
    return (await res.json()) as T;
  } finally {
    (res as Response & { clearTimeout?: () => void }).clearTimeout?.();
  }
}
