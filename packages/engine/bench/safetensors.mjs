// Minimal safetensors reader/writer for the bench scripts (plain ESM, no build step).
// Format: u64 LE header length N, N bytes of JSON header (padded with spaces so that the data
// starts 8-byte aligned), then raw little-endian tensor bytes; data_offsets are relative to the
// start of the data section. We write the file ourselves instead of depending on a Python stack.
import { openSync, writeSync, closeSync, readSync, fstatSync } from 'node:fs';

export const DTYPE_BYTES = { F32: 4, BF16: 2, F16: 2, F64: 8, I32: 4, I64: 8, U8: 1 };

/**
 * Writes a safetensors file tensor by tensor, so peak memory is one tensor, not the whole model.
 * `tensors`: [{ name, dtype, shape, produce: () => Uint8Array|TypedArray (exactly the bytes) }].
 */
export function writeSafetensors(path, tensors, metadata = { format: 'pt' }) {
  const header = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = n * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const fd = openSync(path, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, json);
    for (const t of tensors) {
      const data = t.produce();
      const u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const [b, e] = header[t.name].data_offsets;
      if (u8.byteLength !== e - b) throw new Error(`${t.name}: produced ${u8.byteLength} bytes, expected ${e - b}`);
      writeAll(fd, u8);
    }
  } finally {
    closeSync(fd);
  }
}

/** writeSync may write less than asked for large buffers; loop until done. */
export function writeAll(fd, u8) {
  let off = 0;
  while (off < u8.byteLength) off += writeSync(fd, u8, off, Math.min(u8.byteLength - off, 1 << 30));
}

/** Opens a safetensors file and returns its header plus a lazy tensor reader. */
export function openSafetensors(path) {
  const fd = openSync(path, 'r');
  const size = fstatSync(fd).size;
  const lenBuf = Buffer.alloc(8);
  readSync(fd, lenBuf, 0, 8, 0);
  const n = Number(lenBuf.readBigUInt64LE(0));
  if (8 + n > size) throw new Error(`${path}: bad safetensors header length ${n}`);
  const hbuf = Buffer.alloc(n);
  readSync(fd, hbuf, 0, n, 8);
  const header = JSON.parse(hbuf.toString('utf8'));
  const dataStart = 8 + n;
  const tensors = new Map();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    tensors.set(name, {
      name,
      dtype: v.dtype,
      shape: v.shape,
      begin: dataStart + v.data_offsets[0],
      end: dataStart + v.data_offsets[1],
    });
  }
  return {
    tensors,
    /** Raw bytes of one tensor (a fresh, 8-byte-aligned buffer, so typed views are always legal). */
    readBytes(name) {
      const t = tensors.get(name);
      if (!t) throw new Error(`${path}: no tensor ${name}`);
      const out = new Uint8Array(t.end - t.begin);
      let off = 0;
      while (off < out.length) {
        const r = readSync(fd, out, off, Math.min(out.length - off, 1 << 30), t.begin + off);
        if (r <= 0) throw new Error(`${path}: short read in ${name}`);
        off += r;
      }
      return out;
    },
    /** Tensor as Float32Array (BF16/F16 widened exactly). */
    readF32(name) {
      const t = tensors.get(name);
      const b = this.readBytes(name);
      if (t.dtype === 'F32') return new Float32Array(b.buffer, 0, b.length / 4);
      if (t.dtype === 'BF16') return bf16ToF32(new Uint16Array(b.buffer, 0, b.length / 2));
      if (t.dtype === 'F16') return f16ToF32(new Uint16Array(b.buffer, 0, b.length / 2));
      throw new Error(`${name}: unsupported dtype ${t.dtype}`);
    },
    close() {
      closeSync(fd);
    },
  };
}

/** float32 -> bfloat16, round to nearest even (NaN kept quiet), like torch's .to(torch.bfloat16). */
export function f32ToBf16(src) {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    else out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** bfloat16 -> float32 is exact: the bf16 bits are the high half of the float32. */
export function bf16ToF32(src) {
  const out = new Float32Array(src.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return out;
}

export function f16ToF32(src) {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}
