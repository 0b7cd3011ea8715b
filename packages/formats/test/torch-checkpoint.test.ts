import { describe, it, expect } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { EngineError } from '../src/errors.js';
import { mulberry32 } from './helpers/random.js';
import { parseTorchCheckpoint, readTorchCheckpoint, type CheckpointTensor } from '../src/torch-checkpoint.js';
import {
  PickleBuilder,
  encodeStateDictPickle,
  f32Storage,
  writeTorchArchive,
  writeTorchCheckpoint,
  writeTorchZip,
  type CheckpointOptions,
  type TorchDtype,
  type TorchStorage,
  type TorchTensor,
} from './helpers/torch-checkpoint-writer.js';

// ------------------------------------------------------------------------------------------ helpers

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const fbPadding = (n: number) => concat(hex('4642'), Uint8Array.of(n & 0xff, n >> 8), new Uint8Array(n).fill(0x5a));
const unpack = (b64: string) => new Uint8Array(inflateRawSync(Buffer.from(b64, 'base64')));

function f32(t: CheckpointTensor | undefined): number[] {
  expect(t?.dtype).toBe('F32');
  return [...new Float32Array(t!.data.slice().buffer)];
}

function u16(t: CheckpointTensor | undefined): number[] {
  return [...new Uint16Array(t!.data.slice().buffer)];
}

/** Runs fn and returns the error, asserting it is the one kind parseTorchCheckpoint may throw. */
function invalidError(fn: () => unknown): EngineError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(EngineError);
  expect((caught as EngineError).code).toBe('INVALID_CHECKPOINT');
  return caught as EngineError;
}

function expectInvalid(bytes: Uint8Array, message: RegExp): void {
  const e = invalidError(() => parseTorchCheckpoint(bytes, 'ckpt.bin'));
  expect(e.message.startsWith('ckpt.bin: ')).toBe(true);
  expect(e.message).toMatch(message);
}

/** Reference strided gather: element i of the row-major view, index by index. */
function gather(values: readonly number[], shape: number[], stride: number[], offset: number): number[] {
  const n = shape.reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let rest = i;
    let at = offset;
    for (let d = shape.length - 1; d >= 0; d--) {
      at += (rest % shape[d]!) * stride[d]!;
      rest = Math.floor(rest / shape[d]!);
    }
    out.push(values[at]!);
  }
  return out;
}

/** Central-directory walk for layout assertions: name -> where the entry's data starts and its header offset. */
function listZip(
  bytes: Uint8Array,
): Array<{ name: string; dataOffset: number; centralOffset: number; method: number }> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const eocd = bytes.length - 22;
  const count = v.getUint16(eocd + 10, true);
  let at = v.getUint32(eocd + 16, true);
  const out = [];
  for (let i = 0; i < count; i++) {
    const nameLen = v.getUint16(at + 28, true);
    const local = v.getUint32(at + 42, true);
    const name = Buffer.from(bytes.subarray(at + 46, at + 46 + nameLen)).toString('utf8');
    const dataOffset = local + 30 + v.getUint16(local + 26, true) + v.getUint16(local + 28, true);
    out.push({ name, dataOffset, centralOffset: at, method: v.getUint16(at + 10, true) });
    at += 46 + nameLen + v.getUint16(at + 30, true) + v.getUint16(at + 32, true);
  }
  return out;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

// A LoRA-shaped adapter used by several tests: two contiguous matrices plus views over one shared storage.
function sampleAdapter(): Array<[string, TorchTensor]> {
  const shared = f32Storage(Array.from({ length: 24 }, (_, i) => i));
  return [
    ['base_model.model.q_proj.lora_A.weight', { storage: f32Storage([1.5, -2, 3.25, 4, 5, 6, 7, 8]), shape: [2, 4] }],
    [
      'base_model.model.q_proj.lora_B.weight',
      { storage: { dtype: 'F16', data: bytesOf(Uint16Array.of(0x3c00, 0xc000, 0x3800, 0x0000)) }, shape: [4, 1] },
    ],
    ['full', { storage: shared, shape: [4, 6] }],
    ['transposed', { storage: shared, shape: [6, 4], stride: [1, 6] }],
    ['slice', { storage: shared, shape: [2, 3], stride: [6, 2], storageOffset: 7 }],
  ];
}

// ------------------------------------------------------------------------------------ goldens

