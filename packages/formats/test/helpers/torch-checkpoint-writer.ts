// Test-only writer for torch.save() checkpoints, reproducing what torch writes byte for byte:
//  - data.pkl: the protocol-2 pickle CPython's C pickler emits for a state dict (same memo numbering,
//    same batching, OrderedDict via REDUCE, tensors via torch._utils._rebuild_tensor_v2, storages as
//    BINPERSID ('storage', torch.<Type>Storage, key, location, numel) tuples);
//  - the zip as caffe2's PyTorchStreamWriter + miniz write it: stored entries, a local "FB" extra field
//    padding every entry's data to a 64-byte boundary, data descriptors, DOS time/date 0, UTF-8 flag,
//    and ZIP64 end records always present.
// Record order follows torch/serialization.py _save + PyTorchStreamWriter::writeEndOfFile for each layout.
// Verified against torch 1.13.1 output (the goldens in torch-checkpoint.test.ts are real torch.save files).
import * as zlib from 'node:zlib';

export type TorchDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32';

const ELEMENT_BYTES: Record<TorchDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4 };
const STORAGE_CLASS: Record<TorchDtype, string> = {
  F32: 'FloatStorage',
  F16: 'HalfStorage',
  BF16: 'BFloat16Storage',
  F64: 'DoubleStorage',
  I64: 'LongStorage',
  I32: 'IntStorage',
};

/** One storage; tensors that share the same object share the storage (one data/<key> entry), as in torch. */
export interface TorchStorage {
  dtype: TorchDtype;
  /** Raw little-endian element bytes. */
  data: Uint8Array;
  /** Location tag, 'cpu' unless given (e.g. 'cuda:0'). */
  location?: string;
}

export interface TorchTensor {
  storage: TorchStorage;
  shape: number[];
  /** Element strides; row-major contiguous when absent. */
  stride?: number[];
  storageOffset?: number;
  requiresGrad?: boolean;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) stride[i] = stride[i + 1]! * Math.max(1, shape[i + 1]!);
  return stride;
}

export function f32Storage(values: readonly number[]): TorchStorage {
  return { dtype: 'F32', data: new Uint8Array(Float32Array.from(values).buffer) };
}

/** A contiguous tensor owning its own storage. */
export function contiguousTensor(dtype: TorchDtype, shape: number[], data: Uint8Array): TorchTensor {
  return { storage: { dtype, data }, shape };
}

/**
 * torch1.13: data.pkl, data/<keys sorted as strings>, version.
 * torch2.1:  data.pkl, byteorder, data/<sorted>, version, .data/serialization_id.
 * torch2.7:  data.pkl, .format_version, .storage_alignment, byteorder, data/<in first-use order>, version, .data/serialization_id.
 */
export type TorchLayout = 'torch1.13' | 'torch2.1' | 'torch2.7';

export interface ZipOptions {
  /** Folder all entries live in: torch uses the file's basename without extension, or "archive" for buffers. */
  archiveName?: string;
  /** Deflate entries larger than 3 bytes (torch itself never compresses; other zip tools may). */
  deflate?: boolean;
  /** Write ZIP64 extra fields for every entry and 0xFFFF/0xFFFFFFFF placeholders in the classic end record, as for a > 4 GiB file. */
  forceZip64?: boolean;
}

export interface CheckpointOptions extends ZipOptions {
  layout?: TorchLayout;
  /** 'dict' is what PEFT saves; 'OrderedDict' is what module.state_dict() returns. */
  container?: 'dict' | 'OrderedDict';
  /** state_dict()'s _metadata (module prefix -> version), pickled as BUILD state; OrderedDict only. */
  moduleVersions?: Array<[string, number]>;
  /** Overrides the byteorder record (null leaves it out); torch >= 2.1 writes sys.byteorder, 1.13 writes none. */
  byteorder?: string | null;
  /** Overrides the version record ("3\n"). */
  version?: string;
  /** 40 digits; the first 20 hash the record names with libstdc++'s std::hash, which this writer does not reproduce. */
  serializationId?: string;
}

/** Pickle opcode emitter, also used by tests to hand-craft hostile pickles. */
export class PickleBuilder {
  private readonly out: number[] = [];

