// Forwards an inference request to a worker for its base model: rendezvous order on the adapter id
// preferring workers that hold it in a slot (least loaded for the base model), the request
// signature and the signed adapter descriptor in headers, fallback to the next worker while nothing
// has reached the client yet, the worker's answer streamed through, the worker request aborted when
// the client goes away, and usage reported once per request.
import type { IncomingHttpHeaders } from 'node:http';
import { SIGNATURE_HEADER, signRequest } from '@loraplex/protocol';
import { activeTracing, injectTraceHeaders, inSpan, SpanKind, type Span } from '@loraplex/telemetry';
import { DESCRIPTOR_HEADER, DescriptorSigner, type AdapterTarget } from './descriptor.js';
import type { WorkerRecord, WorkerRegistry } from './registry.js';
import { leastLoaded, pickWorkers, preferResident } from './rendezvous.js';
import { relaySse } from './sse-relay.js';
import {
  StaleConnectionError,
  workerHttpClient,
  type WorkerPost,
  type WorkerResponse,
  type WorkerTimeouts,
} from './worker-http.js';
import { prepareRequest, usageOfBody, type PreparedRequest } from './wire.js';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  latencyMs: number;
  /** The status the client saw; 499 when the client went away, 502 when the worker failed mid-answer. */
  status: number;
  /** The worker that answered (undefined when none did). */
  workerId?: string;
}

export interface ForwardRequest {
  /** The worker route: /v1/completions, /v1/chat/completions, /generate, /generate_stream or /. */
  path: string;
  /** The client's parsed JSON body (not modified). */
  body: Record<string, unknown>;
  /** The model name the client asked for, when `body` was already rewritten (answers name it again). */
  requestedModel?: string;
  /** The worker's body already built from `body` (prepareRequest, e.g. with the worker's schema checked); built here when absent. */
  prepared?: PreparedRequest;
  /** The tenant adapter, when the request names one; absent for the base model. */
  adapter?: AdapterTarget;
  baseModel: string;
  /** The client request's signal: aborting it aborts the worker request. */
  signal?: AbortSignal;
  /** Called exactly once, when the response has ended (after the last byte of a stream). */
  onUsage?: (u: Usage) => void;
}

/**
 * Why a worker attempt failed: unreachable (no connection or the request could not be sent),
 * refused (429/503: full or draining), failed (the answer broke before anything reached the
 * client), broken (a stream cut after the client got part of it).
 */
export type UpstreamError = 'unreachable' | 'refused' | 'failed' | 'broken';

export interface RouterOptions {
  /** LORAPLEX_WORKER_SECRET, shared with the workers. */
  secret: string;
  /** Descriptor lifetime; the worker accepts `exp` + 60 s of skew. */
  descriptorTtlS?: number;
  /** Workers tried per request before answering 503 (default 3). */
  maxAttempts?: number;
  /** Retry-After of the 503 when no worker could take the request. */
  retryAfterS?: number;
  /** The HTTP client to workers (default: node:http with keep-alive connections). */
  post?: WorkerPost;
  /** Timeouts of the default client (connect, first byte, idle); a request not started in time goes to the next worker. */
  timeouts?: Partial<WorkerTimeouts>;
  /** Called for every failed worker attempt (metrics). */
  onUpstreamError?: (reason: UpstreamError, workerId: string) => void;
}

/** Response headers that describe one hop, or a body the router may have changed. */
const HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'date',
  'server',
  'upgrade',
  'proxy-connection',
  'te',
  'trailer',
]);

function passHeaders(from: IncomingHttpHeaders): Record<string, string> {
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(from))
    if (v !== undefined && !HOP_HEADERS.has(k)) h[k] = Array.isArray(v) ? v.join(', ') : v;
  return h;
}

const header = (h: IncomingHttpHeaders, name: string): string | undefined => {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
};

function apiError(
  status: number,
  type: string,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ error: { message, type, code } }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

class ClientGone extends Error {}

/** Sends on closed keep-alive connections retried per attempt (each drops one dead socket). */
const MAX_STALE_RESENDS = 4;

/** Adapters whose last worker the router remembers (cleared when full: it is only a hint). */
const MAX_LAST_SENT = 100_000;

export class Router {
  private readonly signer: DescriptorSigner;
  private readonly secret: string;
  private readonly maxAttempts: number;
  private readonly retryAfterS: number;
  private readonly post: WorkerPost;
  private readonly closeClient: () => void;
  private readonly onUpstreamError: (reason: UpstreamError, workerId: string) => void;
  private readonly inFlight = new Map<string, number>();
  /** Per adapter: the worker this instance last sent it to, and when (performance.now()). */
  private readonly lastSent = new Map<string, { workerId: string; atMs: number }>();

