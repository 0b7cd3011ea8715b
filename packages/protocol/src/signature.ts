// The request signature of the platform (docs/platform-contract.md §1a): every call the API makes
// to a worker carries
//   X-Loraplex-Signature: v1,t=<unix seconds>,n=<nonce>,s=<base64url HMAC-SHA256>
// over the method, the path with its query, the timestamp, the nonce and the sha256 of the body,
// keyed with the worker secret. The worker accepts it within SIGNATURE_SKEW_S of its own clock and
// once per nonce. This module is the one declaration of that format: the API signs with it and the
// worker verifies with it.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-loraplex-signature';
/** Clock skew allowed between the API and a worker, either way. */
export const SIGNATURE_SKEW_S = 60;

const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const HEADER = /^v1,t=(\d{1,12}),n=([A-Za-z0-9_-]{16,64}),s=([A-Za-z0-9_-]{43})$/;

function mac(
  secret: string,
  method: string,
  path: string,
  t: number,
  nonce: string,
  body: string | Uint8Array,
): Buffer {
  const digest = createHash('sha256').update(body).digest('hex');
  return createHmac('sha256', secret)
    .update(`loraplex-request-v1\n${method.toUpperCase()}\n${path}\n${t}\n${nonce}\n${digest}`)
    .digest();
}

/** The header value for one request; `path` includes the query string, if any. */
export function signRequest(
  secret: string,
  method: string,
  path: string,
  body: string | Uint8Array,
  nowS = Date.now() / 1000,
  nonce = randomBytes(16).toString('base64url'),
): string {
  if (!secret) throw new Error('signing a worker request needs the worker secret');
  if (!NONCE.test(nonce)) throw new Error('a signature nonce is 16-64 base64url characters');
  const t = Math.floor(nowS);
  return `v1,t=${t},n=${nonce},s=${mac(secret, method, path, t, nonce, body).toString('base64url')}`;
}

export type SignatureCheck = { ok: true; t: number; nonce: string } | { ok: false; reason: string };

/** Checks format, timestamp window and MAC (not replays: see ReplayCache). */
export function verifyRequestSignature(
  header: string,
  secret: string,
  method: string,
  path: string,
  body: string | Uint8Array,
  nowS = Date.now() / 1000,
): SignatureCheck {
  const m = HEADER.exec(header);
  if (!m) return { ok: false, reason: 'malformed signature header' };
  const t = Number(m[1]);
  const nonce = m[2]!;
  if (Math.abs(nowS - t) > SIGNATURE_SKEW_S) return { ok: false, reason: 'timestamp outside the allowed clock skew' };
  const got = Buffer.from(m[3]!, 'base64url');
  const want = mac(secret, method, path, t, nonce, body);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { ok: false, reason: 'bad signature' };
  return { ok: true, t, nonce };
}

/**
 * Nonces of accepted signatures, each kept until its timestamp falls out of the skew window (after
 * that the timestamp check refuses a replay on its own). Only requests with a valid MAC get here,
 * so only the platform can grow it; `maxEntries` bounds it even so.
 */
export class ReplayCache {
  private readonly seen = new Map<string, number>();
  private nextSweepS = 0;

  constructor(private readonly maxEntries = 1_000_000) {}

  get size(): number {
    return this.seen.size;
  }

  /**
   * True the first time a nonce is offered within the window; false for a replay, or when the cache
   * is full (maxEntries accepted requests within two skew windows), which fails safe: a 401.
   */
  accept(nonce: string, t: number, nowS = Date.now() / 1000): boolean {
    if (nowS >= this.nextSweepS) {
      // Insertion order is nearly time order (API clocks differ by at most the skew), so the sweep
      // stops at the first live entry; an expired one behind it goes at a later sweep.
      for (const [n, forgetAt] of this.seen) {
        if (forgetAt >= nowS) break;
        this.seen.delete(n);
      }
      this.nextSweepS = nowS + 1;
    }
    if (this.seen.has(nonce)) return false;
    if (this.seen.size >= this.maxEntries) return false;
    this.seen.set(nonce, t + SIGNATURE_SKEW_S);
    return true;
  }
}
