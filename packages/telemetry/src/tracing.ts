// OpenTelemetry traces (issue 12), shared by the worker and the API (@loraplex/telemetry).
//
// Off by default: a Tracing is enabled only when the environment asks for an exporter
// (OTEL_TRACES_EXPORTER=otlp or console, or an OTLP endpoint in OTEL_EXPORTER_OTLP_ENDPOINT /
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_SDK_DISABLED is not true. Disabled, no request
// middleware is installed (installTracing), and no scheduler hook.
//
// Enabled: spans go through a BatchSpanProcessor (OTEL_BSP_* settings) to the OTLP/HTTP exporter,
// JSON encoding (http/json; collectors take it on the same /v1/traces endpoint as protobuf);
// OTEL_SERVICE_NAME names the service, OTEL_TRACES_SAMPLER / _ARG pick the sampler (default:
// parent-based, always on), OTEL_EXPORTER_OTLP_HEADERS adds headers. W3C trace context
// (`traceparent`, `tracestate`) is read from incoming requests and written on forwarded ones.
//
// Each app holds its own Tracing (its own provider and service name, so an API and a worker can
// share a process in tests). The request middleware puts it in the OpenTelemetry context beside the
// request's span; code below (the API's router, the worker's scheduler hooks) starts child spans with
// whatever Tracing the active context carries, so nothing has to be passed down to it.
import {
  context,
  createContextKey,
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type SpanOptions,
  type Tracer,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Context as HonoContext, MiddlewareHandler, Next } from 'hono';
import { routePath } from 'hono/route';

export { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';

const TRACING_KEY = createContextKey('loraplex.tracing');
const propagator = new W3CTraceContextPropagator();
let contextManagerSet = false;

type Env = Record<string, string | undefined>;

/** The exporters OTEL_* asks for; none (tracing off) unless an exporter or an OTLP endpoint is named. */
export function tracesExporters(env: Env = process.env): string[] {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return [];
  const named = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  if (named.includes('none')) return [];
  if (named.length > 0) return named;
  return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT ? ['otlp'] : [];
}

/** The traces URL: the signal-specific endpoint as given, else the base endpoint + /v1/traces (OTLP spec). */
function otlpTracesUrl(env: Env): string | undefined {
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return base ? `${base.replace(/\/+$/, '')}/v1/traces` : undefined;
}

function exporterFor(name: string, env: Env): SpanExporter | undefined {
  if (name === 'console') return new ConsoleSpanExporter();
  if (name !== 'otlp') {
    console.warn(`[tracing] OTEL_TRACES_EXPORTER=${name} is not supported (otlp, console, none); ignored`);
    return undefined;
  }
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (protocol !== undefined && protocol !== 'http/json') {
    console.warn(`[tracing] OTLP protocol ${protocol} is not supported: spans are sent as http/json`);
  }
  const url = otlpTracesUrl(env);
  return new OTLPTraceExporter(url ? { url } : {});
}

export class Tracing {
  private constructor(
    readonly tracer: Tracer,
    readonly enabled: boolean,
    private readonly provider: BasicTracerProvider | undefined,
  ) {}

  /** Tracing off: no spans, no exporter. */
  static disabled(): Tracing {
    return new Tracing(trace.getTracer('loraplex-disabled'), false, undefined);
  }

  /**
   * From the standard OTEL_* variables (`env`, default process.env); `serviceName` when
   * OTEL_SERVICE_NAME is unset. Disabled unless an exporter is asked for (see the file comment).
   */
  static fromEnv(serviceName: string, env: Env = process.env): Tracing {
    const exporters = tracesExporters(env)
      .map((name) => exporterFor(name, env))
      .filter((e): e is SpanExporter => e !== undefined);
    if (exporters.length === 0) return Tracing.disabled();
    return Tracing.withExporters(env.OTEL_SERVICE_NAME || serviceName, exporters);
  }

  /** Enabled, with these exporters behind a batch processor each. */
  static withExporters(serviceName: string, exporters: SpanExporter[]): Tracing {
    if (!contextManagerSet) {
      // Async context for context.with() across awaits; a host application may have set its own.
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      contextManagerSet = true;
    }
    const provider = new BasicTracerProvider({
      resource: defaultResource().merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName })),
      spanProcessors: exporters.map((e) => new BatchSpanProcessor(e)),
    });
    return new Tracing(provider.getTracer('loraplex'), true, provider);
  }

  /** Exports every ended span now (tests; shutdown). */
  async forceFlush(): Promise<void> {
    await this.provider?.forceFlush();
  }

  async shutdown(): Promise<void> {
    await this.provider?.shutdown();
  }

  /** A context carrying this Tracing and `span` (what the request middleware runs the request in). */
  contextWith(span: Span, parent: Context = context.active()): Context {
    return trace.setSpan(parent.setValue(TRACING_KEY, this), span);
  }
}