// Real torch.save outputs (torch 1.13.1, Debian python3-torch), raw-deflated and base64-encoded.
// mix:       OrderedDict of lora_A f16 randn(4,8), lora_B bf16 randn(8,4), t = m.t(), view = m[1:3, 2:5],
//            full = m = arange(24.).reshape(4,6), ex = tensor([7.]).expand(5), i64/i32 arange(5),
//            f64 arange(3), scalar tensor(3.5), empty zeros(0,3)
// module_sd: torch.nn.Linear(3, 2).state_dict() (OrderedDict with _metadata set through BUILD)
// shared:    {'a': base, 'b': base.view(2,3).t(), 'c': base, 'neg': tensor([-5, 70000, -70000, 2**40])}, base = arange(6.)
// legacy:    torch.save({'w': tensor([1., 2.])}, f, _use_new_zipfile_serialization=False)
const MIX_BIN = unpack(
  'lZZLbBtFGMc/2+tHnQclCWkKaQkQwGlTx6/YIWlsrwkmYULjbCg14eG4jpO1srHz2eO0FQIFpLjtoSoSPXCh6gEhDhzKQ6ilxC4C' +
    'VYJeAMEBgRAgVAmJAweQOHAgs7uOd520oSNZY3nn9///PfN9o40REwdgs8Gm0QjtsJg53jebpEnn0oIUjbTA9KaxYkylcpKUTtFM' +
    'LluwT+Rn0/n07EgmRe0IPQIaHPEmAJBy+WSCdx5LZ+ZFisYUzeVTojNRpBmpYE/k00eLGWk2QdPZQi6fWPbY0eRwxK0AUKC5fHI+' +
    'jZyC2EeT0tyU8psdzXEDALjQEjcBQGqpiFbSRdE2SYBwxFbCHcRGDCW0nxZZlgaKjQI21QJFqoGaRZPDIVY9IlEpl6Ru/4bPHbKP' +
    'G3eKsv6dTN9GuBK2EI7ptyr6bRTvErBdXkxxl05TltwQ7JDXeHC3aCUdFO9mghYmeA8xEEsJOxXBPRT3CnhvnAOA5Uz6GHYpmmKH' +
    'qJL3TRIbMRJTCe8nFhblAYXspviggA/J5FxRkvDhetKhbJKlhD0KuU8h91PsFfBA3AgA6ePorHJyYi/2iVZioOhitHkV3QRW0aOQ' +
    'Xoo+Afvls8j4fejXbcB4Lju/8f8DspoPB0QrMVN8RFUbJIZVHFLUDlIcFjCoqHk9GNKpjWVrmxmWxfqRV8QiqtijTGxEEXuMYlTA' +
    'x2WxOb8PR3ViI7niUSm9oTcm6/nxCdFKTBQJ0zOt4jjTe1LRO0RxQsBY3MIqNJWUknmc1G1UAAVlo6YmCfT0KNRTFA8L+HTczLZ2' +
    'cYmewCM6aADjopUAxWeYJbBTnSYmdjbPKgLPUXxewBeKzhix2j7tnri2bAJgn9hNu9gOLRtd3OeKRprrerj/ygeB6weDQ3ODbR+e' +
    'qfz03um3d18uDP9xpfNyYejsR3+tNXvH1l70vfLu62vOwR/eT/qlj0cH7Zemhr4bPOM+4UlcZElOJt5sDwMA+9wqia2WxB2NcHKS' +
    'PRXD8L/ll4O/BG8Md4d+DX6zRkLnykeGLaHW8CeV65XeSiJ0MuQPSuUvyg2hL8u/lYOhz0LT4c8r5yu/h5oqzF9oNv9zm/6eqr/y' +
    'bCWk4OF1iZUwwIX171fDAD8zSR5gJw/QxQO4eIAwDxDjAWZ4gCUeYIUHOLW+5jUe4I31dRd4gHfW117kAS7xLN+r/I/ZGQCY2Saf' +
    'o5bPG410b3Hbbh4sI/OYWbyxgzU7t40HV/PwRSO1JwZ1NqqzSZ05dWYenYfOSg4AcGzj0VXz6I9GOuHW+RVvo+rJqV4BbmG8DQDa' +
    'tvHy1bz80Yjrf+1ZvX9t/BlSv8h7us/2va8DADq2yeCqZQhEI71we/4zstf+v9Me/fnBduc3wM7v5rkaYJe8djmdL2Ry2Wikdatg' +
    'Xjtz//r8/GGjegoxYpCLoKqpvWcaN7lo3xDqSe29YNdR10yguZXqOW0/67kYp+Hc9Zy2z/TcV1rOU89pe0fPLZk1nLee0/aDnvtW' +
    'y/nqOW1t67kBi4brr+e09ajn3tJy/npOW1t6zmHVcIEqt3Xlacc5LTdQ76etpgYdd1Xl1JqMEYulV32013RAU7r6eUG9lVps1cvI' +
    'wt4N4SV77fKKEbNFYRrk9cra/wA=',
);
const MODULE_SD_BIN = unpack(
  'jZLPatRQFMZP/jSTxlZnplbrH0RcSFp02lFcCDriIBG8C+NIIXQTMkmYBNNJT+5NXRVc2IIP0KUuXOlCV4J1YV9AXegbiAsFH0EX' +
    'cpOhZhIc/OByyM357u/kyzWJJAOoKlTUhDqsx14a+Tb1lj2HOa2NB5HRnYG1gh6JrhtHke+yMB5S7W7i+Ynv3QpdpiEs9lDQLQUA' +
    'HvrhIGAouixO3KBlpyyMqGYnfj8NI89m/pDGib15SUNJ160aAFAWJ87ARzm3aEYUO+x+vqnhlCUAwAoqlgQA7kaKNaIwVO8RICKR' +
    'dnCaSETYQe1JwKc4xHCmh7OWDAD90KF4OJB0PZCD/Jw2HglqRGRYz/zb2CDCNjZz7xzDoz2cT7fwmDUNAPa6zxweBx7P3i9YPC08' +
    'sYUns8E3/YSG8RBPEYFS2m+ZpKbqdO/pOQGAL/OfidfhbCnx5RWje3os77L02887e9d333/dfXPt5m+187L/tjP/c/YGp76782pu' +
    'AQD4mkRdKlPbRvf8ROpfPf74bf/DC2uf8773Vl9zgDqR14CrBd4oLaN75T+BJV3WOPnzs8GqCABiRhZ4OWAXs29Wpqne8LK/mGJ9' +
    'zJsIUPlfZXcxk3H3j6q7XXYXv6sx5rZEqKZoEkW5MGo4I108aJZL9deofhHzahKF31z4JOXPQrY3peQeOevPe/8A',
);
const SHARED_BIN = unpack(
  'hVNLi9NQFP7yaBqjbZ0ZteNrKOgiAzPtdPwBliLdXMFYEYqbkklCEwxNT3I7O6EIHZjduHUh/gr3/gT9E7rxsRdUctMpTcYZD1wO' +
    'Nznf45yTWExRAV3HmahhA4lvx57bcm1uNycvw163hhf5mMmvCOZAAmCT5PAodvzmcMqDMDGGsXcwDUJ3yL1xEsXDw32DZNMclAEk' +
    'PIrtkUdKBjF6YWTzZ9lDg1RBuEelgQLAmUxJYxqn8lMGps1JZ9KcLh07ThSGnsODaJwYT2LXiz33UeBwg4ztPl3mdKVPFcF0QFVf' +
    'Nk1f8VW/5AuuWsqlMPmIrjKJKUe0duynsHVOG326JmAOXfcrwsLYG9GNjGJh+HE0Hi391kV5mzZ9jamcbqbc6pxupT5vZ7x3ON3t' +
    '09a0abGy3qp/+7kvAemxzt1AJb+B1t4/5p9Vzh4C6ACdDjDrAO87qUr95MubTQDpuUhlN6fS7nW3iyrnx68/WUzWJMF28v23uIuL' +
    '6K6s6x/uvW0AaFzoo4r7pz4OvTgJonGv2/ivkQdGqvDp3ei5DEAWClKalhqrs66dUS184UXw6ggrOeBrCfnlFKGrXeehXwvQdhG6' +
    '2k41B53IKAzJYpq2s3i7pewuK9VC/rHIn+UsW0xL/0N8VHC6K1ispGUYVdRntX8B',
);
const LEGACY_BIN = unpack(
  'VY69SgNBFIXvzm5+HA3Y2lmuzSKBbKuFpBliNDbTyLLODsnIsJM7czeiENgmoD6DD+Cr5REEC4nBwlN+cL5zWvbO7ffH+Ov08fPm' +
    'JGvZZBtnLVsjpPIYAJbekVPOFivtg3E1RpNtLAcAYA2R1YWuK1PWyF4lBwB6XuoimBcdMF5jksoOAISF84QdwWQMAKYm7IpEJjuH' +
    'q+fYE0nT7DdlBABPGClyXi2yoiFjAy+8fmiMrQrSdXC+WA05sjSVvZ2bnC/nGuN9hY+tK+luDzkmsg8Aw3yUn+ejHDu/B9Sywa5g' +
    '14S9WwGCbbAvog0evCnlrNWKjKsDn/pKe11dGUUc+dkMDwmPZjgIWcvuEf6LozJj8Jf2AgAufwA=',
);

