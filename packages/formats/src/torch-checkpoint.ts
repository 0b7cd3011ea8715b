// Reader for torch.save() checkpoints (the zip format torch has written since 1.6; PEFT writes it as
// adapter_model.bin when safe_serialization=False). Pure TypeScript, no Python.
//
// Layout: a zip whose entries all live in one top-level folder (named after the file, or "archive"):
//   <folder>/data.pkl      pickle (protocol 2) of the state dict; tensors refer to storages by persistent id
//   <folder>/data/<key>    raw little-endian bytes of each storage
//   <folder>/version       "3\n" (or .data/version), <folder>/byteorder "little" (absent before torch 2.1)
//
// Safety: data.pkl is run by a restricted unpickler. It knows only the opcodes torch emits and only the
// globals a state dict needs; any other global is refused when it is named, before anything could call it.
// Every read is bounds-checked and every size is capped, so hostile or damaged files end in an
// EngineError('INVALID_CHECKPOINT'), never in another exception, a hang or an unbounded allocation.
import { open } from 'node:fs/promises';
import { EngineError } from './errors.js';
import { ZipArchive, type ZipEntry } from './zip-archive.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export type CheckpointDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32';

export interface CheckpointTensor {
  dtype: CheckpointDtype;
  shape: number[];
  /** Contiguous row-major little-endian bytes, copied out of the zip. */
  data: Uint8Array;
}

const DTYPE_BYTES: Readonly<Record<CheckpointDtype, number>> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4 };

/** torch's legacy typed-storage classes (pickled as GLOBAL torch <Name>) and the dtype each one holds. */
const STORAGE_CLASS_DTYPE: ReadonlyMap<string, CheckpointDtype> = new Map([
  ['FloatStorage', 'F32'],
  ['HalfStorage', 'F16'],
  ['BFloat16Storage', 'BF16'],
  ['DoubleStorage', 'F64'],
  ['LongStorage', 'I64'],
  ['IntStorage', 'I32'],
]);

const ORDERED_DICT = 'collections.OrderedDict';
const REBUILD_TENSOR_V2 = 'torch._utils._rebuild_tensor_v2';
const REBUILD_TENSOR = 'torch._utils._rebuild_tensor';

// Caps. A legitimate state dict stays far below each; they only bound what a hostile file can make us do.
const MAX_PICKLE_STACK = 1 << 22;
const MAX_TENSOR_DIMS = 64;
const MAX_GLOBAL_LINE = 512;
/** Deflate cannot expand by more than ~1032:1, so a larger claimed ratio is a lie (or a zip bomb). */
/** Views may repeat storage elements (stride 0, overlapping views), so materialised bytes get their own budget. */
const MIN_MATERIALISE_BUDGET = 256 * 1024 * 1024;
const MATERIALISE_BUDGET_PER_INPUT_BYTE = 4;

function invalid(label: string, why: string): EngineError {
  return new EngineError('INVALID_CHECKPOINT', `${label}: ${why}`);
}