  constructor(
    private readonly registry: WorkerRegistry,
    opts: RouterOptions,
  ) {
    this.signer = new DescriptorSigner(opts.secret, opts.descriptorTtlS ?? 300);
    this.secret = opts.secret;

    this.maxAttempts = opts.maxAttempts ?? 3;
    this.retryAfterS = opts.retryAfterS ?? 2;
    this.onUpstreamError = opts.onUpstreamError ?? (() => undefined);
    if (opts.post) {
      this.post = opts.post;
      this.closeClient = () => undefined;
    } else {
      const client = workerHttpClient(opts.timeouts ? { timeouts: opts.timeouts } : {});
      this.post = client.post;
      this.closeClient = () => client.close();
    }
  }

  /** Closes the idle keep-alive connections to workers. */
  close(): void {
    this.closeClient();
  }

  /** Requests this router has in flight to a worker. */
  inFlightTo(workerId: string): number {
    return this.inFlight.get(workerId) ?? 0;
  }

  /** The workers to try, best first. */
  order(baseModel: string, adapterId: string | undefined): WorkerRecord[] {
    const healthy = this.registry.healthy(baseModel);
    if (healthy.length < 2) return healthy; // nothing to order (a single worker, or none)
    const inFlight = (id: string): number => this.inFlightTo(id);
    if (adapterId === undefined) return leastLoaded(healthy, inFlight);
    const last = this.lastSent.get(adapterId);
    // Between heartbeats, the worker we last sent the adapter to holds it in a slot: without this,
    // every request until the next heartbeat could load it on another worker as well.
    const sentSinceHeartbeat = (workerId: string): boolean =>
      last !== undefined &&
      last.workerId === workerId &&
      last.atMs >= (healthy.find((w) => w.id === workerId)?.seenAtMs ?? Infinity);
    return preferResident(pickWorkers(healthy, adapterId), adapterId, { inFlight, sentSinceHeartbeat });
  }

  /**
   * Forwards in a `route` span when the request is traced, each worker attempt in a client span of
   * its own; untraced, no span layer at all.
   */
  forward(req: ForwardRequest): Promise<Response> {
    if (!activeTracing()) return this.route(req, false);
    return inSpan('route', () => this.route(req, true), {
      attributes: { 'loraplex.base_model': req.baseModel, 'loraplex.adapter': req.adapter?.id ?? '' },
    });
  }

  private async route(req: ForwardRequest, traced: boolean): Promise<Response> {
    const t0 = performance.now();
    let reported = false;
    const report = (u: Omit<Usage, 'latencyMs'>): void => {
      if (reported) return;
      reported = true;
      try {
        req.onUsage?.({ ...u, latencyMs: performance.now() - t0 });
      } catch (e) {
        console.error('[router] onUsage failed:', e);
      }
    };
    if (req.adapter && req.adapter.baseModel !== req.baseModel)
      throw new Error(`adapter ${req.adapter.id} is for ${req.adapter.baseModel}, not ${req.baseModel}`);
    const prep = req.prepared ?? prepareRequest(req.path, req.body, req.adapter?.id, req.baseModel, req.requestedModel);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (req.adapter) headers[DESCRIPTOR_HEADER] = this.signer.header(req.adapter);
    const candidates = this.order(req.baseModel, req.adapter?.id).slice(0, this.maxAttempts);

    for (const worker of candidates) {
      if (req.signal?.aborted) break;
      try {
        const res = traced
          ? await this.tracedAttempt(worker, req, prep, headers, report)
          : await this.attempt(worker, req, prep, headers, report, false);
        if (res) return res;
      } catch (e) {
        if (e instanceof ClientGone) break;
        throw e;
      }
    }
    if (req.signal?.aborted) {
      report({ promptTokens: 0, completionTokens: 0, status: 499 });
      return apiError(499, 'server_error', 'client_closed_request', 'the client closed the request');
    }
    report({ promptTokens: 0, completionTokens: 0, status: 503 });
    const why =
      candidates.length === 0
        ? `no healthy worker serves ${req.baseModel}`
        : `no worker for ${req.baseModel} could take the request`;
    return apiError(503, 'overloaded_error', 'no_healthy_worker', `${why}; retry later`, {
      'retry-after': String(this.retryAfterS),
    });
  }

  private tracedAttempt(
    worker: WorkerRecord,
    req: ForwardRequest,
    prep: PreparedRequest,
    headers: Record<string, string>,
    report: (u: Omit<Usage, 'latencyMs'>) => void,
  ): Promise<Response | undefined> {
    return inSpan(
      'worker.request',
      async (span: Span | undefined) => {
        const r = await this.attempt(worker, req, prep, headers, report, true);
        span?.setAttribute('http.response.status_code', r?.status ?? 0); // 0: not answered, next worker
        return r;
      },
      { kind: SpanKind.CLIENT, attributes: { 'loraplex.worker': worker.id, 'url.full': `${worker.url}${req.path}` } },
    );
  }

