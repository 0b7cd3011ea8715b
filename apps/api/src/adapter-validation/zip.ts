// A zip reader for adapter uploads that never holds the archive in memory: the upload is spooled to
// a file (the central directory is at its end), then each entry is streamed from the file through
// inflate to disk, counting bytes as they come out, so a zip bomb or a lying size field stops at
// the limit instead of filling the disk. Symlinks (unix mode in the external attributes),
// encrypted entries and ZIP64 archives are refused.
import { createReadStream, createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { AdapterValidationError } from './errors.js';
import type { EntryBook } from './entries.js';

const SIG_LOCAL = 0x04034b50,
  SIG_CENTRAL = 0x02014b50,
  SIG_EOCD = 0x06054b50;
const malformed = (why: string): AdapterValidationError =>
  new AdapterValidationError('malformed_archive', `not a valid zip archive: ${why}`);

interface CentralEntry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  compressed: number;
  size: number;
  local: number;
  mode: number;
  isDir: boolean;
}

async function readAt(fh: FileHandle, pos: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  const { bytesRead } = await fh.read(b, 0, len, pos);
  if (bytesRead !== len) throw malformed('truncated');
  return b;
}

async function centralDirectory(fh: FileHandle, fileSize: number, maxFiles: number): Promise<CentralEntry[]> {
  if (fileSize < 22) throw malformed('too short');
  const tailLen = Math.min(fileSize, 22 + 65535);
  const tail = await readAt(fh, fileSize - tailLen, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--)
    if (tail.readUInt32LE(i) === SIG_EOCD) {
      eocd = i;
      break;
    }
  if (eocd < 0) throw malformed('no end-of-central-directory record (truncated or not a zip)');
  const count = tail.readUInt16LE(eocd + 10),
    cdSize = tail.readUInt32LE(eocd + 12),
    cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff)
    throw malformed('ZIP64 archives are not supported (use tar.gz or the presigned upload for very large adapters)');
  if (count > maxFiles) throw new AdapterValidationError('too_large', `the archive has more than ${maxFiles} entries`);
  if (cdOffset + cdSize > fileSize) throw malformed('central directory outside the file');
  const cd = await readAt(fh, cdOffset, cdSize);
  const out: CentralEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > cd.length || cd.readUInt32LE(at) !== SIG_CENTRAL) throw malformed('bad central directory entry');
    const nameLen = cd.readUInt16LE(at + 28),
      extraLen = cd.readUInt16LE(at + 30),
      commentLen = cd.readUInt16LE(at + 32);
    if (at + 46 + nameLen > cd.length) throw malformed('central directory entry name outside the directory');
    const name = cd.subarray(at + 46, at + 46 + nameLen).toString('utf8');
    const madeBy = cd.readUInt16LE(at + 4) >> 8;
    const attrs = cd.readUInt32LE(at + 38);
    const mode = madeBy === 3 ? attrs >>> 16 : 0; // unix
    out.push({
      name,
      flags: cd.readUInt16LE(at + 8),
      method: cd.readUInt16LE(at + 10),
      crc: cd.readUInt32LE(at + 16),
      compressed: cd.readUInt32LE(at + 20),
      size: cd.readUInt32LE(at + 24),
      local: cd.readUInt32LE(at + 42),
      mode,
      isDir: name.endsWith('/') || (mode & 0o170000) === 0o040000 || (madeBy === 0 && (attrs & 0x10) !== 0),
    });
    at += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** Counts bytes through a stream and computes their CRC-32, failing past `limit`. */
class Meter extends Transform {
  bytes = 0;
  crc = 0;
  constructor(
    private readonly onBytes: (n: number) => void,
    private readonly entryLimit: number,
    private readonly entry: string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    try {
      if (this.bytes > this.entryLimit)
        throw new AdapterValidationError(
          'malformed_archive',
          `not a valid zip archive: ${this.entry} expands beyond its declared size`,
        );
      this.onBytes(chunk.length);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.crc = zlib.crc32(chunk, this.crc);
    cb(null, chunk);
  }
}

/** Extracts a zip file on disk into destDir through `book`'s checks; returns the files written. */
export async function extractZipFile(
  zipPath: string,
  destDir: string,
  book: EntryBook,
  maxFiles: number,
): Promise<string[]> {
  const fh = await open(zipPath, 'r');
  const written: string[] = [];
  try {
    const size = (await fh.stat()).size;
    for (const e of await centralDirectory(fh, size, maxFiles)) {
      if ((e.mode & 0o170000) === 0o120000)
        throw new AdapterValidationError(
          'unsafe_archive_entry',
          `archive entry ${JSON.stringify(e.name)} is a symbolic link; only regular files are allowed`,
        );
      const file = book.add(e.name, e.isDir);
      if (file === null) continue;
      if (e.flags & 1)
        throw new AdapterValidationError(
          'unsafe_archive_entry',
          `archive entry ${JSON.stringify(e.name)} is encrypted`,
        );
      if (e.method !== 0 && e.method !== 8)
        throw malformed(`${e.name} uses compression method ${e.method} (only stored and deflate)`);
      const lh = await readAt(fh, e.local, 30);
      if (lh.readUInt32LE(0) !== SIG_LOCAL) throw malformed(`local header of ${e.name} is missing`);
      const start = e.local + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
      if (start + e.compressed > size) throw malformed(`data of ${e.name} runs past the end of the file`);
      const meter = new Meter((n) => book.grow(n), e.size, e.name);
      const source = createReadStream(zipPath, { start, end: start + e.compressed - 1 });
      const target = createWriteStream(join(destDir, file), { flags: 'wx' });
      try {
        if (e.compressed === 0) await new Promise<void>((res) => target.end(res));
        else if (e.method === 0) await pipeline(source, meter, target);
        else await pipeline(source, zlib.createInflateRaw(), meter, target);
      } catch (err) {
        if (err instanceof AdapterValidationError) throw err;
        throw malformed(`${e.name}: ${(err as Error).message}`);
      }
      if (meter.bytes !== e.size) throw malformed(`${e.name} has ${meter.bytes} bytes, its header says ${e.size}`);
      if (meter.crc >>> 0 !== e.crc >>> 0) throw malformed(`${e.name} fails its CRC-32 check`);
      written.push(file);
    }
    return written;
  } finally {
    await fh.close();
  }
}