/** Reads the whole file and parses it; every failure, I/O included, is an INVALID_CHECKPOINT EngineError. */
export async function readTorchCheckpoint(path: string): Promise<Map<string, CheckpointTensor>> {
  let bytes: Buffer;
  try {
    const fh = await open(path, 'r');
    try {
      bytes = Buffer.allocUnsafe((await fh.stat()).size);
      // fs.readFile stops at 2 GiB; positioned reads in chunks do not.
      let done = 0;
      while (done < bytes.length) {
        const { bytesRead } = await fh.read(bytes, done, Math.min(bytes.length - done, 1 << 30), done);
        if (bytesRead === 0) break; // the file shrank while we read it; the parser reports the truncation
        done += bytesRead;
      }
      bytes = bytes.subarray(0, done);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw invalid(path, `cannot read file (${(e as Error).message})`);
  }
  return parseTorchCheckpoint(bytes, path);
}

/** Parses torch.save() bytes into name -> tensor. `label` prefixes every error message (usually the path). */
export function parseTorchCheckpoint(bytes: Uint8Array, label: string): Map<string, CheckpointTensor> {
  try {
    return parseUnchecked(bytes, label);
  } catch (e) {
    if (e instanceof EngineError && e.code === 'INVALID_CHECKPOINT') throw e;
    // Safety net: explicit checks should have caught everything; whatever slipped through is still reported as a bad file.
    throw invalid(label, `unreadable checkpoint (${e instanceof Error ? e.message : String(e)})`);
  }
}

function parseUnchecked(bytes: Uint8Array, label: string): Map<string, CheckpointTensor> {
  rejectNonZip(bytes, label);
  const zip = new ZipArchive(bytes, label);
  const folder = zip.topFolder();
  const record = (name: string): ZipEntry | undefined => zip.entries.get(`${folder}/${name}`);

  const pklEntry = record('data.pkl');
  if (!pklEntry) {
    if (record('constants.pkl'))
      throw invalid(label, 'this is a TorchScript archive (torch.jit.save), not a torch.save() state dict');
    throw invalid(label, `archive has no ${folder}/data.pkl (not a torch.save() checkpoint)`);
  }
  const versionEntry = record('.data/version') ?? record('version');
  if (!versionEntry) throw invalid(label, `archive has no ${folder}/version record`);
  const versionText = asciiText(zip.read(versionEntry));
  if (!/^[0-9]{1,6}\s*$/.test(versionText) || Number.parseInt(versionText, 10) < 1) {
    throw invalid(label, `version record is ${JSON.stringify(versionText.slice(0, 32))}, expected a positive integer`);
  }
  const byteorderEntry = record('byteorder');
  if (byteorderEntry) {
    const order = asciiText(zip.read(byteorderEntry));
    if (order === 'big')
      throw invalid(
        label,
        'checkpoint was saved on a big-endian machine (byteorder "big"); only little-endian checkpoints are supported',
      );
    if (order !== 'little')
      throw invalid(label, `byteorder record is ${JSON.stringify(order.slice(0, 32))}, expected "little"`);
  }

  const budget = Math.max(MIN_MATERIALISE_BUDGET, bytes.length * MATERIALISE_BUDGET_PER_INPUT_BYTE);
  const top = new RestrictedUnpickler(zip.read(pklEntry), label, zip, folder, budget).load();
  if (!(top instanceof PyDict)) throw invalid(label, `data.pkl holds ${describe(top)}, expected a dict of tensors`);
  const out = new Map<string, CheckpointTensor>();
  for (const [key, value] of top.entries) {
    if (typeof key !== 'string') throw invalid(label, `state dict key ${describe(key)} is not a string`);
    if (!(value instanceof TensorValue))
      throw invalid(label, `state dict entry "${key}" is ${describe(value)}, not a tensor`);
    out.set(key, value.tensor);
  }
  return out;
}

/** Names the formats people actually confuse with the zip checkpoint, so the error says what to do. */
function rejectNonZip(bytes: Uint8Array, label: string): void {
  const startsWith = (sig: number[], at = 0) =>
    bytes.length >= at + sig.length && sig.every((b, i) => bytes[at + i] === b);
  if (startsWith([0x50, 0x4b, 0x03, 0x04])) return;
  const legacy = 'legacy (pre-1.6) torch.save format is not supported; re-save with torch>=1.6 or as safetensors';
  // Legacy torch.save: a protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c first.
  if (startsWith([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]))
    throw invalid(label, legacy);
  // The even older tar layout (members "storages", "tensors", "pickle").
  if (startsWith([0x75, 0x73, 0x74, 0x61, 0x72], 257)) throw invalid(label, legacy);
  if (startsWith([0x80]) && bytes.length > 1 && (bytes[1] ?? 0) <= 5)
    throw invalid(label, `${legacy} (file is a bare pickle)`);
  if (startsWith([...'PYTORCH1'].map((c) => c.charCodeAt(0))))
    throw invalid(label, 'file uses the 2018 preview archive format, which is not supported');
  if (bytes.length < 4) throw invalid(label, `file is ${bytes.length} bytes, too short for a torch checkpoint`);
  throw invalid(label, 'not a torch.save() checkpoint (no zip signature at the start of the file)');
}

function asciiText(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length && i < 64; i++) s += String.fromCharCode(b[i]!);
  return s;
}

