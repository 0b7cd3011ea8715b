// Signed adapter descriptors (docs/platform-contract.md §1): the API tells the worker where a
// tenant adapter's files are, with their sha256, in an HMAC-signed header. The worker never takes
// a path from a client: only a descriptor signed with the shared secret registers an adapter, and
// an adapter registered that way is served only to requests that carry a valid descriptor for it.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { ApiError } from '../server/errors.js';
import { ADAPTER_FILES, type AdapterDescriptor, type AdapterSource } from './source.js';

export const DESCRIPTOR_HEADER = 'x-loraplex-adapter';
/** Clock skew allowed on `exp`. */
const SKEW_S = 60;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const descriptorSchema = z.strictObject({
  v: z.literal(1),
  id: z.string().regex(/^ad_[a-z0-9]{16,40}$/),
  base_model: z.string().min(1),
  rank: z.number().int().positive(),
  storage: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('s3'), bucket: z.string().min(1), prefix: z.string() }),
    z.strictObject({ kind: z.literal('dir'), path: z.string().min(1) }),
  ]),
  files: z.array(z.strictObject({ name: z.enum(ADAPTER_FILES), size: z.number().int().nonnegative(), sha256: sha256Hex })).min(2),
  exp: z.number().int(),
});
export type SignedDescriptor = z.infer<typeof descriptorSchema>;

const b64url = (b: Buffer): string => b.toString('base64url');

/** Signs a descriptor (the API's side; here for tests and tools). */
export function signDescriptor(d: SignedDescriptor, secret: string): string {
  const payload = b64url(Buffer.from(JSON.stringify(d), 'utf8'));
  return `${payload}.${b64url(createHmac('sha256', secret).update(payload).digest())}`;
}

const unauthorized = (why: string): ApiError => new ApiError(401, 'authentication_error', `invalid adapter descriptor: ${why}`);

/** Verifies the header's signature and expiry and parses it; 401 on any failure. */
export function verifyDescriptor(header: string, secret: string | undefined, nowS = Date.now() / 1000): SignedDescriptor {
  if (!secret) throw unauthorized('this worker has no --worker-secret, so it accepts no descriptors');
  const [payload, sig, extra] = header.split('.');
  if (!payload || !sig || extra !== undefined) throw unauthorized('not <payload>.<signature>');
  const want = createHmac('sha256', secret).update(payload).digest();
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw unauthorized('bad signature');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw unauthorized('the payload is not JSON');
  }
  const r = descriptorSchema.safeParse(json);
  if (!r.success) throw unauthorized(`malformed payload (${r.error.issues[0]?.message ?? 'invalid'})`);
  if (r.data.exp + SKEW_S < nowS) throw unauthorized('expired');
  return r.data;
}

/** Adapters known from descriptors, by id. They are never listed in /v1/models (they are tenant-private). */
export class DescriptorRegistry implements AdapterSource {
  private readonly byId = new Map<string, AdapterDescriptor>();

  constructor(private readonly s3: () => S3Client) {}

  has(id: string): boolean {
    return this.byId.has(id);
  }

  register(d: SignedDescriptor): void {
    const s = d.storage;
    const files = d.files.map((f) => ({ name: f.name, size: f.size, sha256: f.sha256 }));
    const fetch = s.kind === 'dir'
      ? (f: { name: string }, dest: string) => copyFile(join(s.path, f.name), dest)
      : async (f: { name: string }, dest: string) => {
          const obj = await this.s3().send(new GetObjectCommand({ Bucket: s.bucket, Key: `${s.prefix}${f.name}` }));
          if (!obj.Body) throw new Error(`s3://${s.bucket}/${s.prefix}${f.name} has no body`);
          await pipeline(obj.Body as Readable, createWriteStream(dest));
        };
    const path = s.kind === 'dir' ? s.path : `s3://${s.bucket}/${s.prefix}`;
    this.byId.set(d.id, { name: d.id, path, remote: { files, fetch } });
  }

  list(): Promise<AdapterDescriptor[]> {
    return Promise.resolve([]);
  }

  lookup(name: string): Promise<AdapterDescriptor | undefined> {
    return Promise.resolve(this.byId.get(name));
  }
}

/** Descriptor-registered adapters first (by id), then the catalog (directory or S3 prefix). */
export class CombinedSource implements AdapterSource {
  constructor(readonly registry: DescriptorRegistry, readonly catalog: AdapterSource) {}

  list(): Promise<AdapterDescriptor[]> {
    return this.catalog.list();
  }

  async lookup(name: string): Promise<AdapterDescriptor | undefined> {
    return (await this.registry.lookup(name)) ?? this.catalog.lookup(name);
  }
}
