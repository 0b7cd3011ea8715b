// The typed client: `new Loraplex({ baseURL, apiKey })`, then generate / generateStream / chat,
// chatStream, adapters, models, usage, and (with an admin key) keys and tenants.
import { Adapters } from './adapters.js';
import { chat, chatStream, generate, generateStream, parseJson } from './generate.js';
import { json, send, type HttpOptions } from './http.js';
import type {
  ApiKey,
  ChatMessage,
  ChatOptions,
  ChatResult,
  ChatStreamEvent,
  GenerateOptions,
  GenerateResult,
  JsonResult,
  JsonSchema,
  Model,
  StreamEvent,
  Tenant,
  UsageRow,
} from './types.js';

export interface ClientOptions {
  /** The API (or a worker) root, e.g. http://localhost:8080. Default LORAPLEX_BASE_URL. */
  baseURL?: string;
  /** Default LORAPLEX_API_KEY. */
  apiKey?: string;
  /** Milliseconds per attempt. Default 60 000. */
  timeout?: number;
  /** Retries of 429 / 503 / connection failures. Default 2. */
  maxRetries?: number;
  fetch?: typeof fetch;
  /** Backoff base in ms (exponential with jitter, unless the server sends Retry-After). Default 500. */
  backoffMs?: number;
}

const env = (k: string): string | undefined => (typeof process !== 'undefined' ? process.env?.[k] : undefined);

export class Loraplex {
  readonly adapters: Adapters;
  private readonly h: HttpOptions;
  private baseModelId: Promise<string> | undefined;

  constructor(o: ClientOptions = {}) {
    const baseURL = o.baseURL ?? env('LORAPLEX_BASE_URL');
    if (!baseURL) throw new Error('Loraplex needs a baseURL (or LORAPLEX_BASE_URL)');
    const apiKey = o.apiKey ?? env('LORAPLEX_API_KEY');
    this.h = {
      baseURL,
      timeout: o.timeout ?? 60_000,
      maxRetries: o.maxRetries ?? 2,
      fetch: o.fetch ?? globalThis.fetch.bind(globalThis),
      backoffMs: o.backoffMs ?? 500,
      ...(apiKey ? { apiKey } : {}),
    };
    this.adapters = new Adapters(this.h);
  }

  /** Generates text; with `responseFormat` the output is JSON and `parsed` holds it (typed by T). */
  generate<T = unknown>(
    prompt: string,
    options: GenerateOptions & { responseFormat: NonNullable<GenerateOptions['responseFormat']> },
  ): Promise<JsonResult<T>>;
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  async generate<T>(prompt: string, options: GenerateOptions = {}): Promise<GenerateResult | JsonResult<T>> {
    const r = await generate(this.h, prompt, options);
    return options.responseFormat ? { ...r, parsed: parseJson<T>(r) } : r;
  }

  /** Streams tokens; the last event carries `final` with the whole text and details. */
  generateStream(prompt: string, options: GenerateOptions = {}): AsyncGenerator<StreamEvent> {
    return generateStream(this.h, prompt, options);
  }

  /** Chat through the model's (or the adapter's) chat template. */
  chat(messages: ChatMessage[], options: ChatOptions = {}): Promise<ChatResult> {
    return chat(this.h, messages, options, () => this.baseModel());
  }

  /** Chat, streamed: each event's `delta` is new text; the last one carries `usage`. */
  chatStream(messages: ChatMessage[], options: ChatOptions = {}): AsyncGenerator<ChatStreamEvent> {
    return chatStream(this.h, messages, options, () => this.baseModel());
  }

  /** The served base model's id (the first of /v1/models), asked once. */
  private baseModel(): Promise<string> {
    return (this.baseModelId ??= this.models.list().then((m) => m[0]?.id ?? ''));
  }

  readonly models = {
    list: async (): Promise<Model[]> =>
      (await json<{ data: Model[] }>(await send(this.h, { path: '/v1/models' }))).data,
  };

  /** Usage per adapter and period (`groupBy`: adapter, day or hour). */
  async usage(
    o: { start?: Date | string; end?: Date | string; groupBy?: 'adapter' | 'day' | 'hour' } = {},
  ): Promise<UsageRow[]> {
    const iso = (d: Date | string | undefined): string | undefined =>
      d === undefined ? undefined : typeof d === 'string' ? d : d.toISOString();
    return (
      await json<{ data: UsageRow[] }>(
        await send(this.h, { path: '/v1/usage', query: { start: iso(o.start), end: iso(o.end), group_by: o.groupBy } }),
      )
    ).data;
  }

  readonly keys = {
    create: async (o: { name?: string; scopes?: string[]; tenantId?: string; admin?: boolean } = {}): Promise<ApiKey> =>
      json<ApiKey>(
        await send(this.h, {
          path: '/v1/keys',
          json: {
            ...(o.name ? { name: o.name } : {}),
            ...(o.scopes ? { scopes: o.scopes } : {}),
            ...(o.tenantId ? { tenant_id: o.tenantId } : {}),
          },
          maxRetries: 0,
        }),
      ),
    list: async (o: { tenantId?: string } = {}): Promise<ApiKey[]> =>
      (await json<{ data: ApiKey[] }>(await send(this.h, { path: '/v1/keys', query: { tenant_id: o.tenantId } }))).data,
    revoke: async (id: string): Promise<{ id: string; revoked: boolean }> =>
      json(await send(this.h, { method: 'DELETE', path: `/v1/keys/${encodeURIComponent(id)}` })),
  };

  readonly tenants = {
    create: async (name: string): Promise<Tenant> =>
      json<Tenant>(await send(this.h, { path: '/v1/tenants', json: { name }, maxRetries: 0 })),
    list: async (): Promise<Tenant[]> =>
      (await json<{ data: Tenant[] }>(await send(this.h, { path: '/v1/tenants' }))).data,
  };
}

export type { JsonSchema };