// ---------------------------------------------------------------------------------------- unpickler

/** What BINPERSID yields: a reference to data/<key>, read when a tensor is rebuilt on it. */
class StorageRef {
  constructor(
    readonly dtype: CheckpointDtype,
    readonly key: string,
    readonly location: string,
    readonly numel: number,
  ) {}
}

class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}
class PyList {
  readonly items: PyValue[] = [];
}
class PyDict {
  readonly entries = new Map<PyValue, PyValue>();
}
class PyFloat {
  constructor(readonly value: number) {}
}
class PyGlobal {
  constructor(readonly qualified: string) {}
}
class TensorValue {
  constructor(readonly tensor: CheckpointTensor) {}
}
type PyValue =
  null | boolean | number | bigint | string | PyTuple | PyList | PyDict | PyFloat | PyGlobal | StorageRef | TensorValue;

/** For error messages; never recurses, so it is safe on arbitrarily nested values. */
function describe(v: PyValue | undefined): string {
  if (v === undefined || v === null) return v === null ? 'None' : 'nothing';
  if (typeof v === 'boolean') return 'a bool';
  if (typeof v === 'number' || typeof v === 'bigint') return `the int ${v}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.slice(0, 40))}`;
  if (v instanceof PyGlobal) return v.qualified;
  return v instanceof PyTuple
    ? 'a tuple'
    : v instanceof PyList
      ? 'a list'
      : v instanceof PyDict
        ? 'a dict'
        : v instanceof PyFloat
          ? 'a float'
          : v instanceof StorageRef
            ? 'a bare storage'
            : 'a tensor';
}

function isAllowedGlobal(qualified: string): boolean {
  if (qualified === ORDERED_DICT || qualified === REBUILD_TENSOR_V2 || qualified === REBUILD_TENSOR) return true;
  return qualified.startsWith('torch.') && STORAGE_CLASS_DTYPE.has(qualified.slice('torch.'.length));
}

class RestrictedUnpickler {
  private pos = 0;
  private readonly view: DataView;
  private readonly stack: PyValue[] = [];
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, PyValue>();
  private readonly storageCache = new Map<string, { dtype: CheckpointDtype; bytes: Uint8Array }>();

  /** `budget` bounds the bytes tensors may materialise to, since views can repeat storage elements (stride 0, overlaps). */
  constructor(
    private readonly pkl: Uint8Array,
    private readonly label: string,
    private readonly zip: ZipArchive,
    private readonly folder: string,
    private budget: number,
  ) {
    this.view = new DataView(pkl.buffer, pkl.byteOffset, pkl.byteLength);
  }

