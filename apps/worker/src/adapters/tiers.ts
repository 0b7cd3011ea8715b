// The tiers below the engine's slots: source -> disk cache -> host memory. files(name) returns an
// adapter's files from host memory, moving them up from the disk cache (and, for remote sources,
// from S3 into the disk cache) on a miss; concurrent callers share one load per tier.
//
// Host memory is an LRU by count and bytes of the adapters' files as stored (bf16/f16 stay
// compact; the engine widens them only when it fills a slot). An entry is in use while any queued
// or running request needs its adapter (the `inUse` callback, from the slot manager); only entries
// not in use are evicted. When every entry is in use and a request names a new adapter,
// hasRoomFor() is false and the request gets 429 with Retry-After (NIM's answer to more active
// adapters than the cache holds) instead of the worker growing without bound.
import { createHash } from 'node:crypto';
import { Lru } from '@loraplex/common';
import { readAdapterFiles, type AdapterFiles } from '@loraplex/formats';
import { SequenceError } from '../scheduler/sequence.js';
import type { DiskCache } from './disk-cache.js';
import type { AdapterLocation, AdapterSource } from './source.js';

export interface HostLimits {
  /** Adapters held in host memory at once. */
  maxAdapters: number;
  /** Bytes of adapter files held in host memory at once. */
  maxBytes: number;
}

interface HostEntry {
  files: AdapterFiles;
  bytes: number;
  path: string;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export class AdapterTiers {
  private readonly host: Lru<string, HostEntry>;
  private readonly loads = new Map<string, Promise<HostEntry>>();
  /** Set by the slot manager: queued or running requests need this adapter. */
  inUse: (name: string) => boolean = () => false;

  constructor(
    readonly source: AdapterSource,
    readonly disk: DiskCache,
    readonly limits: HostLimits,
  ) {
    this.host = new Lru({
      maxEntries: limits.maxAdapters,
      maxWeight: limits.maxBytes,
      weigh: (e) => e.bytes,
      canEvict: (n) => !this.inUse(n),
    });
  }

  get hostBytes(): number {
    return this.host.weight;
  }

  hostNames(): string[] {
    return [...this.host.keys()];
  }

  /** Whether a request for `name` can be taken without exceeding host memory (else: 429). */
  hasRoomFor(name: string): boolean {
    if (this.host.has(name) || this.loads.has(name)) return true;
    if (this.host.size + this.loads.size < this.limits.maxAdapters) return true;
    return [...this.host.keys()].some((n) => !this.inUse(n));
  }

  /** The 429 for a request that hasRoomFor() refused. */
  tooManyAdapters(): SequenceError {
    return new SequenceError(
      429,
      'rate_limit_error',
      `too many distinct adapters are in use: host memory holds ${this.limits.maxAdapters} and every one is serving requests; retry shortly`,
      1,
    );
  }

  /** The adapter's files, from host memory or moved up from the disk cache / source. */
  async files(name: string, d: AdapterLocation): Promise<AdapterFiles> {
    const hit = this.host.peek(name);
    if (hit && hit.path === d.path) {
      this.host.touch(name);
      return hit.files;
    }
    let load = this.loads.get(name);
    if (!load) {
      load = this.load(name, d).finally(() => this.loads.delete(name));
      this.loads.set(name, load);
    }
    return (await load).files;
  }

  /** Forgets an adapter (its source no longer lists it). */
  drop(name: string): void {
    this.host.delete(name);
  }

  private async load(name: string, d: AdapterLocation): Promise<HostEntry> {
    let files: AdapterFiles;
    if (!d.remote) {
      files = await readAdapterFiles(d.path);
    } else {
      files = await this.readVerified(d).catch(async (e: unknown) => {
        if (!(e instanceof ChecksumError)) throw e;
        console.error(`[worker] ${e.message}; fetching ${d.path} again`);
        await this.disk.discard(e.dir);
        return this.readVerified(d);
      });
    }
    const entry: HostEntry = { files, bytes: files.config.byteLength + files.weights.byteLength, path: d.path };
    this.makeRoom(name, entry.bytes);
    this.host.set(name, entry);
    return entry;
  }

  private async readVerified(d: AdapterLocation): Promise<AdapterFiles> {
    const dir = await this.disk.ensure(d);
    const release = this.disk.hold(dir);
    try {
      const [files, manifest] = await Promise.all([readAdapterFiles(dir), this.disk.manifest(dir)]);
      const want = (n: string): string | undefined => manifest.find((f) => f.name === n)?.sha256;
      const weightsName = files.format === 'safetensors' ? 'adapter_model.safetensors' : 'adapter_model.bin';
      for (const [n, b] of [
        ['adapter_config.json', files.config],
        [weightsName, files.weights],
      ] as const) {
        if (sha256(b) !== want(n))
          throw new ChecksumError(dir, `${d.path}/${n}: the disk cache copy no longer matches its checksum`);
      }
      return files;
    } finally {
      release();
    }
  }

  /** Evicts idle entries, least recently used first, until `bytes` more fit; 429 when they cannot. */
  private makeRoom(name: string, bytes: number): void {
    this.host.delete(name);
    if (!this.host.makeRoom(1, bytes).fits) {
      if (bytes > this.limits.maxBytes)
        throw new SequenceError(
          424,
          'adapter_load_error',
          `adapter ${name} is ${bytes} bytes, more than the host cache holds (--host-cache-bytes ${this.limits.maxBytes})`,
        );
      throw this.tooManyAdapters();
    }
  }
}

class ChecksumError extends Error {
  constructor(
    readonly dir: string,
    message: string,
  ) {
    super(message);
  }
}