  raw(...bytes: number[]): this {
    for (const b of bytes) this.out.push(b & 0xff);
    return this;
  }
  op(ch: string): this {
    return this.raw(ch.charCodeAt(0));
  }
  proto(v = 2): this {
    return this.raw(0x80, v);
  }
  stop(): this {
    return this.op('.');
  }
  mark(): this {
    return this.op('(');
  }
  none(): this {
    return this.op('N');
  }
  bool(b: boolean): this {
    return this.raw(b ? 0x88 : 0x89);
  }
  global(module: string, name: string): this {
    this.op('c');
    this.utf8(`${module}\n${name}\n`);
    return this;
  }
  emptyTuple(): this {
    return this.op(')');
  }
  emptyDict(): this {
    return this.op('}');
  }
  emptyList(): this {
    return this.op(']');
  }
  tuple(): this {
    return this.op('t');
  }
  tupleN(n: 1 | 2 | 3): this {
    return this.raw(0x84 + n);
  }
  setitem(): this {
    return this.op('s');
  }
  setitems(): this {
    return this.op('u');
  }
  append(): this {
    return this.op('a');
  }
  reduce(): this {
    return this.op('R');
  }
  build(): this {
    return this.op('b');
  }
  binpersid(): this {
    return this.op('Q');
  }
  put(i: number): this {
    return i < 256 ? this.raw(0x71, i) : this.raw(0x72, ...le32(i));
  }
  get(i: number): this {
    return i < 256 ? this.raw(0x68, i) : this.raw(0x6a, ...le32(i));
  }

  /** BINUNICODE, as protocol 2 writes every str. */
  unicode(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.op('X').raw(...le32(b.length));
    for (const x of b) this.out.push(x);
    return this;
  }

  /** CPython's save_long for protocol 2: BININT1, BININT2, BININT, else LONG1. */
  int(n: number | bigint): this {
    if (typeof n === 'number' && Number.isInteger(n)) {
      if (n >= 0 && n <= 0xff) return this.raw(0x4b, n);
      if (n >= 0 && n <= 0xffff) return this.raw(0x4d, n & 0xff, n >> 8);
      if (n >= -0x80000000 && n <= 0x7fffffff) return this.raw(0x4a, ...le32(n));
    }
    const bytes = encodeLong(BigInt(n));
    return this.raw(0x8a, bytes.length, ...bytes);
  }

