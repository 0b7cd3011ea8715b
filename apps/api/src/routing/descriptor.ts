// The signed adapter descriptor the API sends a worker (contract §1): the worker fetches the adapter
// from the storage location named here and never from a path a client chose.
//   X-Loraplex-Adapter: <payload>.<signature>
//   payload = base64url(UTF-8 JSON), signature = base64url(HMAC-SHA256(secret, payload string))
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { StoredFile } from '../db/schema.js';

export const DESCRIPTOR_HEADER = 'X-Loraplex-Adapter';

export type DescriptorStorage = { kind: 's3'; bucket: string; prefix: string } | { kind: 'dir'; path: string };

/** What the API knows of an adapter version and passes to a worker (the descriptor minus v/exp). */
export interface AdapterTarget {
  id: string;
  baseModel: string;
  rank: number;
  storage: DescriptorStorage;
  files: StoredFile[];
}

export interface AdapterDescriptor {
  v: 1;
  id: string;
  base_model: string;
  rank: number;
  storage: DescriptorStorage;
  files: StoredFile[];
  exp: number;
}

const hmac = (secret: string, payload: string): string => createHmac('sha256', secret).update(payload).digest('base64url');

export function signDescriptor(target: AdapterTarget, secret: string, expiresAtS: number): string {
  const d: AdapterDescriptor = { v: 1, id: target.id, base_model: target.baseModel, rank: target.rank, storage: target.storage, files: target.files, exp: expiresAtS };
  const payload = Buffer.from(JSON.stringify(d), 'utf8').toString('base64url');
  return `${payload}.${hmac(secret, payload)}`;
}

/**
 * The descriptor in a header value, or null when the signature is wrong, it is malformed, or it
 * expired more than `skewS` ago. The worker has its own verifier; this one checks what we sign.
 */
export function verifyDescriptor(header: string, secret: string, nowS = Date.now() / 1000, skewS = 60): AdapterDescriptor | null {
  const dot = header.indexOf('.');
  if (dot <= 0) return null;
  const payload = header.slice(0, dot);
  const given = Buffer.from(header.slice(dot + 1), 'base64url');
  const want = Buffer.from(hmac(secret, payload), 'base64url');
  if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
  let d: AdapterDescriptor;
  try {
    d = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as AdapterDescriptor;
  } catch {
    return null;
  }
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

  constructor(private readonly secret: string, private readonly ttlS: number, private readonly maxEntries = 10_000) {
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