  load(): PyValue {
    for (;;) {
      const at = this.pos;
      const op = this.u8();
      switch (op) {
        case 0x80: {
          const proto = this.u8();
          if (proto > 5) throw this.fail(`unsupported pickle protocol ${proto}`);
          break;
        } // PROTO
        case 0x95:
          this.take(8);
          break; // FRAME: framing is transparent to a reader holding the whole pickle
        case 0x2e:
          return this.pop(); // STOP
        case 0x28:
          if (this.marks.length >= MAX_PICKLE_STACK) throw this.fail('too many nested MARKs');
          this.marks.push(this.stack.length);
          break; // MARK
        case 0x7d:
          this.push(new PyDict());
          break; // EMPTY_DICT
        case 0x5d:
          this.push(new PyList());
          break; // EMPTY_LIST
        case 0x29:
          this.push(new PyTuple([]));
          break; // EMPTY_TUPLE
        case 0x4e:
          this.push(null);
          break; // NONE
        case 0x88:
          this.push(true);
          break; // NEWTRUE
        case 0x89:
          this.push(false);
          break; // NEWFALSE
        case 0x4b:
          this.push(this.u8());
          break; // BININT1
        case 0x4d:
          this.push(this.view.getUint16(this.skip(2), true));
          break; // BININT2
        case 0x4a:
          this.push(this.view.getInt32(this.skip(4), true));
          break; // BININT
        case 0x8a:
          this.push(this.long1());
          break; // LONG1
        case 0x47:
          this.push(new PyFloat(this.view.getFloat64(this.skip(8), false)));
          break; // BINFLOAT (big-endian)
        case 0x8c:
          this.push(this.text(this.u8()));
          break; // SHORT_BINUNICODE
        case 0x58:
          this.push(this.text(this.view.getUint32(this.skip(4), true)));
          break; // BINUNICODE
        case 0x8d:
          this.push(this.text(this.length64()));
          break; // BINUNICODE8
        case 0x55:
          this.push(this.text(this.u8()));
          break; // SHORT_BINSTRING (torch.load decodes these as utf-8)
        case 0x54: {
          const n = this.view.getInt32(this.skip(4), true);
          if (n < 0) throw this.fail('negative BINSTRING length');
          this.push(this.text(n));
          break;
        } // BINSTRING
        case 0x71:
          this.memoPut(this.u8());
          break; // BINPUT
        case 0x72:
          this.memoPut(this.view.getUint32(this.skip(4), true));
          break; // LONG_BINPUT
        case 0x94:
          this.memoPut(this.memo.size);
          break; // MEMOIZE
        case 0x68:
          this.push(this.memoGet(this.u8()));
          break; // BINGET
        case 0x6a:
          this.push(this.memoGet(this.view.getUint32(this.skip(4), true)));
          break; // LONG_BINGET
        case 0x63: {
          const module = this.line();
          const name = this.line();
          this.push(this.global(module, name));
          break;
        } // GLOBAL
        case 0x93: {
          const [module, name] = this.popN(2);
          if (typeof module !== 'string' || typeof name !== 'string') throw this.fail('STACK_GLOBAL needs two strings');
          this.push(this.global(module, name));
          break;
        } // STACK_GLOBAL
        case 0x74:
          this.push(new PyTuple(this.popMark()));
          break; // TUPLE
        case 0x85:
          this.push(new PyTuple(this.popN(1)));
          break; // TUPLE1
        case 0x86:
          this.push(new PyTuple(this.popN(2)));
          break; // TUPLE2
        case 0x87:
          this.push(new PyTuple(this.popN(3)));
          break; // TUPLE3
        case 0x6c: {
          const l = new PyList();
          for (const v of this.popMark()) l.items.push(v);
          this.push(l);
          break;
        } // LIST
        case 0x61: {
          const v = this.pop();
          this.topAs(PyList).items.push(v);
          break;
        } // APPEND
        case 0x65: {
          const vs = this.popMark();
          const l = this.topAs(PyList);
          for (const v of vs) l.items.push(v);
          break;
        } // APPENDS
        case 0x64: {
          const d = new PyDict();
          this.setItems(d, this.popMark());
          this.push(d);
          break;
        } // DICT
        case 0x73: {
          const vs = this.popN(2);
          this.setItems(this.topAs(PyDict), vs);
          break;
        } // SETITEM
        case 0x75: {
          const vs = this.popMark();
          this.setItems(this.topAs(PyDict), vs);
          break;
        } // SETITEMS
        case 0x51:
          this.push(this.persistentLoad(this.pop()));
          break; // BINPERSID
        case 0x52: {
          const args = this.pop();
          const fn = this.pop();
          this.push(this.reduce(fn, args));
          break;
        } // REDUCE
        case 0x81: {
          const args = this.pop();
          const cls = this.pop();
          this.push(this.newObj(cls, args));
          break;
        } // NEWOBJ
        case 0x62: {
          const state = this.pop();
          this.build(this.top(), state);
          break;
        } // BUILD
        default:
          throw this.fail(
            `unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at} (not something torch.save writes)`,
          );
      }
    }
  }