/** The Tracing of the request being served, if tracing is on. */
export function activeTracing(): Tracing | undefined {
  return context.active().getValue(TRACING_KEY) as Tracing | undefined;
}

/** Starts a span under the active one, or undefined when tracing is off. */
export function startSpan(name: string, opts: SpanOptions = {}, parent: Context = context.active()): Span | undefined {
  const t = parent.getValue(TRACING_KEY) as Tracing | undefined;
  return t?.tracer.startSpan(name, opts, parent);
}

/** Marks a span failed with an error. */
export function spanError(span: Span, err: unknown): void {
  if (err instanceof Error) span.recordException(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/** Runs `fn` in a child span of the active one (ended when `fn` settles); just runs it when tracing is off. */
export async function inSpan<T>(
  name: string,
  fn: (span: Span | undefined) => Promise<T> | T,
  opts: SpanOptions = {},
): Promise<T> {
  const parent = context.active();
  const tracing = parent.getValue(TRACING_KEY) as Tracing | undefined;
  if (!tracing) return fn(undefined);
  const span = tracing.tracer.startSpan(name, opts, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (e) {
    spanError(span, e);
    throw e;
  } finally {
    span.end();
  }
}

/** Adds `traceparent` (and `tracestate`) of the active span to outgoing headers; nothing when there is none. */
export function injectTraceHeaders(
  headers: Record<string, string>,
  ctx: Context = context.active(),
): Record<string, string> {
  propagator.inject(ctx, headers, defaultTextMapSetter);
  return headers;
}

/** The context of an incoming request's `traceparent` / `tracestate` (the root context when absent or malformed). */
export function extractTraceContext(get: (name: string) => string | undefined): Context {
  const carrier: Record<string, string> = {};
  for (const name of propagator.fields()) {
    const v = get(name);
    if (v !== undefined) carrier[name] = v;
  }
  return propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter);
}

/** Probes and scrapes: no span (they would drown the traces). */
const UNTRACED_PATHS = new Set(['/health', '/metrics']);

/**
 * The server span of every request but probes and scrapes: continues the caller's trace (W3C traceparent), runs the rest of
 * the chain in it, and is named after the matched route once it is known. It ends when the response
 * head is ready (a stream's body may still be flowing; the worker's decode spans cover that part).
 */
export function traceRequests(tracing: Tracing): MiddlewareHandler {
  // Apps install nothing when tracing is off (see tracingMiddleware); this pass-through is for callers that do.
  if (!tracing.enabled)
    return async function traceRequests(_c, next) {
      await next();
    };
  return async function traceRequests(c, next) {
    if (UNTRACED_PATHS.has(c.req.path)) return next();
    const parent = extractTraceContext((name) => c.req.header(name));
    const method = c.req.method;
    const span = tracing.tracer.startSpan(
      `${method} ${c.req.path}`,
      {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': method, 'url.path': c.req.path },
      },
      parent,
    );
    try {
      await context.with(tracing.contextWith(span, parent), () => next());
    } catch (e) {
      spanError(span, e);
      throw e;
    } finally {
      const route = routePath(c, -1); // the last matched route: the handler's, even when a middleware answered
      if (route && route !== '*' && route !== '/*') {
        span.updateName(`${method} ${route}`);
        span.setAttribute('http.route', route);
      }
      const status = c.res.status;
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
  };
}

/** The request middleware when tracing is on, none when it is off (so untraced requests pay nothing for it). */
export function tracingMiddleware(tracing: Tracing | undefined): MiddlewareHandler[] {
  return tracing?.enabled ? [traceRequests(tracing)] : [];
}

/** `mw` in a span of its own when tracing is on (tracedMiddleware); `mw` itself when it is off. */
export function maybeTraced<M extends MiddlewareHandler<any>>(
  tracing: Tracing | undefined,
  name: string,
  mw: M,
  attributes: Attributes = {},
): M {
  return tracing?.enabled ? tracedMiddleware(name, mw, attributes) : mw;
}

/**
 * Wraps a middleware in a span that covers its own work only: the span ends when the middleware
 * calls next(), and the rest of the chain runs in the request's context, not under this span.
 */
export function tracedMiddleware<M extends MiddlewareHandler<any>>(
  name: string,
  mw: M,
  attributes: Attributes = {},
): M {
  const wrapped = async function traced(c: HonoContext, next: Next): Promise<Response | void> {
    const outer = context.active();
    const span = startSpan(name, { attributes }, outer);
    if (!span) return mw(c, next);
    let ended = false;
    const end = (): void => {
      if (!ended) {
        ended = true;
        span.end();
      }
    };
    try {
      return await context.with(trace.setSpan(outer, span), () =>
        mw(c, async () => {
          end();
          await context.with(outer, () => next());
        }),
      );
    } catch (e) {
      if (!ended) spanError(span, e);
      throw e;
    } finally {
      end();
    }
  };
  return wrapped as unknown as M;
}
