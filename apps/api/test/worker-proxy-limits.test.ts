// Tenant limits and descriptor signing (pure, with a controlled clock).
import { ManualClock } from '@loraplex/common';
import { describe, expect, it } from 'vitest';
import {
  DescriptorSigner,
  signDescriptor,
  verifyDescriptor,
  type AdapterTarget,
} from '../src/worker-proxy/descriptor.js';
import { TenantLimits, type Limited } from '../src/worker-proxy/tenant-limits.js';

const isLimited = (r: unknown): r is Limited => typeof r === 'object' && r !== null && 'retryAfterS' in r;

describe('TenantLimits', () => {
  it('limits concurrent requests per tenant and frees a slot on release (once)', () => {
    const l = new TenantLimits({ maxConcurrent: 2, tokensPerMinute: 0 });
    const a = l.acquire('t1'),
      b = l.acquire('t1');
    expect(typeof a).toBe('function');
    expect(typeof b).toBe('function');
    const c = l.acquire('t1');
    expect(isLimited(c) && c).toEqual({ retryAfterS: 1, reason: 'concurrency' });
    expect(typeof l.acquire('t2')).toBe('function'); // other tenants are not affected
    (a as () => void)();
    (a as () => void)(); // a second release must not free another slot
    expect(typeof l.acquire('t1')).toBe('function');
    expect(isLimited(l.acquire('t1'))).toBe(true);
  });

  it('refuses a tenant over its tokens per minute until the tokens age out, with the right Retry-After', () => {
    const clock = new ManualClock(1_000_000_000);
    const l = new TenantLimits({ maxConcurrent: 0, tokensPerMinute: 1000 }, clock);
    l.addTokens('t', 600);
    clock.advance(20_000);
    l.addTokens('t', 500);
    const r = l.acquire('t');
    // 1100 used: the first 600 leave the window 40 s from now.
    expect(isLimited(r) && r).toEqual({ retryAfterS: 40, reason: 'tokens_per_minute' });
    expect(typeof l.acquire('other')).toBe('function');
    clock.advance(39_000);
    expect(isLimited(l.acquire('t'))).toBe(true);
    clock.advance(1_000);
    expect(l.tokensUsed('t')).toBe(500);
    expect(typeof l.acquire('t')).toBe('function');
  });

  it('a slot ended with its tokens frees the concurrency slot once and charges the tokens', () => {
    const clock = new ManualClock(1_000_000_000);
    const l = new TenantLimits({ maxConcurrent: 1, tokensPerMinute: 1000 }, clock);
    const a = l.acquire('t') as (tokens?: number) => void;
    expect(isLimited(l.acquire('t'))).toBe(true);
    a(300);
    a(); // a second end frees nothing more
    expect(l.tokensUsed('t')).toBe(300);
    const b = l.acquire('t') as (tokens?: number) => void;
    expect(isLimited(l.acquire('t'))).toBe(true);
    b(800);
    expect(isLimited(l.acquire('t')) && l.acquire('t')).toMatchObject({ reason: 'tokens_per_minute' });
  });

  it('without any limit, every request gets the same no-op slot', () => {
    const l = new TenantLimits({ maxConcurrent: 0, tokensPerMinute: Infinity });
    const a = l.acquire('t'),
      b = l.acquire('u');
    expect(typeof a).toBe('function');
    expect(a).toBe(b);
  });

  it('honours per-tenant overrides', () => {
    const l = new TenantLimits({
      maxConcurrent: 1,
      tokensPerMinute: 0,
      forTenant: (t) => (t === 'big' ? { maxConcurrent: 3 } : undefined),
    });
    expect([l.acquire('big'), l.acquire('big'), l.acquire('big')].every((r) => typeof r === 'function')).toBe(true);
    expect(isLimited(l.acquire('big'))).toBe(true);
    l.acquire('small');
    expect(isLimited(l.acquire('small'))).toBe(true);
  });
});

const target: AdapterTarget = {
  id: 'ad_0123456789abcdef',
  baseModel: 'tiny-llama',
  rank: 8,
  storage: { kind: 's3', bucket: 'loraplex', prefix: 'adapters/tn_1/ad_0123456789abcdef/' },
  files: [{ name: 'adapter_config.json', size: 612, sha256: 'a'.repeat(64) }],
};

describe('adapter descriptor', () => {
  it('signs base64url(JSON).base64url(HMAC-SHA256(secret, payload)) with the contract fields', async () => {
    const h = signDescriptor(target, 's3cret', 2_000_000_000);
    const [payload, sig] = h.split('.');
    expect(payload).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8'))).toEqual({
      v: 1,
      id: target.id,
      base_model: 'tiny-llama',
      rank: 8,
      storage: target.storage,
      files: target.files,
      exp: 2_000_000_000,
    });
    const { createHmac } = await import('node:crypto');
    expect(sig).toBe(createHmac('sha256', 's3cret').update(payload!).digest('base64url'));
  });

  it('verifies only an intact, unexpired descriptor signed with the same secret', () => {
    const h = signDescriptor(target, 's3cret', 1000);
    expect(verifyDescriptor(h, 's3cret', 1000)?.id).toBe(target.id);
    expect(verifyDescriptor(h, 's3cret', 1059)).not.toBeNull(); // 60 s skew
    expect(verifyDescriptor(h, 's3cret', 1061)).toBeNull();
    expect(verifyDescriptor(h, 'other', 1000)).toBeNull();
    const [p, s] = h.split('.');
    const forged = Buffer.from(Buffer.from(p!, 'base64url').toString().replace('tiny-llama', 'tiny-qwen2')).toString(
      'base64url',
    );
    expect(verifyDescriptor(`${forged}.${s}`, 's3cret', 1000)).toBeNull();
    expect(verifyDescriptor('garbage', 's3cret', 1000)).toBeNull();
  });

  it('reuses a signature for half its lifetime, then signs a fresh one', () => {
    const signer = new DescriptorSigner('s3cret', 100);
    const a = signer.header(target, 1_000_000);
    expect(signer.header(target, 1_000_000 + 49_000)).toBe(a);
    const b = signer.header(target, 1_000_000 + 51_000);
    expect(b).not.toBe(a);
    expect(verifyDescriptor(b, 's3cret', 1_000 + 51)?.exp).toBe(1_000 + 51 + 100);
    expect(() => new DescriptorSigner('', 10)).toThrow(/secret/);
  });
});