describe('golden files written by torch.save', () => {
  it('parses hand-annotated bytes of torch.save({"w": tensor([1., 2.])}, BytesIO()) and the writer reproduces them', () => {
    const pickle = hex(
      `
      8002 7d 7100                                      // PROTO 2, EMPTY_DICT, BINPUT 0
      58 01000000 77 7101                               // BINUNICODE 'w', BINPUT 1
      63 746f7263682e5f7574696c730a 5f72656275696c645f74656e736f725f76320a 7102 // GLOBAL torch._utils _rebuild_tensor_v2
      28 28                                             // MARK (arguments), MARK (persistent id)
      58 07000000 73746f72616765 7103                   // 'storage'
      63 746f7263680a 466c6f617453746f726167650a 7104   // GLOBAL torch FloatStorage
      58 01000000 30 7105   58 03000000 637075 7106     // key '0', location 'cpu'
      4b02 74 7107 51                                   // numel 2, TUPLE, BINPERSID
      4b00  4b02 85 7108  4b01 85 7109  89              // offset 0, size (2,), stride (1,), requires_grad False
      63 636f6c6c656374696f6e730a 4f726465726564446963740a 710a 29 52 710b // backward hooks: OrderedDict()
      74 710c 52 710d 73 2e                             // TUPLE, REDUCE, SETITEM, STOP
    `.replace(/\/\/.*$/gm, ''),
    );
    // Local headers: signature, version 0, flags 0x0808 (data descriptor + UTF-8), stored, time/date/crc/sizes 0.
    const local = (nameLen: number, extraLen: number) =>
      concat(
        hex('504b0304 0000 0808 0000 00000000 00000000 00000000 00000000'),
        Uint8Array.of(nameLen, 0, extraLen, 0),
      );
    const descriptor = (crc: string, size: number) =>
      concat(hex(`504b0708 ${crc}`), Uint8Array.of(size, 0, 0, 0, size, 0, 0, 0));
    const central = (crc: string, size: number, nameLen: number, offset: number) =>
      concat(
        hex(`504b0102 0000 0000 0808 0000 00000000 ${crc}`),
        Uint8Array.of(size, 0, 0, 0, size, 0, 0, 0, nameLen, 0),
        new Uint8Array(12),
        Uint8Array.of(offset & 0xff, offset >> 8, 0, 0),
      );
    const name = (s: string) => Uint8Array.from(Buffer.from(`archive/${s}`));
    const golden = concat(
      local(16, 18),
      name('data.pkl'),
      fbPadding(14),
      pickle,
      descriptor('3aba1187', 162), //   data at 64
      local(14, 34),
      name('data/0'),
      fbPadding(30),
      hex('0000803f 00000040'),
      descriptor('76a53f2e', 8), // data at 320
      local(15, 59),
      name('version'),
      fbPadding(55),
      hex('330a'),
      descriptor('d19e6755', 2), //      data at 448
      central('3aba1187', 162, 16, 0),
      name('data.pkl'),
      central('76a53f2e', 8, 14, 242),
      name('data/0'),
      central('d19e6755', 2, 15, 344),
      name('version'),
      // ZIP64 end record (made by 0x031e, needs 0x2d, 3 entries, directory of 0xb7 bytes at 0x1d2), locator, classic end.
      hex(
        '504b0606 2c00000000000000 1e03 2d00 00000000 00000000 0300000000000000 0300000000000000 b700000000000000 d201000000000000',
      ),
      hex('504b0607 00000000 8902000000000000 01000000'),
      hex('504b0506 0000 0000 0300 0300 b7000000 d2010000 0000'),
    );
    expect(pickle.length).toBe(162);
    expect(golden.length).toBe(747);

    const parsed = parseTorchCheckpoint(golden, 'golden');
    expect([...parsed.keys()]).toEqual(['w']);
    expect(parsed.get('w')!.shape).toEqual([2]);
    expect(f32(parsed.get('w'))).toEqual([1, 2]);
    expect(
      Buffer.from(
        writeTorchCheckpoint({ w: { storage: f32Storage([1, 2]), shape: [2] } }, { layout: 'torch1.13' }),
      ).equals(golden),
    ).toBe(true);
  });

  it('reads mixed dtypes, views, expand, scalars and empty tensors exactly as torch does, and the writer reproduces the file', () => {
    const m = parseTorchCheckpoint(MIX_BIN, 'mix.bin');
    expect([...m.keys()]).toEqual([
      'lora_A.weight',
      'lora_B.weight',
      't',
      'view',
      'full',
      'ex',
      'i64',
      'i32',
      'f64',
      'scalar',
      'empty',
    ]);
    expect(m.get('lora_A.weight')).toMatchObject({ dtype: 'F16', shape: [4, 8] });
    expect(u16(m.get('lora_A.weight')).slice(0, 4)).toEqual([47925, 14259, 15563, 15166]);
    expect(m.get('lora_B.weight')).toMatchObject({ dtype: 'BF16', shape: [8, 4] });
    expect(u16(m.get('lora_B.weight')).slice(0, 4)).toEqual([48925, 15617, 48892, 15998]);
    const range = Array.from({ length: 24 }, (_, i) => i);
    expect(f32(m.get('full'))).toEqual(range);
    expect(m.get('t')!.shape).toEqual([6, 4]);
    expect(f32(m.get('t'))).toEqual(gather(range, [6, 4], [1, 6], 0));
    expect(f32(m.get('view'))).toEqual([8, 9, 10, 14, 15, 16]);
    expect(f32(m.get('ex'))).toEqual([7, 7, 7, 7, 7]);
    expect([...new BigInt64Array(m.get('i64')!.data.slice().buffer)]).toEqual([0n, 1n, 2n, 3n, 4n]);
    expect([...new Int32Array(m.get('i32')!.data.slice().buffer)]).toEqual([0, 1, 2, 3, 4]);
    expect([...new Float64Array(m.get('f64')!.data.slice().buffer)]).toEqual([0, 1, 2]);
    expect(m.get('scalar')!.shape).toEqual([]);
    expect(f32(m.get('scalar'))).toEqual([3.5]);
    expect(m.get('empty')).toMatchObject({ dtype: 'F32', shape: [0, 3] });
    expect(m.get('empty')!.data.length).toBe(0);

    const own = (k: string): TorchTensor => ({
      storage: { dtype: m.get(k)!.dtype, data: m.get(k)!.data },
      shape: m.get(k)!.shape,
    });
    const base = f32Storage(range);
    const rewritten = writeTorchCheckpoint(
      [
        ['lora_A.weight', own('lora_A.weight')],
        ['lora_B.weight', own('lora_B.weight')],
        ['t', { storage: base, shape: [6, 4], stride: [1, 6] }],
        ['view', { storage: base, shape: [2, 3], stride: [6, 1], storageOffset: 8 }],
        ['full', { storage: base, shape: [4, 6] }],
        ['ex', { storage: f32Storage([7]), shape: [5], stride: [0] }],
        ['i64', own('i64')],
        ['i32', own('i32')],
        ['f64', own('f64')],
        ['scalar', own('scalar')],
        ['empty', own('empty')],
      ],
      { layout: 'torch1.13', archiveName: 'mix', container: 'OrderedDict' },
    );
    expect(Buffer.from(rewritten).equals(MIX_BIN)).toBe(true);
  });

  it('reads module.state_dict() (OrderedDict with _metadata applied by BUILD) and the writer reproduces it', () => {
    const m = parseTorchCheckpoint(MODULE_SD_BIN, 'module_sd.bin');
    expect([...m.keys()]).toEqual(['weight', 'bias']);
    expect(m.get('weight')!.shape).toEqual([2, 3]);
    expect(m.get('bias')!.shape).toEqual([2]);
    const own = (k: string): TorchTensor => ({
      storage: { dtype: 'F32', data: m.get(k)!.data },
      shape: m.get(k)!.shape,
    });
    const rewritten = writeTorchCheckpoint(
      [
        ['weight', own('weight')],
        ['bias', own('bias')],
      ],
      { layout: 'torch1.13', archiveName: 'module_sd', container: 'OrderedDict', moduleVersions: [['', 1]] },
    );
    expect(Buffer.from(rewritten).equals(MODULE_SD_BIN)).toBe(true);
  });

  it('reads tied tensors, a transposed view of a shared storage and large int64 values', () => {
    const m = parseTorchCheckpoint(SHARED_BIN, 'shared.bin');
    expect(f32(m.get('a'))).toEqual([0, 1, 2, 3, 4, 5]);
    expect(m.get('b')!.shape).toEqual([3, 2]);
    expect(f32(m.get('b'))).toEqual([0, 3, 1, 4, 2, 5]);
    expect(f32(m.get('c'))).toEqual([0, 1, 2, 3, 4, 5]);
    expect([...new BigInt64Array(m.get('neg')!.data.slice().buffer)]).toEqual([-5n, 70000n, -70000n, 2n ** 40n]);
    const base = f32Storage([0, 1, 2, 3, 4, 5]);
    const a: TorchTensor = { storage: base, shape: [6] };
    const neg: TorchStorage = { dtype: 'I64', data: bytesOf(BigInt64Array.of(-5n, 70000n, -70000n, 2n ** 40n)) };
    const rewritten = writeTorchCheckpoint(
      { a, b: { storage: base, shape: [3, 2], stride: [1, 3] }, c: a, neg: { storage: neg, shape: [4] } },
      { layout: 'torch1.13', archiveName: 'shared' },
    );
    expect(Buffer.from(rewritten).equals(SHARED_BIN)).toBe(true);
  });
});

