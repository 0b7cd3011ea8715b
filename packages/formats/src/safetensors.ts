// safetensors: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
// We parse only the header in TypeScript (for validation and tensor descriptors); the native
// addon memory-maps the data itself.
import { open, stat, writeFile } from 'node:fs/promises';
import { EngineError } from './errors.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  path: string;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  fileSize: number;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function bad(path: string, why: string): EngineError {
  return new EngineError('INVALID_SAFETENSORS', `${path}: ${why}`);
}

/** Parses and fully validates a safetensors header against the file size; `label` (default: the path) prefixes error messages. */
export async function readSafetensorsHeader(path: string, label = path): Promise<SafetensorsHeader> {
  const fileSize = (await stat(path)).size;
  if (fileSize < 8) throw bad(label, `file is ${fileSize} bytes, too short for a safetensors header`);
  const fh = await open(path, 'r');
  try {
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > fileSize) {
      throw bad(
        label,
        `header length ${headerLen} does not fit in a ${fileSize}-byte file (truncated or not safetensors)`,
      );
    }
    const headerBuf = Buffer.alloc(headerLen);
    await fh.read(headerBuf, 0, headerLen, 8);
    return parseSafetensorsHeader(label, headerBuf, fileSize);
  } finally {
    await fh.close();
  }
}

export function parseSafetensorsHeader(path: string, headerBuf: Uint8Array, fileSize: number): SafetensorsHeader {
  const dataStart = 8 + headerBuf.length;
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(headerBuf).toString('utf8'));
  } catch (e) {
    throw bad(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad(path, 'header is not a JSON object');
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  const ranges: Array<[number, number, string]> = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const v = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof v !== 'object' || v === null) throw bad(path, `tensor ${name}: entry is not an object`);
    const dtype = v.dtype as SafetensorsDtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES))
      throw bad(path, `tensor ${name}: unsupported dtype ${String(v.dtype)}`);
    if (!Array.isArray(v.shape) || !v.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(path, `tensor ${name}: shape must be a list of non-negative integers`);
    }
    const offs = v.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offs[1] < offs[0]
    ) {
      throw bad(path, `tensor ${name}: data_offsets must be [begin, end] with begin <= end`);
    }
    const shape = v.shape as number[];
    const numel = shape.reduce((a, b) => a * b, 1);
    const byteLength = (offs[1] as number) - (offs[0] as number);
    if (numel * DTYPE_BYTES[dtype] !== byteLength) {
      throw bad(
        path,
        `tensor ${name}: shape [${shape.join(', ')}] of ${dtype} needs ${numel * DTYPE_BYTES[dtype]} bytes but data_offsets span ${byteLength}`,
      );
    }
    const offset = dataStart + (offs[0] as number);
    if (offset + byteLength > fileSize) {
      throw bad(
        path,
        `tensor ${name}: data ends at byte ${offset + byteLength} but the file has ${fileSize} bytes (truncated?)`,
      );
    }
    tensors.set(name, { name, dtype, shape, offset, byteLength });
    ranges.push([offs[0] as number, offs[1] as number, name]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur[0] < prev[1]) throw bad(path, `tensors ${prev[2]} and ${cur[2]} overlap`);
  }
  return { path, tensors, metadata, fileSize };
}

export interface TensorToWrite {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Uint8Array;
}

/** Serializes tensors into the safetensors format (header padded to 8 bytes, as the reference writer does). */
export function encodeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name]!;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let headerStr = JSON.stringify(header);
  while ((8 + Buffer.byteLength(headerStr)) % 8 !== 0) headerStr += ' ';
  const headerBytes = Buffer.from(headerStr, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + off);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const d = tensors[name]!.data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), pos);
    pos += d.byteLength;
  }
  return out;
}

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFile(path, encodeSafetensors(tensors, metadata));
}

/** float32 -> bfloat16 bits with round-to-nearest-even (as torch does). */
export function f32ToBf16(src: Float32Array): Uint16Array {
  const u32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u32[i]!;
    if ((x & 0x7fffffff) > 0x7f800000) {
      out[i] = (x >>> 16) | 0x40;
      continue;
    } // NaN stays NaN
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** bfloat16 bits -> float32. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return new Float32Array(out.buffer);
}