  private utf8(s: string): void {
    for (const x of Buffer.from(s, 'utf8')) this.out.push(x);
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** pickle.encode_long: shortest little-endian two's complement. */
function encodeLong(v: bigint): number[] {
  if (v === 0n) return [];
  const out: number[] = [];
  let x = v;
  for (;;) {
    out.push(Number(x & 0xffn));
    x >>= 8n;
    const signBit = (out[out.length - 1]! & 0x80) !== 0;
    if ((x === 0n && !signBit) || (x === -1n && signBit)) return out;
  }
}

const BATCHSIZE = 1000;

/**
 * Emulates CPython's C pickler memo: objects are memoized by identity, so memo keys here are the JS
 * objects (tensor, storage) or shared constants for the interned literals torch reuses ('storage', 'cpu').
 */
class TorchPickler {
  readonly b = new PickleBuilder();
  private readonly memo = new Map<unknown, number>();
  readonly storageKeys = new Map<TorchStorage, string>();

  /** Memoizes the object just written (BINPUT); the key is its identity. */
  memoize(key: unknown = {}): void {
    const i = this.memo.size;
    this.memo.set(key, i);
    this.b.put(i);
  }

  private fromMemo(key: unknown): boolean {
    const i = this.memo.get(key);
    if (i === undefined) return false;
    this.b.get(i);
    return true;
  }

  str(s: string, identity?: unknown): void {
    if (identity !== undefined && this.fromMemo(identity)) return;
    this.b.unicode(s);
    this.memoize(identity);
  }

  global(module: string, name: string): void {
    const key = `global:${module}.${name}`;
    if (this.fromMemo(key)) return;
    this.b.global(module, name);
    this.memoize(key);
  }

  /** save_tuple: () unmemoized; 1-3 items as TUPLEn; more as MARK ... TUPLE; then memoized. */
  tuple(items: Array<() => void>): void {
    if (items.length === 0) {
      this.b.emptyTuple();
      return;
    }
    if (items.length > 3) this.b.mark();
    for (const save of items) save();
    if (items.length > 3) this.b.tuple();
    else this.b.tupleN(items.length as 1 | 2 | 3);
    this.memoize();
  }

  /** batch_dict_exact: a single item as SETITEM, otherwise MARK ... SETITEMS in batches (a trailing empty batch included). */
  exactDictItems(items: Array<[() => void, () => void]>): void {
    if (items.length === 0) return;
    if (items.length === 1) {
      items[0]![0]();
      items[0]![1]();
      this.b.setitem();
      return;
    }
    let i = 0;
    let n: number;
    do {
      this.b.mark();
      for (n = 0; n < BATCHSIZE && i < items.length; n++, i++) {
        items[i]![0]();
        items[i]![1]();
      }
      this.b.setitems();
    } while (n === BATCHSIZE);
  }

  /** batch_dict over an iterator (dict subclasses like OrderedDict): batches of 2+ use MARK/SETITEMS, a lone item SETITEM. */
  iterDictItems(items: Array<[() => void, () => void]>): void {
    for (let start = 0; start < items.length; start += BATCHSIZE) {
      const batch = items.slice(start, start + BATCHSIZE);
      if (batch.length === 1) {
        batch[0]![0]();
        batch[0]![1]();
        this.b.setitem();
        continue;
      }
      this.b.mark();
      for (const [k, v] of batch) {
        k();
        v();
      }
      this.b.setitems();
    }
  }

  emptyOrderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.b.emptyTuple().reduce();
    this.memoize();
  }

  tensor(t: TorchTensor): void {
    if (this.fromMemo(t)) return;
    const elem = ELEMENT_BYTES[t.storage.dtype];
    if (t.storage.data.length % elem !== 0)
      throw new Error('storage byte length is not a multiple of the element size');
    let key = this.storageKeys.get(t.storage);
    if (key === undefined) {
      key = String(this.storageKeys.size);
      this.storageKeys.set(t.storage, key);
    }
    const storageKey = key;
    const stride = t.stride ?? contiguousStrides(t.shape);
    const location = t.storage.location ?? 'cpu';
    this.global('torch._utils', '_rebuild_tensor_v2');
    this.tuple([
      () => {
        // persistent_id(): a fresh tuple each time, saved then BINPERSID; the key string is shared per storage.
        this.tuple([
          () => this.str('storage', 'const:storage'),
          () => this.global('torch', STORAGE_CLASS[t.storage.dtype]),
          () => this.str(storageKey, t.storage),
          // _cpu_tag returns the literal 'cpu'; device tags like 'cuda:0' are built per call (never shared).
          () => this.str(location, location === 'cpu' ? 'const:cpu' : undefined),
          () => this.b.int(t.storage.data.length / elem),
        ]);
        this.b.binpersid();
      },
      () => this.b.int(t.storageOffset ?? 0),
      () => this.tuple(t.shape.map((d) => () => this.b.int(d))),
      () => this.tuple(stride.map((d) => () => this.b.int(d))),
      () => this.b.bool(t.requiresGrad ?? false),
      () => this.emptyOrderedDict(),
    ]);
    this.b.reduce();
    this.memoize(t);
  }
}

/** The data.pkl torch writes for a state dict, and the storages in the order their keys were assigned. */
export function encodeStateDictPickle(
  tensors: Array<[string, TorchTensor]>,
  options: CheckpointOptions = {},
): { pickle: Uint8Array; storages: Array<[string, Uint8Array]> } {
  const p = new TorchPickler();
  p.b.proto(2);
  const items = tensors.map(([name, t]): [() => void, () => void] => [() => p.str(name), () => p.tensor(t)]);
  if ((options.container ?? 'dict') === 'dict') {
    if (options.moduleVersions) throw new Error('moduleVersions needs container: OrderedDict');
    p.b.emptyDict();
    p.memoize();
    p.exactDictItems(items);
  } else {
    p.emptyOrderedDict();
    p.iterDictItems(items);
    if (options.moduleVersions) {
      // OrderedDict.__reduce__ state: {'_metadata': OrderedDict(prefix -> {'version': n})}, applied with BUILD.
      const versions = options.moduleVersions;
      p.b.emptyDict();
      p.memoize();
      p.exactDictItems([
        [
          () => p.str('_metadata'),
          () => {
            p.emptyOrderedDict();
            p.iterDictItems(
              versions.map(([prefix, v]): [() => void, () => void] => [
                () => p.str(prefix),
                () => {
                  p.b.emptyDict();
                  p.memoize();
                  p.exactDictItems([[() => p.str('version', 'const:version'), () => p.b.int(v)]]);
                },
              ]),
            );
          },
        ],
      ]);
      p.b.build();
    }
  }
  p.b.stop();
  const storages: Array<[string, Uint8Array]> = [...p.storageKeys].map(([s, key]) => [key, s.data]);
  return { pickle: p.b.finish(), storages };
}

/** A full checkpoint file. Tensors sharing a TorchStorage object share one data/<key> entry. */
export function writeTorchCheckpoint(
  tensors: Record<string, TorchTensor> | Array<[string, TorchTensor]>,
  options: CheckpointOptions = {},
): Uint8Array {
  const list = Array.isArray(tensors) ? tensors : Object.entries(tensors);
  const { pickle, storages } = encodeStateDictPickle(list, options);
  return writeTorchArchive(pickle, storages, options);
}

/** Wraps any data.pkl (e.g. a hand-crafted hostile one) and storages in the record layout torch uses. */
export function writeTorchArchive(
  pickle: Uint8Array,
  storages: Array<[string, Uint8Array]>,
  options: CheckpointOptions = {},
): Uint8Array {
  const layout = options.layout ?? 'torch2.7';
  const text = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
  const byteorder = options.byteorder === undefined ? 'little' : options.byteorder;
  const records: Array<[string, Uint8Array]> = [['data.pkl', pickle]];
  if (layout === 'torch2.7') records.push(['.format_version', text('1')], ['.storage_alignment', text('64')]);
  if (byteorder !== null && layout !== 'torch1.13') records.push(['byteorder', text(byteorder)]);
  const ordered =
    layout === 'torch2.7' ? storages : [...storages].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [key, data] of ordered) records.push([`data/${key}`, data]);
  // writeEndOfFile appends the version record, then (torch >= 2.1) the serialization id.
  records.push(['version', text(options.version ?? '3\n')]);
  if (layout !== 'torch1.13')
    records.push(['.data/serialization_id', text(options.serializationId ?? serializationId(records))]);
  return writeTorchZip(records, options);
}

