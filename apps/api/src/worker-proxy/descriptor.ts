// The signed adapter descriptor the API sends a worker (contract §1): the worker fetches the adapter
// from the storage location named here and never from a path a client chose. The format (header,
// payload schema, signature) is @loraplex/protocol's; here are what the API knows of an adapter and
// the cache of signed headers.
import {
  DESCRIPTOR_SKEW_S,
  openDescriptor,
  signDescriptor as signPayload,
  type DescriptorStorage,
} from '@loraplex/protocol';
import type { StoredFile } from '../db/schema.js';

export { DESCRIPTOR_HEADER, type DescriptorStorage } from '@loraplex/protocol';

/** What the API knows of an adapter version and passes to a worker (the descriptor minus v/exp). */
export interface AdapterTarget {
  id: string;
  baseModel: string;
  rank: number;
  storage: DescriptorStorage;
  files: StoredFile[];
}

/** A descriptor as the API signs it: the protocol's, with the file names the database holds. */
export interface AdapterDescriptor {
  v: 1;
  id: string;
  base_model: string;
  rank: number;
  storage: DescriptorStorage;
  files: StoredFile[];
  exp: number;
}

export function signDescriptor(target: AdapterTarget, secret: string, expiresAtS: number): string {
  const d: AdapterDescriptor = {
    v: 1,
    id: target.id,
    base_model: target.baseModel,
    rank: target.rank,
    storage: target.storage,
    files: target.files,
    exp: expiresAtS,
  };
  return signPayload(d, secret);
}

/**
 * The descriptor in a header value, or null when the signature is wrong, it is malformed, or it
 * expired more than `skewS` ago. Workers check the payload against the full schema; this checks
 * what we sign.
 */
export function verifyDescriptor(
  header: string,
  secret: string,
  nowS = Date.now() / 1000,
  skewS = DESCRIPTOR_SKEW_S,
): AdapterDescriptor | null {
  const opened = openDescriptor(header, secret);
  if (!opened.ok) return null;
  const d = opened.payload as AdapterDescriptor | null;
  if (d?.v !== 1 || typeof d.exp !== 'number' || d.exp + skewS < nowS) return null;
  return d;
}

/**
 * Signs descriptors and reuses a signature until half its lifetime has passed, so the hot path
 * does not serialise and sign the same adapter on every request. Adapter ids name immutable
 * versions, so the id is a sound cache key.
 */
export class DescriptorSigner {
  private readonly cache = new Map<string, { header: string; refreshAtMs: number }>();

  constructor(
    private readonly secret: string,
    private readonly ttlS: number,
    private readonly maxEntries = 10_000,
  ) {
    if (!secret) throw new Error('a worker secret (LORAPLEX_WORKER_SECRET) is required to sign adapter descriptors');
    if (!(ttlS > 0)) throw new Error('descriptorTtlS must be positive');
  }

  header(target: AdapterTarget, nowMs = Date.now()): string {
    const hit = this.cache.get(target.id);
    if (hit && hit.refreshAtMs > nowMs) return hit.header;
    const header = signDescriptor(target, this.secret, Math.floor(nowMs / 1000) + this.ttlS);
    if (this.cache.size >= this.maxEntries) this.cache.clear();
    this.cache.set(target.id, { header, refreshAtMs: nowMs + (this.ttlS * 1000) / 2 });
    return header;
  }
}
