// LoRAX's adapter_source "hub" on a worker started with --allow-hub-adapters: adapter_id names a
// Hugging Face Hub repository (org/name); its adapter_config.json and adapter_model.safetensors are
// fetched from <endpoint>/<repo>/resolve/main/ (HF_ENDPOINT, default https://huggingface.co; HF_TOKEN
// as a bearer token when set) through the disk cache, as S3 adapters are. Nothing is fetched unless
// a request asks for the hub explicitly, and never without the flag (request-source.ts).
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { ApiError, notFound } from '../server/errors.js';
import type { AdapterLocation, AdapterSource, RemoteFile } from './source.js';

const REPO = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const FILES = ['adapter_config.json', 'adapter_model.safetensors'] as const;

/**
 * The worker-side adapter name of a hub repository: a single path component (what adapter names
 * are), with a hash of the repository id so that no two repositories share one.
 */
export function hubAdapterName(repo: string): string {
  const [org, name] = repo.split('/') as [string, string];
  return `hf--${org}--${name}--${createHash('sha256').update(repo).digest('hex').slice(0, 8)}`;
}

export type HubFetch = (url: string, init: RequestInit) => Promise<Response>;

export class HubSource implements AdapterSource {
  private readonly byName = new Map<string, AdapterLocation>();
  private readonly resolving = new Map<string, Promise<string>>();

  constructor(
    readonly endpoint: string,
    private readonly token: string | undefined,
    private readonly fetcher: HubFetch = fetch,
  ) {}

  /** Hub adapters are fetched on request only: none is listed. */
  list(): Promise<AdapterLocation[]> {
    return Promise.resolve([]);
  }

  lookup(name: string): Promise<AdapterLocation | undefined> {
    return Promise.resolve(this.byName.get(name));
  }

  /** Registers the repository's adapter (sizes from HEAD requests) and returns its adapter name; 404 when it has none. */
  resolve(repo: string): Promise<string> {
    if (!REPO.test(repo) || repo.includes('..')) {
      return Promise.reject(
        notFound(`adapter_source "hub": \`${repo}\` is not a Hugging Face Hub repository id (org/name)`),
      );
    }
    const name = hubAdapterName(repo);
    if (this.byName.has(name)) return Promise.resolve(name);
    let p = this.resolving.get(repo);
    if (!p) {
      p = this.register(repo, name).finally(() => this.resolving.delete(repo));
      this.resolving.set(repo, p);
    }
    return p;
  }

  private url(repo: string, file: string): string {
    return `${this.endpoint.replace(/\/+$/, '')}/${repo}/resolve/main/${file}`;
  }

  private headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  private async register(repo: string, name: string): Promise<string> {
    const files: RemoteFile[] = [];
    for (const file of FILES) {
      let res: Response;
      try {
        res = await this.fetcher(this.url(repo, file), { method: 'HEAD', headers: this.headers(), redirect: 'follow' });
      } catch (e) {
        throw new ApiError(
          424,
          'adapter_load_error',
          `adapter_source "hub": ${repo} could not be reached: ${(e as Error).message}`,
        );
      }
      if (res.status === 404 || res.status === 401 || res.status === 403) {
        throw notFound(
          `adapter_source "hub": ${repo} has no ${file} on the Hub (or is private and HF_TOKEN cannot read it)`,
        );
      }
      const size = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length'));
      if (!res.ok || !Number.isSafeInteger(size) || size <= 0) {
        throw new ApiError(
          424,
          'adapter_load_error',
          `adapter_source "hub": ${repo}/${file} answered ${res.status} with no size`,
        );
      }
      files.push({ name: file, size });
    }
    const fetchFile = async (f: RemoteFile, dest: string): Promise<void> => {
      const res = await this.fetcher(this.url(repo, f.name), { headers: this.headers(), redirect: 'follow' });
      if (!res.ok || !res.body) throw new Error(`${repo}/${f.name}: HTTP ${res.status}`);
      await pipeline(Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>), createWriteStream(dest));
    };
    this.byName.set(name, {
      name,
      path: `${this.endpoint.replace(/\/+$/, '')}/${repo}`,
      remote: { files, fetch: fetchFile },
    });
    return name;
  }
}

/** The hub's adapters (by their names) before another source's. */
export class WithHub implements AdapterSource {
  constructor(
    readonly hub: HubSource,
    readonly inner: AdapterSource,
  ) {}

  list(): Promise<AdapterLocation[]> {
    return this.inner.list();
  }

  async lookup(name: string): Promise<AdapterLocation | undefined> {
    return (await this.hub.lookup(name)) ?? this.inner.lookup(name);
  }
}
