// Widening of stored tensor bytes (little-endian) to float32.
import { EngineError } from '../errors.js';

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function toFloat32(dtype: string, data: Uint8Array, label: string): Float32Array {
  const aligned = data.byteOffset % 4 === 0 ? data : new Uint8Array(data);
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer.slice(aligned.byteOffset, aligned.byteOffset + aligned.byteLength));
    case 'BF16': {
      const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
      const u32 = new Uint32Array(u16.length);
      for (let i = 0; i < u16.length; i++) u32[i] = u16[i]! << 16;
      return new Float32Array(u32.buffer);
    }
    case 'F16': {
      const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
      const out = new Float32Array(u16.length);
      for (let i = 0; i < u16.length; i++) out[i] = f16ToF32(u16[i]!);
      return out;
    }
    default:
      throw new EngineError('ADAPTER_SHAPE', `tensor ${label} has dtype ${dtype}; LoRA weights must be F32, F16 or BF16`);
  }
}
