// A streaming tar reader for adapter uploads: 512-byte headers, file data written straight to
// disk, nothing held in memory beyond one chunk. ustar, pax (`path` records) and GNU long names
// are understood; links, devices and FIFOs are refused.
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { once } from 'node:events';
import { AdapterValidationError } from './errors.js';
import type { EntryBook } from './entries.js';

const BLOCK = 512;
const malformed = (why: string): AdapterValidationError =>
  new AdapterValidationError('malformed_archive', `not a valid tar archive: ${why}`);

/** Exact-size reads over an async stream of chunks. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(input: Readable) {
    this.it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    }
    return this.buf.length >= n;
  }

  /** Exactly n bytes, or null at a clean end of input (nothing buffered). */
  async read(n: number): Promise<Buffer | null> {
    if (!(await this.fill(n))) {
      if (this.buf.length === 0) return null;
      throw malformed('truncated');
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Passes n bytes to `sink` chunk by chunk. */
  async pipe(n: number, sink: (chunk: Buffer) => Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill(1))) throw malformed('truncated file data');
      const take = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(take.length);
      left -= take.length;
      await sink(take);
    }
  }
}

function octal(h: Buffer, at: number, len: number, what: string): number {
  if (h[at]! & 0x80) {
    // GNU base-256 for large values: far beyond any adapter limit, but parse rather than misread.
    let v = 0;
    for (let i = at + 1; i < at + len; i++) v = v * 256 + h[i]!;
    return v;
  }
  const s = h
    .subarray(at, at + len)
    .toString('latin1')
    .replace(/\0.*$/s, '')
    .trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw malformed(`bad ${what} field`);
  return parseInt(s, 8);
}

const cstr = (h: Buffer, at: number, len: number): string => {
  const b = h.subarray(at, at + len);
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? len : z).toString('utf8');
};

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return sum === octal(h, 148, 8, 'checksum');
}

function paxPath(data: Buffer): string | undefined {
  let at = 0;
  let path: string | undefined;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    if (sp < 0) throw malformed('bad pax record');
    const len = Number(data.subarray(at, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length) throw malformed('bad pax record length');
    const rec = data.subarray(sp + 1, at + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0 && rec.slice(0, eq) === 'path') path = rec.slice(eq + 1);
    at += len;
  }
  return path;
}

/** Extracts a (decompressed) tar stream into destDir through `book`'s checks; returns the files written. */
export async function extractTar(input: Readable, destDir: string, book: EntryBook): Promise<string[]> {
  const r = new ByteReader(input);
  const written: string[] = [];
  let longName: string | undefined;
  for (;;) {
    const h = await r.read(BLOCK);
    if (h === null) throw malformed('missing end-of-archive blocks');
    if (h.every((b) => b === 0)) return written; // end of archive (trailing blocks and padding are ignored)
    if (!checksumOk(h)) throw malformed('header checksum mismatch');
    const size = octal(h, 124, 12, 'size');
    const type = String.fromCharCode(h[156]!);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L' || type === 'g') {
      if (size > 64 * 1024) throw malformed('extended header too large');
      const data = (await r.read(padded)) ?? Buffer.alloc(0);
      if (type === 'x') longName = paxPath(data.subarray(0, size)) ?? longName;
      if (type === 'L') longName = cstr(data, 0, size);
      continue;
    }
    const prefix = h.subarray(257, 262).toString('latin1') === 'ustar' ? cstr(h, 345, 155) : '';
    const name = longName ?? (prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100));
    longName = undefined;
    if (type === '5') {
      book.add(name, true);
      if (padded) await r.read(padded);
      continue;
    }
    if (type !== '0' && type !== '\0' && type !== '7') {
      const what =
        type === '1'
          ? 'a hard link'
          : type === '2'
            ? 'a symbolic link'
            : type === '3' || type === '4'
              ? 'a device'
              : type === '6'
                ? 'a FIFO'
                : `an entry of type ${JSON.stringify(type)}`;
      throw new AdapterValidationError(
        'unsafe_archive_entry',
        `archive entry ${JSON.stringify(name)} is ${what}; only regular files are allowed`,
      );
    }
    const file = book.add(name, false)!;
    book.grow(size);
    const out = createWriteStream(join(destDir, file), { flags: 'wx' });
    try {
      await r.pipe(size, async (chunk) => {
        if (!out.write(chunk)) await once(out, 'drain');
      });
    } finally {
      out.end();
      await once(out, 'close');
    }
    written.push(file);
    if (padded > size) await r.read(padded - size);
  }
}
