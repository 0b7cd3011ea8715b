// A bounds-checked reader of zip archives as torch.save writes them (stored or deflated entries,
// ZIP64, CRC-32 checked on every read). Every failure is INVALID_CHECKPOINT naming the file.
import * as zlib from 'node:zlib';
import { EngineError } from './errors.js';

const MAX_DEFLATE_RATIO = 1032;

export interface ZipEntry {
  name: string;
  nameBytes: Uint8Array;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U32_MAX = 0xffffffff;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export class ZipArchive {
  readonly entries = new Map<string, ZipEntry>();
  private readonly order: ZipEntry[] = [];
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly label: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.readCentralDirectory();
  }

  /** The folder every entry lives in; like torch, taken from the first central-directory entry. */
  topFolder(): string {
    const first = this.order[0];
    if (!first) throw this.fail('zip archive has no entries');
    const folder = first.name.slice(0, Math.max(0, first.name.indexOf('/')));
    if (!folder) throw this.fail(`first zip entry "${first.name}" is not inside a folder`);
    const stray = this.order.find((e) => !e.name.startsWith(`${folder}/`));
    if (stray) throw this.fail(`zip entry "${stray.name}" is outside the archive folder "${folder}/"`);
    return folder;
  }

  /** Decompresses one entry and checks its CRC32; the result may alias the input (stored entries). */
  read(e: ZipEntry): Uint8Array {
    const at = e.localHeaderOffset;
    this.need(at, 30, `local header of ${e.name}`);
    if (this.u32(at) !== SIG_LOCAL)
      throw this.fail(`local header of ${e.name} is missing (bad offset or corrupted file)`);
    const nameLen = this.u16(at + 26);
    this.need(at + 30, nameLen, `local name of ${e.name}`);
    if (!sameBytes(this.bytes.subarray(at + 30, at + 30 + nameLen), e.nameBytes))
      throw this.fail(`local header name of ${e.name} does not match the central directory`);
    const dataStart = at + 30 + nameLen + this.u16(at + 28);
    this.need(dataStart, e.compressedSize, `data of ${e.name}`);
    const raw = this.bytes.subarray(dataStart, dataStart + e.compressedSize);
    let data: Uint8Array;
    if (e.method === 0) {
      if (e.compressedSize !== e.uncompressedSize)
        throw this.fail(
          `stored entry ${e.name} has compressed size ${e.compressedSize} != uncompressed size ${e.uncompressedSize}`,
        );
      data = raw;
    } else if (e.method === 8) {
      if (e.uncompressedSize > e.compressedSize * MAX_DEFLATE_RATIO + 1024)
        throw this.fail(
          `deflated entry ${e.name} claims ${e.uncompressedSize} bytes from ${e.compressedSize}, more than deflate can produce`,
        );
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.uncompressedSize) });
      } catch (err) {
        throw this.fail(`deflated entry ${e.name} does not decompress (${(err as Error).message})`);
      }
      if (data.length !== e.uncompressedSize)
        throw this.fail(
          `deflated entry ${e.name} decompresses to ${data.length} bytes, expected ${e.uncompressedSize}`,
        );
    } else {
      throw this.fail(
        `zip entry ${e.name} uses compression method ${e.method}; only stored (0) and deflate (8) are supported`,
      );
    }
    // A zero CRC means the writer skipped it (torch's compute_crc32=False), not that the data must hash to 0.
    if (e.crc32 !== 0 && crc32(data) !== e.crc32) throw this.fail(`CRC32 mismatch in ${e.name} (file is corrupted)`);
    return data;
  }

  private readCentralDirectory(): void {
    const len = this.bytes.length;
    if (len < 22) throw this.fail(`file is ${len} bytes, too short for a zip archive`);
    let eocd = len - 22; // the end record is followed only by its comment (at most 64 KiB)
    while (
      eocd >= Math.max(0, len - 22 - 0xffff) &&
      !(this.u32(eocd) === SIG_EOCD && eocd + 22 + this.u16(eocd + 20) <= len)
    )
      eocd--;
    if (eocd < Math.max(0, len - 22 - 0xffff))
      throw this.fail('zip end-of-central-directory record not found (file truncated?)');
    if (this.u16(eocd + 4) !== 0 || this.u16(eocd + 6) !== 0)
      throw this.fail('multi-disk zip archives are not supported');
    let count = this.u16(eocd + 10);
    let cdSize = this.u32(eocd + 12);
    let cdOffset = this.u32(eocd + 16);
    let cdLimit = eocd;
    // torch always writes the ZIP64 end records; they carry the authoritative 64-bit values.
    if (eocd >= 20 && this.u32(eocd - 20) === SIG_ZIP64_LOCATOR) {
      const z = this.u64(eocd - 12, 'ZIP64 end-of-central-directory offset');
      if (z + 56 > eocd - 20) throw this.fail('ZIP64 end-of-central-directory offset points outside the file');
      if (this.u32(z) !== SIG_ZIP64_EOCD) throw this.fail('ZIP64 end-of-central-directory record is missing');
      [count, cdSize, cdOffset, cdLimit] = [
        this.u64(z + 32, 'ZIP64 entry count'),
        this.u64(z + 40, 'ZIP64 directory size'),
        this.u64(z + 48, 'ZIP64 directory offset'),
        z,
      ];
    }
    if (cdOffset + cdSize > cdLimit)
      throw this.fail(
        `central directory (${cdSize} bytes at ${cdOffset}) runs past its end record (file truncated or corrupted)`,
      );
    if (count > cdSize / 46)
      throw this.fail(`zip claims ${count} entries but its central directory has only ${cdSize} bytes`);
    const end = cdOffset + cdSize;
    for (let n = 0, at = cdOffset; n < count; n++) {
      if (at + 46 > end || this.u32(at) !== SIG_CENTRAL)
        throw this.fail(`central directory entry ${n} is missing or has a bad signature`);
      const [nameLen, extraLen, commentLen] = [this.u16(at + 28), this.u16(at + 30), this.u16(at + 32)];
      const next = at + 46 + nameLen + extraLen + commentLen;
      if (next > end) throw this.fail(`central directory entry ${n} runs past the directory`);
      const nameBytes = this.bytes.subarray(at + 46, at + 46 + nameLen);
      let name: string;
      try {
        name = utf8.decode(nameBytes);
      } catch {
        throw this.fail(`central directory entry ${n} has a name that is not UTF-8`);
      }
      if (this.u16(at + 8) & 1) throw this.fail(`zip entry ${name} is encrypted`);
      if (this.entries.has(name)) throw this.fail(`zip entry ${name} appears twice`);
      const sizes = [this.u32(at + 24), this.u32(at + 20), this.u32(at + 42)]; // uncompressed, compressed, local header offset
      if (sizes.includes(U32_MAX)) this.applyZip64Extra(sizes, at + 46 + nameLen, extraLen, name);
      const entry = {
        name,
        nameBytes,
        method: this.u16(at + 10),
        crc32: this.u32(at + 16),
        uncompressedSize: sizes[0]!,
        compressedSize: sizes[1]!,
        localHeaderOffset: sizes[2]!,
      };
      this.entries.set(name, entry);
      this.order.push(entry);
      at = next;
    }
  }

  /** ZIP64 extra field (id 1): 64-bit values for exactly those fields stored as 0xFFFFFFFF, in field order. */
  private applyZip64Extra(fields: number[], at: number, len: number, name: string): void {
    for (let x = at; x + 4 <= at + len; x += 4 + this.u16(x + 2)) {
      if (this.u16(x) !== 1) continue;
      let p = x + 4;
      const end = Math.min(p + this.u16(x + 2), at + len);
      for (let i = 0; i < fields.length; i++) {
        if (fields[i] !== U32_MAX) continue;
        if (p + 8 > end) throw this.fail(`ZIP64 extra field of ${name} is too short`);
        fields[i] = this.u64(p, `ZIP64 value of ${name}`);
        p += 8;
      }
      return;
    }
    throw this.fail(`zip entry ${name} needs a ZIP64 extra field but has none`);
  }

  private u16(at: number): number {
    return this.view.getUint16(at, true);
  }

  private u32(at: number): number {
    return this.view.getUint32(at, true);
  }

  private u64(at: number, what: string): number {
    this.need(at, 8, what);
    const v = this.view.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`${what} is ${v}, too large`);
    return Number(v);
  }

  private need(at: number, n: number, what: string): void {
    if (at < 0 || n < 0 || at + n > this.bytes.length)
      throw this.fail(`${what} lies outside the file (truncated or corrupted)`);
  }

  private fail(why: string): EngineError {
    return new EngineError('INVALID_CHECKPOINT', `${this.label}: ${why}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

let crcTable: Uint32Array | undefined;
/** zlib.crc32 exists from node 20.15; the table version covers older 20.x. */
function crc32(data: Uint8Array): number {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(data) >>> 0;
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
    return n >>> 0;
  });
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
