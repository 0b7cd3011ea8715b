import { describe, expect, it } from 'vitest';
import {
  adapterDescriptor,
  DESCRIPTOR_SKEW_S,
  openDescriptor,
  signDescriptor,
  verifyDescriptor,
  type AdapterDescriptor,
} from '../src/index.js';

const SECRET = 's3cret';
const descriptor: AdapterDescriptor = {
  v: 1,
  id: 'ad_0123456789abcdef',
  base_model: 'tiny-llama',
  rank: 8,
  storage: { kind: 's3', bucket: 'loraplex', prefix: 'adapters/ad_0123456789abcdef/' },
  files: [
    { name: 'adapter_config.json', size: 612, sha256: 'a'.repeat(64) },
    { name: 'adapter_model.safetensors', size: 4096, sha256: 'b'.repeat(64) },
  ],
  exp: 1000,
};

describe('signed adapter descriptor', () => {
  it('round-trips: base64url(JSON).base64url(HMAC-SHA256(secret, payload))', () => {
    const h = signDescriptor(descriptor, SECRET);
    const [payload] = h.split('.');
    expect(JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8'))).toEqual(descriptor);
    expect(verifyDescriptor(h, SECRET, 1000)).toEqual({ ok: true, descriptor });
  });

  it('refuses another secret, a forged payload, garbage and an expired descriptor', () => {
    const h = signDescriptor(descriptor, SECRET);
    expect(verifyDescriptor(h, 'other', 1000)).toEqual({ ok: false, reason: 'bad signature' });
    const [p, s] = h.split('.');
    const forged = Buffer.from(Buffer.from(p!, 'base64url').toString().replace('tiny-llama', 'tiny-qwen2')).toString(
      'base64url',
    );
    expect(verifyDescriptor(`${forged}.${s}`, SECRET, 1000)).toEqual({ ok: false, reason: 'bad signature' });
    expect(verifyDescriptor('garbage', SECRET, 1000)).toEqual({ ok: false, reason: 'not <payload>.<signature>' });
    expect(verifyDescriptor(`${h}.x`, SECRET, 1000)).toEqual({ ok: false, reason: 'not <payload>.<signature>' });
    expect(verifyDescriptor(h, SECRET, 1000 + DESCRIPTOR_SKEW_S).ok).toBe(true);
    expect(verifyDescriptor(h, SECRET, 1000 + DESCRIPTOR_SKEW_S + 1)).toEqual({ ok: false, reason: 'expired' });
  });

  it('refuses a correctly signed payload that does not follow the schema', () => {
    const h = signDescriptor(
      { ...descriptor, files: [descriptor.files[0]!, { name: '../etc/passwd', size: 1, sha256: 'c'.repeat(64) }] },
      SECRET,
    );
    const r = verifyDescriptor(h, SECRET, 1000);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/^malformed payload/);
    // Its signature is intact: openDescriptor gives the payload to whoever checks it less strictly.
    expect(openDescriptor(h, SECRET).ok).toBe(true);
    expect(adapterDescriptor.safeParse({ ...descriptor, storage: { kind: 'dir', path: '' } }).success).toBe(false);
  });
});
