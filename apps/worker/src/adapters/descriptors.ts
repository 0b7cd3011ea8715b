// Signed adapter descriptors (docs/platform-contract.md §1): the API tells the worker where a
// tenant adapter's files are, with their sha256, in an HMAC-signed header. The worker never takes
// a path from a client: only a descriptor signed with the shared secret registers an adapter, and
// an adapter registered that way is served only to requests that carry a valid descriptor for it.
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import {
  DESCRIPTOR_HEADER,
  signDescriptor,
  verifyDescriptor as checkDescriptor,
  type AdapterDescriptor as SignedDescriptor,
} from '@loraplex/protocol';
import { ApiError } from '../server/errors.js';
import type { AdapterLocation, AdapterSource } from './source.js';

// The format (schema, signature, expiry) is @loraplex/protocol's; signDescriptor is re-exported for tests and tools.
export { DESCRIPTOR_HEADER, signDescriptor, type SignedDescriptor };

const unauthorized = (why: string): ApiError =>
  new ApiError(401, 'authentication_error', `invalid adapter descriptor: ${why}`);

/** Verifies the header's signature and expiry and parses it; 401 on any failure. */
export function verifyDescriptor(
  header: string,
  secret: string | undefined,
  nowS = Date.now() / 1000,
): SignedDescriptor {
  if (!secret) throw unauthorized('this worker has no --worker-secret, so it accepts no descriptors');
  const r = checkDescriptor(header, secret, nowS);
  if (!r.ok) throw unauthorized(r.reason);
  return r.descriptor;
}

/**
 * The worker's adapter source: adapters known from descriptors (by id) first, then the listed adapters
 * (directory or S3 prefix). Descriptor adapters are never listed in /v1/models (they are tenant-private).
 */
export class DescriptorRegistry implements AdapterSource {
  private readonly byId = new Map<string, AdapterLocation>();

  constructor(
    private readonly s3: () => S3Client,
    readonly listed: AdapterSource,
  ) {}

  has(id: string): boolean {
    return this.byId.has(id);
  }

  register(d: SignedDescriptor): void {
    const s = d.storage;
    const files = d.files.map((f) => ({ name: f.name, size: f.size, sha256: f.sha256 }));
    const fetch =
      s.kind === 'dir'
        ? (f: { name: string }, dest: string) => copyFile(join(s.path, f.name), dest)
        : async (f: { name: string }, dest: string) => {
            const obj = await this.s3().send(new GetObjectCommand({ Bucket: s.bucket, Key: `${s.prefix}${f.name}` }));
            if (!obj.Body) throw new Error(`s3://${s.bucket}/${s.prefix}${f.name} has no body`);
            await pipeline(obj.Body as Readable, createWriteStream(dest));
          };
    const path = s.kind === 'dir' ? s.path : `s3://${s.bucket}/${s.prefix}`;
    this.byId.set(d.id, { name: d.id, path, remote: { files, fetch } });
  }

  list(): Promise<AdapterLocation[]> {
    return this.listed.list();
  }

  lookup(name: string): Promise<AdapterLocation | undefined> {
    const d = this.byId.get(name);
    return d ? Promise.resolve(d) : this.listed.lookup(name);
  }
}