  /** The allowlist gate: anything else is refused here, when named, so it can never be called. */
  private global(module: string, name: string): PyGlobal {
    const qualified = `${module}.${name}`;
    if (isAllowedGlobal(qualified)) return new PyGlobal(qualified);
    // Other torch storage classes (Bool, Byte, complex, quantized...) are harmless but have no engine dtype; say so plainly.
    if (module === 'torch' && /^[A-Za-z0-9]+Storage$/.test(name))
      throw this.fail(
        `tensor storage type torch.${name} is not supported (only float32/16, bfloat16, float64, int64, int32)`,
      );
    throw this.fail(
      `data.pkl references the global ${qualified.slice(0, 200)}, which a plain state dict never needs; refusing to load it`,
    );
  }

  private reduce(fn: PyValue, args: PyValue): PyValue {
    if (!(fn instanceof PyGlobal)) throw this.fail(`REDUCE on ${describe(fn)}, which is not callable`);
    if (!(args instanceof PyTuple))
      throw this.fail(`REDUCE arguments for ${fn.qualified} are ${describe(args)}, not a tuple`);
    if (fn.qualified === ORDERED_DICT) {
      if (args.items.length !== 0) throw this.fail('OrderedDict is only supported without constructor arguments');
      return new PyDict();
    }
    if (fn.qualified === REBUILD_TENSOR_V2 || fn.qualified === REBUILD_TENSOR)
      return this.rebuildTensor(fn.qualified, args.items);
    throw this.fail(`${fn.qualified} cannot be called while loading`);
  }

  private newObj(cls: PyValue, args: PyValue): PyValue {
    if (cls instanceof PyGlobal && cls.qualified === ORDERED_DICT && args instanceof PyTuple && args.items.length === 0)
      return new PyDict();
    throw this.fail(`NEWOBJ of ${describe(cls)} is not supported`);
  }

  /** BUILD on an OrderedDict sets attributes such as state_dict()'s _metadata; they carry no tensor data. */
  private build(target: PyValue | undefined, state: PyValue): void {
    if (!(target instanceof PyDict)) throw this.fail(`BUILD on ${describe(target)} is not supported`);
    if (state !== null && !(state instanceof PyDict) && !(state instanceof PyTuple))
      throw this.fail(`BUILD state for a dict is ${describe(state)}`);
  }

