import { describe, expect, it } from 'vitest';
import { ReplayCache, SIGNATURE_SKEW_S, signRequest, verifyRequestSignature } from '../src/index.js';

const SECRET = 'worker-secret';
const NONCE = 'abcdefghijklmnop';

describe('platform request signature', () => {
  it('verifies what it signed, for the same method, path and body', () => {
    const h = signRequest(SECRET, 'post', '/generate?x=1', '{"inputs":"hi"}', 1000.7, NONCE);
    expect(h).toMatch(/^v1,t=1000,n=abcdefghijklmnop,s=[A-Za-z0-9_-]{43}$/);
    expect(verifyRequestSignature(h, SECRET, 'POST', '/generate?x=1', Buffer.from('{"inputs":"hi"}'), 1000)).toEqual({
      ok: true,
      t: 1000,
      nonce: NONCE,
    });
  });

  it('refuses a tampered method, path, body, secret or signature', () => {
    const h = signRequest(SECRET, 'POST', '/generate', 'body', 1000, NONCE);
    const bad = { ok: false, reason: 'bad signature' };
    expect(verifyRequestSignature(h, SECRET, 'GET', '/generate', 'body', 1000)).toEqual(bad);
    expect(verifyRequestSignature(h, SECRET, 'POST', '/generate_stream', 'body', 1000)).toEqual(bad);
    expect(verifyRequestSignature(h, SECRET, 'POST', '/generate', 'bodY', 1000)).toEqual(bad);
    expect(verifyRequestSignature(h, 'other', 'POST', '/generate', 'body', 1000)).toEqual(bad);
    const flipped = h.slice(0, -2) + (h.at(-2) === 'A' ? 'B' : 'A') + h.at(-1);
    expect(verifyRequestSignature(flipped, SECRET, 'POST', '/generate', 'body', 1000)).toEqual(bad);
    expect(verifyRequestSignature(h.replace('t=1000', 't=1001'), SECRET, 'POST', '/generate', 'body', 1000)).toEqual(
      bad,
    );
    expect(verifyRequestSignature('v1,garbage', SECRET, 'POST', '/generate', 'body', 1000)).toEqual({
      ok: false,
      reason: 'malformed signature header',
    });
  });

  it('accepts a clock skew of SIGNATURE_SKEW_S either way, no more', () => {
    const h = signRequest(SECRET, 'POST', '/', '', 1000, NONCE);
    expect(verifyRequestSignature(h, SECRET, 'POST', '/', '', 1000 + SIGNATURE_SKEW_S).ok).toBe(true);
    expect(verifyRequestSignature(h, SECRET, 'POST', '/', '', 1000 - SIGNATURE_SKEW_S).ok).toBe(true);
    const late = verifyRequestSignature(h, SECRET, 'POST', '/', '', 1000 + SIGNATURE_SKEW_S + 1);
    expect(late).toEqual({ ok: false, reason: 'timestamp outside the allowed clock skew' });
    expect(verifyRequestSignature(h, SECRET, 'POST', '/', '', 1000 - SIGNATURE_SKEW_S - 1).ok).toBe(false);
  });

  it('signs nothing without a secret or with a malformed nonce', () => {
    expect(() => signRequest('', 'POST', '/', '')).toThrow(/secret/);
    expect(() => signRequest(SECRET, 'POST', '/', '', 1000, 'short')).toThrow(/nonce/);
  });

  it('accepts a nonce once within the window', () => {
    const cache = new ReplayCache(2);
    expect(cache.accept('n1', 1000, 1000)).toBe(true);
    expect(cache.accept('n1', 1000, 1001)).toBe(false);
    expect(cache.accept('n2', 1000, 1001)).toBe(true);
    expect(cache.accept('n3', 1000, 1001)).toBe(false); // full: fails safe
    expect(cache.accept('n3', 1100, 1100)).toBe(true); // n1 and n2 expired and were swept
    expect(cache.size).toBe(1);
  });
});

// Moved from apps/worker/test/auth.test.ts with the code it tests.
describe('the platform signature', () => {
  it('binds method, path with query, body and time, and verifies within the skew only', () => {
    const h = signRequest('s', 'POST', '/v1/completions?x=1', '{"a":1}', 1_000_000, 'nonce-nonce-nonce-1');
    expect(h).toMatch(/^v1,t=1000000,n=nonce-nonce-nonce-1,s=[A-Za-z0-9_-]{43}$/);
    expect(
      verifyRequestSignature(
        h,
        's',
        'POST',
        '/v1/completions?x=1',
        Buffer.from('{"a":1}'),
        1_000_000 + SIGNATURE_SKEW_S,
      ),
    ).toEqual({ ok: true, t: 1_000_000, nonce: 'nonce-nonce-nonce-1' });
    expect(
      verifyRequestSignature(h, 's', 'POST', '/v1/completions?x=1', '{"a":1}', 1_000_000 + SIGNATURE_SKEW_S + 1).ok,
    ).toBe(false);
    expect(verifyRequestSignature(h, 's', 'POST', '/v1/completions', '{"a":1}', 1_000_000).ok).toBe(false);
    expect(verifyRequestSignature(h, 's', 'post', '/v1/completions?x=1', '{"a":1}', 1_000_000).ok).toBe(true);
    expect(() => signRequest('', 'GET', '/', '')).toThrow(/secret/);
  });

  it('the replay cache refuses a nonce twice, forgets it once its timestamp is out of the window, and fails closed when full', () => {
    const c = new ReplayCache(2);
    expect(c.accept('n1', 100, 100)).toBe(true);
    expect(c.accept('n1', 100, 150)).toBe(false);
    expect(c.accept('n2', 150, 150)).toBe(true);
    expect(c.accept('n3', 150, 150)).toBe(false);
    expect(c.accept('n3', 170, 100 + SIGNATURE_SKEW_S + 1)).toBe(true);
    expect(c.size).toBe(2);
  });
});
