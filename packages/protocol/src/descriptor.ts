// The signed adapter descriptor (docs/platform-contract.md §1): the API tells a worker where a
// tenant adapter's files are, with their sha256, in one header:
//   X-Loraplex-Adapter: <payload>.<signature>
//   payload = base64url(UTF-8 JSON), signature = base64url(HMAC-SHA256(secret, payload string))
// The worker never takes a path from a client: only a descriptor signed with the shared secret
// registers an adapter.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

export const DESCRIPTOR_HEADER = 'x-loraplex-adapter';
/** Clock skew allowed on `exp`. */
export const DESCRIPTOR_SKEW_S = 60;

/** The files an adapter may have; a descriptor names no other. */
export const ADAPTER_FILES = [
  'adapter_config.json',
  'adapter_model.safetensors',
  'adapter_model.bin',
  'tokenizer_config.json',
] as const;
export type AdapterFileName = (typeof ADAPTER_FILES)[number];

export const descriptorStorage = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('s3'), bucket: z.string().min(1), prefix: z.string() }),
  z.strictObject({ kind: z.literal('dir'), path: z.string().min(1) }),
]);
export type DescriptorStorage = z.infer<typeof descriptorStorage>;

export const descriptorFile = z.strictObject({
  name: z.enum(ADAPTER_FILES),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type DescriptorFile = z.infer<typeof descriptorFile>;

export const adapterDescriptor = z.strictObject({
  v: z.literal(1),
  id: z.string().regex(/^ad_[a-z0-9]{16,40}$/),
  base_model: z.string().min(1),
  rank: z.number().int().positive(),
  storage: descriptorStorage,
  files: z.array(descriptorFile).min(2),
  /** Expiry, unix seconds. */
  exp: z.number().int(),
});
export type AdapterDescriptor = z.infer<typeof adapterDescriptor>;

const hmac = (secret: string, payload: string): Buffer => createHmac('sha256', secret).update(payload).digest();

/**
 * The header value for a descriptor. Its fields are serialised in the order given, so a value built
 * from another type (with files of a wider name type) signs as it is.
 */
export function signDescriptor(
  d:
    | AdapterDescriptor
    | (Omit<AdapterDescriptor, 'files'> & { files: Array<{ name: string; size: number; sha256: string }> }),
  secret: string,
): string {
  const payload = Buffer.from(JSON.stringify(d), 'utf8').toString('base64url');
  return `${payload}.${hmac(secret, payload).toString('base64url')}`;
}

export type DescriptorCheck = { ok: true; descriptor: AdapterDescriptor } | { ok: false; reason: string };

/** The payload of a header whose signature is intact, not yet checked against the schema. */
export function openDescriptor(
  header: string,
  secret: string,
): { ok: true; payload: unknown } | { ok: false; reason: string } {
  const [payload, sig, extra] = header.split('.');
  if (!payload || !sig || extra !== undefined) return { ok: false, reason: 'not <payload>.<signature>' };
  const want = hmac(secret, payload);
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, reason: 'bad signature' };
  try {
    return { ok: true, payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) };
  } catch {
    return { ok: false, reason: 'the payload is not JSON' };
  }
}

/** Checks the header's signature, payload and expiry (allowing `skewS` past `exp`). */
export function verifyDescriptor(
  header: string,
  secret: string,
  nowS = Date.now() / 1000,
  skewS = DESCRIPTOR_SKEW_S,
): DescriptorCheck {
  const opened = openDescriptor(header, secret);
  if (!opened.ok) return opened;
  const r = adapterDescriptor.safeParse(opened.payload);
  if (!r.success) return { ok: false, reason: `malformed payload (${r.error.issues[0]?.message ?? 'invalid'})` };
  if (r.data.exp + skewS < nowS) return { ok: false, reason: 'expired' };
  return { ok: true, descriptor: r.data };
}
