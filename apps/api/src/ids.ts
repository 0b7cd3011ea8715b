// Identifiers the API hands out: a type prefix and random lowercase hex.
import { randomBytes } from 'node:crypto';

const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

export const newTenantId = (): string => `tn_${hex(8)}`;
export const newKeyId = (): string => `key_${hex(8)}`;
/** Matches the worker's adapter name rule ^ad_[a-z0-9]{16,40}$ (contract §1). */
export const newAdapterId = (): string => `ad_${hex(12)}`;
export const newUploadId = (): string => `up_${hex(12)}`;

export const ADAPTER_ID = /^ad_[a-z0-9]{16,40}$/;
