// Which archive entries an adapter upload may contain, and where they land. Everything else is
// refused before a byte is written: `..` components, absolute paths, drive letters, backslashes,
// NUL bytes, nesting beyond one wrapping folder, names outside the allow list, duplicates.
import { AdapterValidationError } from './errors.js';

/** Files an adapter upload may hold. */
export const ALLOWED_FILES = [
  'adapter_config.json',
  'adapter_model.safetensors',
  'adapter_model.bin',
  'tokenizer_config.json',
  'README.md',
] as const;
export type AllowedFile = (typeof ALLOWED_FILES)[number];

export interface ArchiveLimits {
  /** Entries (files and folders) at most. */
  maxFiles: number;
  /** Bytes once extracted, all files together. */
  maxUncompressedBytes: number;
  /** Bytes of the archive itself as uploaded. */
  maxArchiveBytes: number;
}

const unsafe = (name: string, why: string): AdapterValidationError =>
  new AdapterValidationError('unsafe_archive_entry', `archive entry ${JSON.stringify(name)}: ${why}`);

/**
 * The file an entry name stands for, or null for a folder entry. Names are checked as raw strings
 * (no path.normalize, which would turn `a/../b` into `b`).
 */
export function entryFile(name: string, isDir: boolean): AllowedFile | null {
  if (name.includes('\0')) throw unsafe(name, 'contains a NUL byte');
  if (name.includes('\\')) throw unsafe(name, 'contains a backslash');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw unsafe(name, 'is an absolute path');
  const parts = name
    .replace(/^\.\//, '')
    .split('/')
    .filter((p, i, all) => !(p === '' && i === all.length - 1));
  if (parts.some((p) => p === '..')) throw unsafe(name, 'leaves the upload directory (..)');
  if (parts.some((p) => p === '' || p === '.')) throw unsafe(name, 'has an empty or "." path component');
  if (isDir) {
    if (parts.length > 1) throw unsafe(name, 'nests folders (only one wrapping folder is allowed)');
    return null;
  }
  if (parts.length > 2) throw unsafe(name, 'nests folders (only one wrapping folder is allowed)');
  const file = parts[parts.length - 1]!;
  if (!(ALLOWED_FILES as readonly string[]).includes(file))
    throw unsafe(name, `is not an adapter file (allowed: ${ALLOWED_FILES.join(', ')})`);
  return file as AllowedFile;
}

/** Tracks entries across an archive: duplicates, entry count, one consistent wrapping folder. */
export class EntryBook {
  private readonly seen = new Set<string>();
  private folder: string | null | undefined;
  private count = 0;
  bytes = 0;

  constructor(private readonly limits: ArchiveLimits) {}

  /** Registers an entry; returns the file to write, or null for a folder. */
  add(name: string, isDir: boolean): AllowedFile | null {
    if (++this.count > this.limits.maxFiles)
      throw new AdapterValidationError('too_large', `the archive has more than ${this.limits.maxFiles} entries`);
    const file = entryFile(name, isDir);
    if (file === null) return null;
    const parts = name.replace(/^\.\//, '').split('/');
    const folder = parts.length === 2 ? parts[0]! : null;
    if (this.folder !== undefined && this.folder !== folder)
      throw unsafe(name, 'is not in the same folder as the other files');
    this.folder = folder;
    if (this.seen.has(file)) throw unsafe(name, 'appears twice');
    this.seen.add(file);
    return file;
  }

  /** Counts extracted bytes; throws once the total passes the limit (a zip bomb stops here). */
  grow(n: number): void {
    this.bytes += n;
    if (this.bytes > this.limits.maxUncompressedBytes)
      throw new AdapterValidationError(
        'too_large',
        `the archive expands to more than ${this.limits.maxUncompressedBytes} bytes`,
      );
  }
}