// ------------------------------------------------------------------------------- round trips

describe('round trips through the writer', () => {
  const dtypes: Array<[TorchDtype, ArrayBufferView]> = [
    ['F32', Float32Array.of(1.5, -2.25, 3e-8, 65504)],
    ['F16', Uint16Array.of(0x3c00, 0xbc00, 0x7bff, 0x0001)],
    ['BF16', Uint16Array.of(0x3f80, 0xbf80, 0x7f7f, 0x0001)],
    ['F64', Float64Array.of(Math.PI, -1e300, 0, 5e-324)],
    ['I64', BigInt64Array.of(-1n, 2n ** 62n, 0n, 7n)],
    ['I32', Int32Array.of(-1, 2 ** 31 - 1, 0, 7)],
  ];
  for (const layout of ['torch2.7', 'torch2.1', 'torch1.13'] as const) {
    it(`round-trips every dtype (${layout} layout)`, () => {
      const tensors = dtypes.map(([dtype, data]): [string, TorchTensor] => [
        `t.${dtype}`,
        { storage: { dtype, data: bytesOf(data) }, shape: [2, 2] },
      ]);
      const m = parseTorchCheckpoint(writeTorchCheckpoint(tensors, { layout }), 'rt');
      for (const [dtype, data] of dtypes) {
        expect(m.get(`t.${dtype}`)).toEqual({ dtype, shape: [2, 2], data: bytesOf(data) });
      }
    });
  }

  it('materialises shared storages, offsets, transposes, permutes, steps and broadcasts', () => {
    const values = Array.from({ length: 60 }, (_, i) => i * 0.5 - 7);
    const storage = f32Storage(values);
    const views: Array<[string, number[], number[], number]> = [
      ['whole', [60], [1], 0],
      ['matrix', [5, 12], [12, 1], 0],
      ['transposed', [12, 5], [1, 12], 0],
      ['permuted3d', [4, 3, 5], [1, 20, 4], 0],
      ['offset', [3, 4], [4, 1], 17],
      ['stepped', [3, 3], [12, 2], 5],
      ['column', [5, 1], [12, 1], 11],
      ['broadcast', [3, 4], [0, 1], 2],
      ['scalar', [], [], 59],
      ['zero-size', [0, 4], [4, 1], 60],
      ['size-one-dims', [1, 6, 1], [999, 2, 999], 3],
    ];
    const bytes = writeTorchCheckpoint(
      views.map(([name, shape, stride, storageOffset]): [string, TorchTensor] => [
        name,
        { storage, shape, stride, storageOffset },
      ]),
    );
    expect(listZip(bytes).filter((e) => e.name.startsWith('archive/data/'))).toHaveLength(1);
    const m = parseTorchCheckpoint(bytes, 'views');
    for (const [name, shape, stride, offset] of views) {
      expect(m.get(name)!.shape, name).toEqual(shape);
      expect(f32(m.get(name)), name).toEqual(gather(values, shape, stride, offset));
    }
  });

  it('reads a PEFT-style plain dict in every record layout, with any archive folder name', () => {
    for (const options of [
      {},
      { layout: 'torch2.1' },
      { layout: 'torch1.13' },
      { archiveName: 'adapter_model' },
      { container: 'OrderedDict' },
    ] as CheckpointOptions[]) {
      const m = parseTorchCheckpoint(writeTorchCheckpoint(sampleAdapter(), options), 'peft');
      expect(f32(m.get('base_model.model.q_proj.lora_A.weight'))).toEqual([1.5, -2, 3.25, 4, 5, 6, 7, 8]);
      expect(u16(m.get('base_model.model.q_proj.lora_B.weight'))).toEqual([0x3c00, 0xc000, 0x3800, 0]);
      expect(f32(m.get('slice'))).toEqual([7, 9, 11, 13, 15, 17]);
    }
  });

  it('writes torch 2.7 records in torch order with every entry 64-byte aligned', () => {
    const entries = listZip(writeTorchCheckpoint(sampleAdapter(), { archiveName: 'adapter_model' }));
    expect(entries.map((e) => e.name)).toEqual(
      [
        'data.pkl',
        '.format_version',
        '.storage_alignment',
        'byteorder',
        'data/0',
        'data/1',
        'data/2',
        'version',
        '.data/serialization_id',
      ].map((n) => `adapter_model/${n}`),
    );
    for (const e of entries) expect(e.dataOffset % 64, e.name).toBe(0);
  });

  it('reads deflated entries', () => {
    const bytes = writeTorchCheckpoint(sampleAdapter(), { deflate: true });
    expect(listZip(bytes).some((e) => e.method === 8)).toBe(true);
    expect(f32(parseTorchCheckpoint(bytes, 'deflated').get('transposed'))).toEqual(
      gather(
        Array.from({ length: 24 }, (_, i) => i),
        [6, 4],
        [1, 6],
        0,
      ),
    );
  });

  it('reads ZIP64 extra fields and end records (as written for checkpoints over 4 GiB)', () => {
    for (const deflate of [false, true]) {
      const bytes = writeTorchCheckpoint(sampleAdapter(), { forceZip64: true, deflate });
      expect(f32(parseTorchCheckpoint(bytes, 'zip64').get('full'))).toEqual(Array.from({ length: 24 }, (_, i) => i));
    }
  });

  it('batches more than 1000 dict items the way the C pickler does', () => {
    const many = Array.from({ length: 2001 }, (_, i): [string, TorchTensor] => [
      `layers.${i}.lora_A.weight`,
      { storage: f32Storage([i]), shape: [1, 1] },
    ]);
    for (const container of ['dict', 'OrderedDict'] as const) {
      const m = parseTorchCheckpoint(writeTorchCheckpoint(many, { container }), 'many');
      expect(m.size).toBe(2001);
      expect(f32(m.get('layers.2000.lora_A.weight'))).toEqual([2000]);
    }
  });

  it('readTorchCheckpoint reads a file and reports unreadable paths as INVALID_CHECKPOINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'torch-ckpt-'));
    try {
      const path = join(dir, 'adapter_model.bin');
      writeFileSync(path, writeTorchCheckpoint(sampleAdapter(), { archiveName: 'adapter_model' }));
      expect(f32((await readTorchCheckpoint(path)).get('slice'))).toEqual([7, 9, 11, 13, 15, 17]);
      await expect(readTorchCheckpoint(join(dir, 'missing.bin'))).rejects.toMatchObject({ code: 'INVALID_CHECKPOINT' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------------ hostile and damaged

/** A data.pkl calling `module.name(arg)`; refused when the global is named, before REDUCE could run. */
function callingPickle(module: string, name: string, stackGlobal = false): Uint8Array {
  const b = new PickleBuilder().proto(2);
  if (stackGlobal) b.unicode(module).unicode(name).raw(0x93);
  else b.global(module, name);
  return b.unicode('touch /tmp/pwned').tupleN(1).reduce().stop().finish();
}

describe('hostile and damaged input', () => {
  it('rejects every truncation of a checkpoint with INVALID_CHECKPOINT', () => {
    for (const options of [{}, { deflate: true }, { forceZip64: true }] as CheckpointOptions[]) {
      const bytes = writeTorchCheckpoint(sampleAdapter(), options);
      for (let cut = 0; cut < bytes.length; cut++)
        invalidError(() => parseTorchCheckpoint(bytes.subarray(0, cut), `cut ${cut}`));
    }
  });

  it('survives 200 seeded random corruptions of the file (valid parse or INVALID_CHECKPOINT)', () => {
    const original = writeTorchCheckpoint(sampleAdapter(), { deflate: true });
    const rand = mulberry32(1234);
    let rejected = 0;
    for (let round = 0; round < 200; round++) {
      const bytes = original.slice();
      const edits = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < edits; k++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      try {
        parseTorchCheckpoint(bytes, `fuzz ${round}`);
      } catch (e) {
        expect(e, `round ${round}`).toBeInstanceOf(EngineError);
        expect((e as EngineError).code).toBe('INVALID_CHECKPOINT');
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(100);
  });

  it('survives 200 seeded corruptions of data.pkl behind valid CRCs (exercises the unpickler itself)', () => {
    const { pickle, storages } = encodeStateDictPickle(sampleAdapter());
    const rand = mulberry32(99);
    const outcomes = { parsed: 0, rejected: 0 };
    for (let round = 0; round < 200; round++) {
      const mutated = pickle.slice();
      const edits = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < edits; k++) mutated[Math.floor(rand() * mutated.length)] = Math.floor(rand() * 256);
      const bytes = writeTorchArchive(
        round % 5 === 0 ? mutated.subarray(0, Math.floor(rand() * mutated.length)) : mutated,
        storages,
      );
      try {
        parseTorchCheckpoint(bytes, `pkl fuzz ${round}`);
        outcomes.parsed++;
      } catch (e) {
        expect(e, `round ${round}`).toBeInstanceOf(EngineError);
        expect((e as EngineError).code).toBe('INVALID_CHECKPOINT');
        outcomes.rejected++;
      }
    }
    expect(outcomes.rejected).toBeGreaterThan(50);
  });

  it('refuses globals outside the allowlist without executing them', () => {
    const forbidden: Array<[string, string]> = [
      ['os', 'system'],
      ['posix', 'system'],
      ['builtins', 'eval'],
      ['__builtin__', 'eval'],
      ['builtins', 'exec'],
      ['subprocess', 'Popen'],
      ['torch.storage', '_load_from_bytes'],
      ['torch', 'load'],
      ['collections', 'defaultdict'],
      ['torch._utils', '_rebuild_parameter'],
      ['numpy.core.multiarray', '_reconstruct'],
    ];
    for (const [module, name] of forbidden) {
      for (const stackGlobal of [false, true]) {
        expectInvalid(
          writeTorchArchive(callingPickle(module, name, stackGlobal), []),
          new RegExp(`global ${module}\\.${name}\\b.*refusing`),
        );
      }
    }
    // Naming the global is enough to be refused: no REDUCE needed.
    expectInvalid(
      writeTorchArchive(new PickleBuilder().proto().global('os', 'system').stop().finish(), []),
      /global os\.system/,
    );
  });

  it('refuses storage types it has no dtype for, naming them', () => {
    const pickle = new PickleBuilder()
      .proto()
      .emptyDict()
      .unicode('mask')
      .global('torch._utils', '_rebuild_tensor_v2')
      .mark()
      .mark()
      .unicode('storage')
      .global('torch', 'BoolStorage')
      .unicode('0')
      .unicode('cpu')
      .int(1)
      .tuple()
      .binpersid()
      .int(0)
      .int(1)
      .tupleN(1)
      .int(1)
      .tupleN(1)
      .bool(false)
      .global('collections', 'OrderedDict')
      .emptyTuple()
      .reduce()
      .tuple()
      .reduce()
      .setitem()
      .stop()
      .finish();
    expectInvalid(writeTorchArchive(pickle, [['0', Uint8Array.of(1)]]), /torch\.BoolStorage is not supported/);
  });

  it('refuses legacy, preview and non-checkpoint files with a clear message', () => {
    const legacy =
      /legacy \(pre-1\.6\) torch\.save format is not supported; re-save with torch>=1\.6 or as safetensors/;
    expectInvalid(LEGACY_BIN, legacy);
    const tar = new Uint8Array(1024);
    tar.set(Buffer.from('ustar'), 257);
    expectInvalid(tar, legacy);
    expectInvalid(Uint8Array.from(Buffer.from('PYTORCH1 then the rest')), /preview archive format/);
    expectInvalid(new Uint8Array(0), /too short/);
    expectInvalid(Uint8Array.from(Buffer.from('{"not": "a checkpoint"}')), /no zip signature/);
  });

  it('refuses a missing storage entry, a storage too small for the view and a wrong-sized storage entry', () => {
    const { pickle, storages } = encodeStateDictPickle(sampleAdapter());
    expectInvalid(
      writeTorchArchive(
        pickle,
        storages.filter(([key]) => key !== '1'),
      ),
      /storage 1 has no archive\/data\/1 entry/,
    );
    const storage = f32Storage([1, 2, 3, 4, 5, 6]);
    expectInvalid(writeTorchCheckpoint({ w: { storage, shape: [3, 3] } }), /reaches element 8 but storage 0 has 6/);
    expectInvalid(
      writeTorchCheckpoint({ w: { storage, shape: [2, 3], stride: [1, 3], storageOffset: 1 } }),
      /reaches element 8 but storage 0 has 6/,
    );
    expectInvalid(writeTorchCheckpoint({ w: { storage, shape: [0], storageOffset: 7 } }), /offset 7 is past the end/);
    expectInvalid(
      writeTorchArchive(
        pickle,
        storages.map(([k, d]) => [k, k === '0' ? d.subarray(4) : d]),
      ),
      /storage 0 should hold 8 F32 elements \(32 bytes\) but data\/0 has 28 bytes/,
    );
  });

  it('refuses views that would materialise far beyond the file size', () => {
    expectInvalid(
      writeTorchCheckpoint({ huge: { storage: f32Storage([1]), shape: [1 << 20, 1 << 10], stride: [0, 0] } }),
      /materialise/,
    );
  });

  it('refuses big-endian checkpoints and malformed bookkeeping records', () => {
    expectInvalid(writeTorchCheckpoint(sampleAdapter(), { byteorder: 'big' }), /big-endian/);
    expectInvalid(writeTorchCheckpoint(sampleAdapter(), { byteorder: 'middle' }), /byteorder record/);
    expect(parseTorchCheckpoint(writeTorchCheckpoint(sampleAdapter(), { byteorder: null }), 'no byteorder').size).toBe(
      5,
    );
    expectInvalid(writeTorchCheckpoint(sampleAdapter(), { version: 'three' }), /version record/);
    expectInvalid(
      writeTorchZip([['data.pkl', new PickleBuilder().proto().emptyDict().stop().finish()]]),
      /no archive\/version record/,
    );
    expectInvalid(
      writeTorchZip([
        ['constants.pkl', new Uint8Array(1)],
        ['version', Uint8Array.of(0x33)],
      ]),
      /TorchScript/,
    );
    expectInvalid(writeTorchZip([['version', Uint8Array.of(0x33)]]), /no archive\/data\.pkl/);
  });

  it('refuses top-level objects that are not a dict of tensors', () => {
    expectInvalid(
      writeTorchArchive(new PickleBuilder().proto().emptyList().stop().finish(), []),
      /holds a list, expected a dict of tensors/,
    );
    expectInvalid(
      writeTorchArchive(new PickleBuilder().proto().emptyDict().unicode('step').int(7).setitem().stop().finish(), []),
      /entry "step" is the int 7, not a tensor/,
    );
    expectInvalid(
      writeTorchArchive(new PickleBuilder().proto().emptyDict().int(3).none().setitem().stop().finish(), []),
      /key the int 3 is not a string/,
    );
    expect(
      parseTorchCheckpoint(writeTorchArchive(new PickleBuilder().proto().emptyDict().stop().finish(), []), 'empty')
        .size,
    ).toBe(0);
  });

  it('refuses malformed pickles: unknown opcodes, missing STOP, bad MARKs, bad memo references', () => {
    const archive = (b: PickleBuilder) => writeTorchArchive(b.finish(), []);
    expectInvalid(archive(new PickleBuilder().proto().raw(0x69).stop()), /unsupported pickle opcode 0x69/); // INST
    expectInvalid(archive(new PickleBuilder().proto().emptyDict()), /truncated/);
    expectInvalid(archive(new PickleBuilder().proto().emptyDict().tuple().stop()), /MARK it never set/);
    expectInvalid(archive(new PickleBuilder().proto().get(5).stop()), /unknown index 5/);
    expectInvalid(archive(new PickleBuilder().proto().stop()), /empty stack/);
    expectInvalid(archive(new PickleBuilder().proto().emptyDict().raw(0x51).stop()), /persistent id/);
  });

  it('handles deeply nested containers without recursion', () => {
    const b = new PickleBuilder().proto();
    for (let i = 0; i < 200_000; i++) b.emptyList();
    for (let i = 1; i < 200_000; i++) b.append();
    expectInvalid(writeTorchArchive(b.stop().finish(), []), /holds a list/);
  });

  it('detects corrupted entry data through CRC32 and lying deflate sizes', () => {
    const bytes = writeTorchCheckpoint(sampleAdapter());
    const data0 = listZip(bytes).find((e) => e.name === 'archive/data/0')!;
    const corrupted = bytes.slice();
    corrupted[data0.dataOffset + 3]! ^= 0x40;
    expectInvalid(corrupted, /CRC32 mismatch in archive\/data\/0/);

    const deflated = writeTorchCheckpoint(sampleAdapter(), { deflate: true });
    const pkl = listZip(deflated).find((e) => e.name === 'archive/data.pkl')!;
    const bomb = deflated.slice();
    new DataView(bomb.buffer, bomb.byteOffset).setUint32(pkl.centralOffset + 24, 0x7fffffff, true); // claimed uncompressed size
    expectInvalid(bomb, /more than deflate can produce/);
  });
});