/**
 * writeSerializationId: 20 digits hashing the record names, then 20 digits of c10::hash_combine over the
 * CRC32 of every non-empty record in write order. The name half stands in for libstdc++'s std::hash.
 */
function serializationId(records: Array<[string, Uint8Array]>): string {
  const mask = (1n << 64n) - 1n;
  const combine = (seed: bigint, value: bigint) =>
    (seed ^ ((value + 0x9e3779b9n + ((seed << 6n) & mask) + (seed >> 2n)) & mask)) & mask;
  let names = 0n;
  let crcs = 0n;
  for (const [name, data] of records) {
    let h = 0xcbf29ce484222325n;
    for (const c of Buffer.from(name)) h = ((h ^ BigInt(c)) * 0x100000001b3n) & mask;
    names = combine(names, h);
    if (data.length > 0) crcs = combine(crcs, BigInt(zlib.crc32(data)));
  }
  return names.toString().padStart(20, '0') + crcs.toString().padStart(20, '0');
}

const U32 = 0xffffffff;
const ALIGNMENT = 64;

/** The zip exactly as miniz (flags MZ_ZIP_FLAG_WRITE_ZIP64) writes it under PyTorchStreamWriter. */
export function writeTorchZip(records: Array<[string, Uint8Array]>, options: ZipOptions = {}): Uint8Array {
  const folder = options.archiveName ?? 'archive';
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let cursor = 0;
  const emit = (b: Uint8Array) => {
    parts.push(b);
    cursor += b.length;
  };
  for (const [relName, data] of records) {
    const name = Buffer.from(`${folder}/${relName}`, 'utf8');
    const size = data.length;
    const localOffset = cursor;
    const deflated = options.deflate === true && size > 3; // miniz stores anything of 3 bytes or less
    const payload = deflated ? new Uint8Array(zlib.deflateRawSync(data, { level: 9 })) : data;
    const crc = zlib.crc32(data) >>> 0;
    const method = deflated ? 8 : 0;
    const flags = (size > 0 ? 0x0008 : 0) | 0x0800; // data descriptor follows (non-empty only); names are UTF-8
    const big = options.forceZip64 === true;
    const sizeNeeds64 = big || size >= U32;
    const offsetNeeds64 = big || localOffset >= U32;
    // Local ZIP64 extra: written before the compressed size is known, so that slot holds 0.
    const localZip64 =
      sizeNeeds64 || offsetNeeds64
        ? zip64Extra(sizeNeeds64 ? [size, 0] : [], offsetNeeds64 ? localOffset : undefined)
        : new Uint8Array(0);
    // detail::getPadding: an "FB" extra field whose filler ('Z's) puts the data on a 64-byte boundary.
    const unpadded = localOffset + 30 + name.length + localZip64.length + 4;
    const padding = (ALIGNMENT - (unpadded % ALIGNMENT)) % ALIGNMENT;
    const fb = new Uint8Array(4 + padding).fill(0x5a);
    fb.set([0x46, 0x42, padding & 0xff, padding >> 8], 0);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, method ? 20 : 0, true);
    local.setUint16(6, flags, true);
    local.setUint16(8, method, true);
    // time, date, crc and both sizes stay 0: the data descriptor carries them.
    local.setUint16(26, name.length, true);
    local.setUint16(28, localZip64.length + fb.length, true);
    emit(new Uint8Array(local.buffer));
    emit(name);
    emit(localZip64);
    emit(fb);
    emit(payload);
    if (size > 0) {
      const wide = localZip64.length > 0;
      const dd = new DataView(new ArrayBuffer(wide ? 24 : 16));
      dd.setUint32(0, 0x08074b50, true);
      dd.setUint32(4, crc, true);
      if (wide) {
        dd.setBigUint64(8, BigInt(payload.length), true);
        dd.setBigUint64(16, BigInt(size), true);
      } else {
        dd.setUint32(8, payload.length, true);
        dd.setUint32(12, size, true);
      }
      emit(new Uint8Array(dd.buffer));
    }
    const centralZip64 =
      sizeNeeds64 || offsetNeeds64
        ? zip64Extra(sizeNeeds64 ? [size, payload.length] : [], offsetNeeds64 ? localOffset : undefined)
        : new Uint8Array(0);
    const cd = new DataView(new ArrayBuffer(46));
    cd.setUint32(0, 0x02014b50, true);
    // version made by stays 0: miniz never sets it.
    cd.setUint16(6, method ? 20 : 0, true);
    cd.setUint16(8, flags, true);
    cd.setUint16(10, method, true);
    cd.setUint32(16, crc, true);
    cd.setUint32(20, sizeNeeds64 ? U32 : payload.length, true);
    cd.setUint32(24, sizeNeeds64 ? U32 : size, true);
    cd.setUint16(28, name.length, true);
    cd.setUint16(30, centralZip64.length, true);
    cd.setUint32(42, offsetNeeds64 ? U32 : localOffset, true);
    central.push(new Uint8Array(cd.buffer), name, centralZip64);
  }
  const cdOffset = cursor;
  for (const c of central) emit(c);
  const cdSize = cursor - cdOffset;
  const count = records.length;
  const zip64EndOffset = cursor;
  const z = new DataView(new ArrayBuffer(56));
  z.setUint32(0, 0x06064b50, true);
  z.setBigUint64(4, 44n, true);
  z.setUint16(12, 0x031e, true);
  z.setUint16(14, 0x002d, true);
  z.setBigUint64(24, BigInt(count), true);
  z.setBigUint64(32, BigInt(count), true);
  z.setBigUint64(40, BigInt(cdSize), true);
  z.setBigUint64(48, BigInt(cdOffset), true);
  emit(new Uint8Array(z.buffer));
  const loc = new DataView(new ArrayBuffer(20));
  loc.setUint32(0, 0x07064b50, true);
  loc.setBigUint64(8, BigInt(zip64EndOffset), true);
  loc.setUint32(16, 1, true);
  emit(new Uint8Array(loc.buffer));
  const big = options.forceZip64 === true;
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, big ? 0xffff : Math.min(0xffff, count), true);
  end.setUint16(10, big ? 0xffff : Math.min(0xffff, count), true);
  end.setUint32(12, big ? U32 : Math.min(U32, cdSize), true);
  end.setUint32(16, big ? U32 : Math.min(U32, cdOffset), true);
  emit(new Uint8Array(end.buffer));
  return new Uint8Array(Buffer.concat(parts)); // a plain copy: Buffer.slice() would alias, surprising tests that mutate
}

/** ZIP64 extended information extra field (id 1): the listed sizes, then the local header offset. */
function zip64Extra(sizes: number[], offset: number | undefined): Uint8Array {
  const values = offset === undefined ? sizes : [...sizes, offset];
  const v = new DataView(new ArrayBuffer(4 + 8 * values.length));
  v.setUint16(0, 1, true);
  v.setUint16(2, 8 * values.length, true);
  values.forEach((x, i) => v.setBigUint64(4 + 8 * i, BigInt(x), true));
  return new Uint8Array(v.buffer);
}