  /**
   * One worker: the response to hand the client, or undefined to try the next worker (it could
   * not be reached, refused the work with 429/503, or failed before anything was sent on).
   */
  private async attempt(
    worker: WorkerRecord,
    req: ForwardRequest,
    prep: PreparedRequest,
    headers: Record<string, string>,
    report: (u: Omit<Usage, 'latencyMs'>) => void,
    traced: boolean,
  ): Promise<Response | undefined> {
    const ctrl = new AbortController();
    const onClientAbort = (): void => ctrl.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onClientAbort, { once: true });
    this.inFlight.set(worker.id, this.inFlightTo(worker.id) + 1);
    if (req.adapter) {
      if (this.lastSent.size >= MAX_LAST_SENT) this.lastSent.clear();
      this.lastSent.set(req.adapter.id, { workerId: worker.id, atMs: performance.now() });
    }
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      req.signal?.removeEventListener('abort', onClientAbort);
      const n = this.inFlightTo(worker.id) - 1;
      if (n > 0) this.inFlight.set(worker.id, n);
      else this.inFlight.delete(worker.id);
    };
    const failed = (reason: UpstreamError): undefined => {
      release();
      if (req.signal?.aborted) throw new ClientGone();
      this.onUpstreamError(reason, worker.id);
      this.registry.reportFailure(worker.id);
      return undefined;
    };

    let res: WorkerResponse | undefined;
    // A keep-alive connection the worker had just closed as idle never delivered the request: send
    // it again (the agent drops the dead socket) without counting it against the worker, which
    // would leave a live worker out of routing until its next heartbeat.
    for (let stale = 0; res === undefined; stale++) {
      try {
        // Workers trust only the platform (contract §1a): each send carries its own signature
        // (a fresh nonce, so a retry is not refused as a replay). The signature covers the method,
        // path and body only, so the trace context header (traceparent) rides beside it.
        const signed = { ...headers, [SIGNATURE_HEADER]: signRequest(this.secret, 'POST', req.path, prep.json) };
        if (traced) injectTraceHeaders(signed);
        res = await this.post(`${worker.url}${req.path}`, signed, prep.json, ctrl.signal);
      } catch (e) {
        if (e instanceof StaleConnectionError && stale < MAX_STALE_RESENDS && !ctrl.signal.aborted) continue;
        return failed('unreachable');
      }
    }
    if (res.status === 503 || res.status === 429) {
      // Draining or full: the worker did not take the request, another may.
      res.discard();
      release();
      this.onUpstreamError('refused', worker.id);
      return undefined;
    }
    const ok = res.status >= 200 && res.status < 300;
    if (prep.stream && ok && (header(res.headers, 'content-type') ?? '').startsWith('text/event-stream')) {
      const reader = res.reader();
      // Read the first chunk before committing: a worker that dies before sending anything is
      // replaced by the next one and the client never notices.
      let first: ReadableStreamReadResult<Uint8Array>;
      try {
        first = await reader.read();
      } catch {
        return failed('failed');
      }
      const stream = relaySse({
        family: prep.family,
        clientWantsUsage: prep.clientWantsUsage,
        ...(prep.restoreModel ? { restoreModel: prep.restoreModel } : {}),
        reader,
        first: first.done ? undefined : first.value,
        clientGone: () => req.signal?.aborted === true,
        abortWorker: () => ctrl.abort(),
        onEnd: (o) => {
          release();
          if (o.status === 502) {
            this.onUpstreamError('broken', worker.id);
            this.registry.reportFailure(worker.id);
          }
          const fallbackPrompt = Number(header(res.headers, 'x-prompt-tokens') ?? 0) || 0;
          report({
            promptTokens: o.usage?.promptTokens ?? fallbackPrompt,
            completionTokens: o.usage?.completionTokens ?? o.events,
            status: o.status,
            workerId: worker.id,
          });
        },
      });
      return new Response(stream, { status: res.status, headers: passHeaders(res.headers) });
    }
    // A whole answer (JSON, or an error): the worker sends it at once when generation ends, so
    // reading it here costs the client nothing and a torn body is retried instead of passed on.
    let text: string;
    try {
      text = await res.text();
    } catch {
      return failed('failed');
    }
    release();
    const usage = ok ? usageOfBody(prep.family, res.headers, text) : undefined;
    report({
      promptTokens: usage?.promptTokens ?? 0,
      completionTokens: usage?.completionTokens ?? 0,
      status: res.status,
      workerId: worker.id,
    });
    return new Response(prep.restoreModel ? prep.restoreModel(text) : text, {
      status: res.status,
      headers: passHeaders(res.headers),
    });
  }
}