  /** Persistent ids are ('storage', torch.<Type>Storage, key, location, numel). */
  private persistentLoad(pid: PyValue): StorageRef {
    if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage')
      throw this.fail(`persistent id ${describe(pid)} is not a ('storage', type, key, location, numel) tuple`);
    const [, type, key, location, numel] = pid.items;
    const dtype =
      type instanceof PyGlobal && type.qualified.startsWith('torch.')
        ? STORAGE_CLASS_DTYPE.get(type.qualified.slice('torch.'.length))
        : undefined;
    if (!dtype) throw this.fail(`persistent id names storage type ${describe(type)}`);
    if (typeof key !== 'string' || key.length === 0 || key.length > 256)
      throw this.fail('persistent id has no valid storage key');
    if (typeof location !== 'string') throw this.fail(`storage ${key} has a location that is not a string`);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0)
      throw this.fail(`storage ${key} has element count ${describe(numel)}`);
    return new StorageRef(dtype, key, location, numel);
  }

  /** _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata]) or _rebuild_tensor(storage, offset, size, stride). */
  private rebuildTensor(fn: string, args: readonly PyValue[]): TensorValue {
    const v2 = fn === REBUILD_TENSOR_V2;
    if (v2 ? args.length !== 6 && args.length !== 7 : args.length !== 4)
      throw this.fail(`${fn} called with ${args.length} arguments`);
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) throw this.fail(`${fn} got ${describe(storage)} instead of a storage`);
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
      throw this.fail(`tensor on storage ${storage.key} has storage offset ${describe(offset)}`);
    const shape = this.intTuple(size, 'size', storage.key);
    const strides = this.intTuple(stride, 'stride', storage.key);
    if (shape.length !== strides.length)
      throw this.fail(`tensor on storage ${storage.key} has ${shape.length} sizes but ${strides.length} strides`);
    if (v2 && typeof args[4] !== 'boolean')
      throw this.fail(`tensor on storage ${storage.key} has requires_grad ${describe(args[4])}`);
    const elem = DTYPE_BYTES[storage.dtype];
    let numel = 1n;
    let maxIndex = BigInt(offset);
    for (let i = 0; i < shape.length; i++) {
      numel *= BigInt(shape[i]!);
      if (shape[i]! > 0) maxIndex += BigInt(shape[i]! - 1) * BigInt(strides[i]!);
    }
    if (numel > 0n && maxIndex >= BigInt(storage.numel)) {
      throw this.fail(
        `tensor [${shape.join(', ')}] with stride [${strides.join(', ')}] and offset ${offset} reaches element ${maxIndex} but storage ${storage.key} has ${storage.numel}`,
      );
    }
    if (numel === 0n && offset > storage.numel)
      throw this.fail(`storage offset ${offset} is past the end of storage ${storage.key}`);
    const outBytes = numel * BigInt(elem);
    if (outBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`tensor [${shape.join(', ')}] is too large`);
    this.budget -= Number(outBytes);
    if (this.budget < 0)
      throw this.fail(
        'tensors would materialise to far more bytes than the file holds (views repeating storage elements)',
      );
    const src = this.storageBytes(storage);
    return new TensorValue({
      dtype: storage.dtype,
      shape,
      data: materialise(src, elem, offset, shape, strides, Number(outBytes)),
    });
  }

  /** Bytes of data/<key>, checked against the numel the pickle declared (torch writes exactly numel * itemsize). */
  private storageBytes(ref: StorageRef): Uint8Array {
    const expected = ref.numel * DTYPE_BYTES[ref.dtype];
    const cached = this.storageCache.get(ref.key);
    if (cached && (cached.dtype !== ref.dtype || cached.bytes.length !== expected))
      throw this.fail(`storage ${ref.key} is declared with two different types or sizes`);
    if (cached) return cached.bytes;
    const entry = this.zip.entries.get(`${this.folder}/data/${ref.key}`);
    if (!entry) throw this.fail(`storage ${ref.key} has no ${this.folder}/data/${ref.key} entry in the archive`);
    if (entry.uncompressedSize !== expected) {
      throw this.fail(
        `storage ${ref.key} should hold ${ref.numel} ${ref.dtype} elements (${expected} bytes) but data/${ref.key} has ${entry.uncompressedSize} bytes`,
      );
    }
    const bytes = this.zip.read(entry);
    this.storageCache.set(ref.key, { dtype: ref.dtype, bytes });
    return bytes;
  }

  private intTuple(v: PyValue | undefined, what: string, key: string): number[] {
    if (!(v instanceof PyTuple)) throw this.fail(`tensor on storage ${key} has ${what} ${describe(v)}, not a tuple`);
    if (v.items.length > MAX_TENSOR_DIMS) throw this.fail(`tensor on storage ${key} has ${v.items.length} dimensions`);
    return v.items.map((x) => {
      if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0)
        throw this.fail(`tensor on storage ${key} has ${what} entry ${describe(x)}`);
      return x;
    });
  }

  private setItems(d: PyDict, kv: PyValue[]): void {
    if (kv.length % 2 !== 0) throw this.fail('odd number of items for a dict');
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i]!;
      if (k instanceof PyList || k instanceof PyDict) throw this.fail('unhashable dict key');
      d.entries.set(k, kv[i + 1]!);
    }
  }

  /** The container APPEND(S)/SETITEM(S) add to: the value on top of the stack. */
  private topAs<T extends PyList | PyDict>(cls: new () => T): T {
    const v = this.top();
    if (!(v instanceof cls))
      throw this.fail(`${cls === (PyList as unknown) ? 'APPEND to' : 'SETITEM on'} ${describe(v)}`);
    return v;
  }

  private push(v: PyValue): void {
    if (this.stack.length >= MAX_PICKLE_STACK) throw this.fail('pickle stack too deep');
    this.stack.push(v);
  }

  private pop(): PyValue {
    return this.popN(1)[0]!;
  }

  /** Pops n values; like CPython, values below the innermost MARK are out of reach. */
  private popN(n: number): PyValue[] {
    if (this.stack.length - n < (this.marks[this.marks.length - 1] ?? 0)) throw this.fail('pickle pops an empty stack');
    return this.stack.splice(this.stack.length - n, n);
  }

  private top(): PyValue | undefined {
    return this.stack[this.stack.length - 1];
  }

  private popMark(): PyValue[] {
    const m = this.marks.pop();
    if (m === undefined) throw this.fail('pickle uses a MARK it never set');
    return this.stack.splice(m, this.stack.length - m);
  }

  private memoPut(i: number): void {
    if (this.stack.length === 0) throw this.fail('memo put with an empty stack');
    this.memo.set(i, this.stack[this.stack.length - 1]!);
  }

  private memoGet(i: number): PyValue {
    if (!this.memo.has(i)) throw this.fail(`memo get of unknown index ${i}`);
    return this.memo.get(i)!;
  }

  private u8(): number {
    return this.pkl[this.skip(1)]!;
  }

  /** Advances past n bytes and returns where they start. */
  private skip(n: number): number {
    if (this.pos + n > this.pkl.length) throw this.fail('data.pkl is truncated');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private take(n: number): Uint8Array {
    const at = this.skip(n);
    return this.pkl.subarray(at, at + n);
  }

  private length64(): number {
    const n = this.view.getBigUint64(this.skip(8), true);
    if (n > BigInt(this.pkl.length)) throw this.fail('data.pkl is truncated');
    return Number(n);
  }

  private text(n: number): string {
    const b = this.take(n);
    try {
      return utf8.decode(b);
    } catch {
      throw this.fail('string in data.pkl is not valid UTF-8');
    }
  }

  private line(): string {
    const end = this.pkl.indexOf(0x0a, this.pos);
    if (end < 0 || end - this.pos > MAX_GLOBAL_LINE)
      throw this.fail('GLOBAL opcode without a short newline-terminated name');
    const s = this.text(end - this.pos);
    this.pos = end + 1;
    return s;
  }

  /** LONG1: little-endian two's-complement integer of n bytes. */
  private long1(): number | bigint {
    const b = this.take(this.u8());
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b.length > 0 && b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  private fail(why: string): EngineError {
    return invalid(this.label, `data.pkl: ${why}`);
  }
}

/** Copies a strided view into contiguous row-major bytes. Bounds were checked by the caller. */
function materialise(
  src: Uint8Array,
  elem: number,
  offset: number,
  shape: number[],
  stride: number[],
  outBytes: number,
): Uint8Array {
  const out = new Uint8Array(outBytes);
  if (outBytes === 0) return out;
  // Drop size-1 dims and merge dims that are contiguous with their inner neighbour, so plain tensors are one copy.
  const dims: Array<{ size: number; stride: number }> = [];
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1) continue;
    const prev = dims[dims.length - 1];
    if (prev && prev.stride === stride[i]! * shape[i]!) {
      prev.size *= shape[i]!;
      prev.stride = stride[i]!;
    } else {
      dims.push({ size: shape[i]!, stride: stride[i]! });
    }
  }
  const inner = dims[dims.length - 1];
  let run = elem;
  if (inner && inner.stride === 1) {
    run = inner.size * elem;
    dims.pop();
  }
  const idx = new Array<number>(dims.length).fill(0);
  let s = offset * elem;
  for (let d = 0; d < outBytes; d += run) {
    if (run <= 16) for (let k = 0; k < run; k++) out[d + k] = src[s + k]!;
    else out.set(src.subarray(s, s + run), d);
    for (let j = dims.length - 1; j >= 0; j--) {
      const dim = dims[j]!;
      s += dim.stride * elem;
      const next = idx[j]! + 1;
      if (next < dim.size) {
        idx[j] = next;
        break;
      }
      s -= dim.stride * elem * dim.size;
      idx[j] = 0;
    }
  }
  return out;
}
