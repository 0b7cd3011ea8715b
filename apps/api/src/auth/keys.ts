// API keys: lpx_<8 char prefix>_<32 char secret>, stored only as the sha256 of the whole key.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Scope } from '../db/schema.js';

export const SCOPES: readonly Scope[] = ['inference', 'adapters:write', 'admin'];

const KEY_FORMAT = /^lpx_([a-f0-9]{8})_([a-f0-9]{32})$/;

export interface NewKey {
  key: string;
  prefix: string;
  hash: string;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function generateKey(): NewKey {
  const prefix = randomBytes(4).toString('hex');
  const key = `lpx_${prefix}_${randomBytes(16).toString('hex')}`;
  return { key, prefix, hash: hashKey(key) };
}

export function looksLikeKey(s: string): boolean {
  return KEY_FORMAT.test(s);
}

/** Compares two strings without leaking where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}
