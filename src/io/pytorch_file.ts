import { constants as bufferConstants } from 'node:buffer';
import fs from 'node:fs';
import { JobError, UsageError } from '../util/errors.js';
import { bf16BitsToF32, f16BitsToF32, type SafetensorsDtype } from './dtypes.js';
import type { HostTensor } from '../nn/module.js';
import { typedView } from './npz.js';
import { PickleError, PyGlobal, PyTuple, acceptsBuild, describe, pyAttributes, unpickle, unpickleAt, type GlobalHandler } from './pickle.js';
import { openSafetensors, saveSafetensors, type TensorEntry, type TensorInfo, type TensorSource } from './safetensors.js';
import { MAX_ENTRY_BYTES, ZipReader, looksLikeZip } from './zip.js';

/**
 * PyTorch `torch.save` files (`.pth`/`.pt`/`.bin`) read without Python. Two layouts exist:
 * the zip archive of torch ≥ 1.6 (`<prefix>/data.pkl`, raw storages under `<prefix>/data/<key>`,
 * `<prefix>/byteorder`) and the legacy stream written with `_use_new_zipfile_serialization=False`
 * (and by torch < 1.6, e.g. pytorch-fid's Inception weights): magic number, protocol version and
 * system-info pickles, the object pickle, the storage-key list, then each storage as an int64
 * element count and its bytes. The older tar layout (torch < 0.4) is recognised and refused.
 * Pickles go through the safe unpickler with only the globals a checkpoint needs.
 */

export type TorchDtype = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

const STORAGE_DTYPES: Record<string, TorchDtype> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

export const TORCH_DTYPE_BYTES: Record<TorchDtype, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export const TORCH_TO_SAFETENSORS: Record<TorchDtype, SafetensorsDtype> = {
  float32: 'F32',
  float64: 'F64',
  float16: 'F16',
  bfloat16: 'BF16',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};

export type TorchTypedArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** One storage (shared by every tensor viewing it), its bytes read on first use, in little-endian order. */
export class TorchStorage {
  private cached: Uint8Array | undefined;
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    readonly numel: number,
    private readonly load: () => Uint8Array,
  ) {}

  bytes(): Uint8Array {
    this.cached ??= this.load();
    return this.cached;
  }
}

export class TorchTensor {
  requiresGrad = false;
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}

  get dtype(): TorchDtype {
    return this.storage.dtype;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** The elements in C order as little-endian bytes, the view's offset and strides applied. */
  contiguousBytes(): Uint8Array {
    const es = TORCH_DTYPE_BYTES[this.dtype];
    const n = this.numel;
    const src = this.storage.bytes();
    const out = new Uint8Array(n * es);
    if (n === 0) return out;
    const nd = this.shape.length;
    let contiguous = true;
    for (let d = nd - 1, expect = 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.stride[d] !== expect) contiguous = false;
      expect *= this.shape[d]!;
    }
    if (contiguous) {
      out.set(src.subarray(this.storageOffset * es, (this.storageOffset + n) * es));
      return out;
    }
    // Walk the index space with an odometer; the innermost run is copied element by element.
    const idx = new Array<number>(nd).fill(0);
    let srcElem = this.storageOffset;
    for (let i = 0; i < n; i++) {
      out.set(src.subarray(srcElem * es, srcElem * es + es), i * es);
      for (let d = nd - 1; d >= 0; d--) {
        idx[d]!++;
        srcElem += this.stride[d]!;
        if (idx[d]! < this.shape[d]!) break;
        srcElem -= this.stride[d]! * this.shape[d]!;
        idx[d] = 0;
      }
    }
    return out;
  }

  /** The elements in C order as the natural typed array (float16/bfloat16 as raw uint16 bits). */
  toTypedArray(): TorchTypedArray {
    const buf = this.contiguousBytes().buffer;
    // Same element layouts as NumPy's; bfloat16 is raw 16-bit words like float16.
    return typedView(this.dtype === 'bfloat16' ? 'float16' : this.dtype, buf) as TorchTypedArray;
  }

  /** What safetensors stores for this tensor: dtype, shape, raw little-endian bytes. */
  toSafetensorsEntry(): TensorEntry {
    return { dtype: TORCH_TO_SAFETENSORS[this.dtype], shape: [...this.shape], data: this.contiguousBytes() };
  }
}

export interface PyTorchFile {
  file: string;
  format: 'zip' | 'legacy';
  /** The unpickled object: Maps, arrays, PyTuples, numbers, strings, TorchTensors. */
  root: unknown;
  byteorder: 'little' | 'big';
  close(): void;
}

/** The magic number torch's legacy format pickles first (`MAGIC_NUMBER` in torch/serialization.py). */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** True for paths inspect/weights should read as PyTorch files. */
export function isPyTorchPath(p: string): boolean {
  return /\.(pth|pt|bin|ckpt)$/i.test(p);
}

export function readPyTorchFile(file: string): PyTorchFile {
  let head: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    head = Buffer.alloc(512);
    const n = fs.readSync(fd, head, 0, 512, 0);
    head = head.subarray(0, n);
    fs.closeSync(fd);
  } catch {
    throw new UsageError(`${file}: cannot open (expected a PyTorch .pth/.pt/.bin file)`);
  }
  if (looksLikeZip(head)) return readZipFormat(file);
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') {
    throw new JobError(
      `${file}: this is PyTorch's pre-0.4 tar checkpoint format, which is not supported; ` +
        're-save it with a current torch (torch.save(torch.load(f), g)) and read that',
    );
  }
  if (head[0] === 0x80) return readLegacyFormat(file);
  throw new JobError(`${file}: not a PyTorch file (neither a zip archive nor a pickle stream; first bytes ${head.subarray(0, 4).toString('hex')})`);
}

// ------------------------------------------------------------------------------------ allow-list

function torchGlobals(): Map<string, GlobalHandler> {
  const g = new Map<string, GlobalHandler>();
  for (const name of Object.keys(STORAGE_DTYPES)) g.set(`torch.${name}`, {});
  for (const name of ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool']) g.set(`torch.${name}`, {});
  g.set('torch.Tensor', {});
  g.set('torch.nn.parameter.Parameter', {});
  const rebuildTensor: GlobalHandler = {
    call: (a) => {
      const [storage, offset, size, stride, requiresGrad] = a;
      if (!(storage instanceof TorchStorage)) throw new Error(`expected a storage, got ${describe(storage)}`);
      const shape = intTuple(size, 'size');
      const strides = intTuple(stride, 'stride');
      if (shape.length !== strides.length) throw new Error(`size has ${shape.length} dims, stride ${strides.length}`);
      if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw new Error(`bad storage offset ${String(offset)}`);
      checkExtent(storage, offset, shape, strides);
      const t = new TorchTensor(storage, offset, shape, strides);
      t.requiresGrad = requiresGrad === true;
      return acceptsBuild(t, () => undefined);
    },
  };
  g.set('torch._utils._rebuild_tensor_v2', rebuildTensor);
  g.set('torch._utils._rebuild_tensor', rebuildTensor);
  const rebuildParameter: GlobalHandler = {
    call: (a) => {
      const t = a[0];
      if (!(t instanceof TorchTensor)) throw new Error(`expected a tensor, got ${describe(t)}`);
      t.requiresGrad = a[1] === true;
      return t;
    },
  };
  g.set('torch._utils._rebuild_parameter', rebuildParameter);
  g.set('torch._utils._rebuild_parameter_with_state', rebuildParameter);
  g.set('torch._tensor._rebuild_from_type_v2', {
    // (func, new_type, args, state): plain tensors and Parameters only; func must itself be allow-listed.
    call: (a) => {
      const [func, newType, args] = a;
      if (!(func instanceof PyGlobal) || !func.handler.call) throw new Error(`expected an allow-listed rebuild function, got ${describe(func)}`);
      if (!(newType instanceof PyGlobal)) throw new Error(`expected a tensor type, got ${describe(newType)}`);
      if (!(args instanceof PyTuple)) throw new Error('expected an argument tuple');
      return func.handler.call(args.items);
    },
  });
  g.set('collections.OrderedDict', {
    call: (a) => {
      const m = new Map<unknown, unknown>();
      const init = a[0];
      if (Array.isArray(init)) for (const pair of init) if (pair instanceof PyTuple && pair.items.length === 2) m.set(pair.items[0], pair.items[1]);
      return m;
    },
  });
  g.set('torch.device', { call: (a) => a.map(String).join(':') });
  g.set('torch.Size', { call: (a) => intTuple(a[0], 'torch.Size') });
  g.set('builtins.set', { call: (a) => new Set(Array.isArray(a[0]) ? a[0] : []) });
  g.set('builtins.frozenset', { call: (a) => new Set(Array.isArray(a[0]) ? a[0] : []) });
  // Protocol 2 writes Python 3 bytes as _codecs.encode(text, 'latin1').
  g.set('_codecs.encode', {
    call: (a) => {
      if (typeof a[0] !== 'string') throw new Error('expected a string');
      return new Uint8Array(Buffer.from(a[0], 'latin1'));
    },
  });
  return g;
}

/** The storage globals and tensor/collection rebuilders a state dict needs, nothing else. */
export const TORCH_ALLOWED_GLOBALS: ReadonlyMap<string, GlobalHandler> = torchGlobals();

function intTuple(v: unknown, what: string): number[] {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : undefined;
  if (!items || !items.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw new Error(`${what} must be a tuple of non-negative integers`);
  return items as number[];
}

function checkExtent(storage: TorchStorage, offset: number, shape: number[], stride: number[]): void {
  if (shape.some((s) => s === 0)) return;
  // A zero-stride (expanded) view can claim any number of elements over a tiny storage; reading it materializes
  // them all in one buffer, so its size is bounded by what one buffer can hold.
  const bytes = shape.reduce((a, b) => a * b, 1) * TORCH_DTYPE_BYTES[storage.dtype];
  // Views within their storage (all that torch.save writes for ordinary tensors) are bounded by the file itself;
  // an expanded view may grow past its storage only up to 256 MiB, so 16 bytes cannot ask for gigabytes.
  const storageBytes = storage.numel * TORCH_DTYPE_BYTES[storage.dtype];
  const limit = Math.min(MAX_ENTRY_BYTES, bufferConstants.MAX_LENGTH, Math.max(storageBytes, 256 * 2 ** 20));
  if (!Number.isSafeInteger(bytes) || bytes > limit) {
    throw new Error(`a view of size [${shape}] would hold ${bytes.toExponential(3)} bytes, more than the ${limit}-byte limit for one tensor`);
  }
  let last = offset;
  for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * stride[d]!;
  if (last >= storage.numel) {
    throw new Error(`a view with offset ${offset}, size [${shape}] and stride [${stride}] reaches element ${last} of a ${storage.numel}-element storage`);
  }
}

function storageDtype(t: unknown): TorchDtype {
  if (!(t instanceof PyGlobal)) throw new Error(`storage type must be a torch storage class, got ${describe(t)}`);
  const dtype = STORAGE_DTYPES[t.qualifiedName.replace(/^torch\./, '')];
  if (!dtype) throw new Error(`unsupported storage type ${t.qualifiedName}`);
  return dtype;
}

function byteSwap(b: Uint8Array, es: number): Uint8Array {
  if (es === 1) return b;
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i += es) for (let j = 0; j < es; j++) out[i + j] = b[i + es - 1 - j]!;
  return out;
}

// --------------------------------------------------------------------------------------- zip layout

function readZipFormat(file: string): PyTorchFile {
  const zip = ZipReader.open(file);
  try {
    const pkl = zip.entries.find((e) => /^[^/]+\/data\.pkl$/.test(e.name) || e.name === 'data.pkl');
    if (!pkl) throw new JobError(`${file}: a zip archive without <prefix>/data.pkl, so not a torch.save file`);
    const prefix = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
    const bo = zip.get(`${prefix}byteorder`);
    const byteorder = bo ? (Buffer.from(zip.read(bo)).toString('latin1').trim() as 'little' | 'big') : 'little';
    if (byteorder !== 'little' && byteorder !== 'big') throw new JobError(`${file}: byteorder record says '${String(byteorder)}'`);
    const storages = new Map<string, TorchStorage>();
    const persistentLoad = (pid: unknown): unknown => {
      if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') throw new JobError(`${file}: unexpected persistent id ${describe(pid)}`);
      const [, type, key, , numel] = pid.items;
      if (typeof key !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw new JobError(`${file}: malformed storage persistent id`);
      const existing = storages.get(key);
      if (existing) return existing;
      const dtype = storageDtype(type);
      const entry = zip.get(`${prefix}data/${key}`);
      if (!entry) throw new JobError(`${file}: storage '${key}' is referenced but ${prefix}data/${key} is missing`);
      const es = TORCH_DTYPE_BYTES[dtype];
      if (entry.size < numel * es) throw new JobError(`${file}: storage '${key}' holds ${entry.size} bytes, ${numel} ${dtype} elements need ${numel * es}`);
      const s = new TorchStorage(key, dtype, numel, () => {
        const b = zip.read(entry).subarray(0, numel * es);
        return byteorder === 'big' ? byteSwap(b, es) : b.slice();
      });
      storages.set(key, s);
      return s;
    };
    let root: unknown;
    try {
      root = unpickle(zip.read(pkl), { globals: TORCH_ALLOWED_GLOBALS, persistentLoad, source: `${file}: ${pkl.name}` });
    } catch (e) {
      if (e instanceof PickleError || e instanceof JobError) throw e;
      throw new JobError(`${file}: ${(e as Error).message}`);
    }
    return { file, format: 'zip', root, byteorder, close: () => zip.close() };
  } catch (e) {
    zip.close();
    throw e;
  }
}

// ------------------------------------------------------------------------------------ legacy layout

function readLegacyFormat(file: string): PyTorchFile {
  const data = new Uint8Array(fs.readFileSync(file));
  const plain = { globals: new Map<string, GlobalHandler>(), source: file };
  let at = unpickleAt(data, 0, plain);
  if (at.value !== LEGACY_MAGIC) {
    throw new JobError(`${file}: a pickle, but not a torch.save file (no PyTorch magic number); refusing to read arbitrary pickles`);
  }
  at = unpickleAt(data, at.end, plain);
  if (at.value !== 1001) throw new JobError(`${file}: legacy protocol version ${String(at.value)} (expected 1001)`);
  at = unpickleAt(data, at.end, plain);
  const sysInfo = at.value;
  const little = !(sysInfo instanceof Map) || sysInfo.get('little_endian') !== false;
  const byteorder = little ? 'little' : 'big';

  const roots = new Map<string, { dtype: TorchDtype; numel: number; bytes?: Uint8Array }>();
  const views = new Map<string, TorchStorage>();
  const persistentLoad = (pid: unknown): unknown => {
    if (!(pid instanceof PyTuple) || pid.items[0] !== 'storage') throw new JobError(`${file}: unexpected persistent id ${describe(pid)}`);
    const [, type, rootKey, , numel, view] = pid.items;
    if (typeof rootKey !== 'string' || typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw new JobError(`${file}: malformed storage persistent id`);
    const dtype = storageDtype(type);
    if (!roots.has(rootKey)) roots.set(rootKey, { dtype, numel });
    const root = roots.get(rootKey)!;
    const es = TORCH_DTYPE_BYTES[dtype];
    let viewKey = rootKey;
    let viewOffset = 0;
    let viewSize = numel;
    if (view instanceof PyTuple) {
      const [vk, off, size] = view.items;
      if (typeof vk !== 'string' || typeof off !== 'number' || typeof size !== 'number') throw new Error('malformed storage view metadata');
      viewKey = vk;
      viewOffset = off;
      viewSize = size;
      if (off + size > root.numel) throw new Error(`storage view ${vk} runs past its ${root.numel}-element root`);
    }
    const existing = views.get(viewKey);
    if (existing) return existing;
    const s = new TorchStorage(viewKey, dtype, viewSize, () => {
      if (!root.bytes) throw new JobError(`${file}: storage '${rootKey}' has no data in the file`);
      return root.bytes.subarray(viewOffset * es, (viewOffset + viewSize) * es);
    });
    views.set(viewKey, s);
    return s;
  };
  at = unpickleAt(data, at.end, { globals: TORCH_ALLOWED_GLOBALS, persistentLoad, source: file });
  const rootObject = at.value;
  at = unpickleAt(data, at.end, plain);
  const keys = at.value;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw new JobError(`${file}: the storage key list is malformed`);
  let pos = at.end;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (const key of keys as string[]) {
    const root = roots.get(key);
    if (pos + 8 > data.length) throw new JobError(`${file}: truncated before storage '${key}'`);
    const n = Number(little ? dv.getBigInt64(pos, true) : dv.getBigInt64(pos, false));
    pos += 8;
    if (!root) throw new JobError(`${file}: the file stores '${key}', which no tensor references`);
    const es = TORCH_DTYPE_BYTES[root.dtype];
    if (n !== root.numel || pos + n * es > data.length) throw new JobError(`${file}: storage '${key}' header says ${n} elements, expected ${root.numel} within the file`);
    const raw = data.subarray(pos, pos + n * es);
    root.bytes = little ? raw.slice() : byteSwap(raw, es);
    pos += n * es;
  }
  return { file, format: 'legacy', root: rootObject, byteorder, close: () => undefined };
}

// ------------------------------------------------------------------------------- state dict access

/** Every tensor reachable through string-keyed dicts (and lists), by dotted path: `state_dict.conv.weight`. */
export function flattenTensors(root: unknown, maxDepth = 64): Map<string, TorchTensor> {
  const out = new Map<string, TorchTensor>();
  const seen = new Set<unknown>();
  const walk = (v: unknown, prefix: string, depth: number) => {
    if (v instanceof TorchTensor) {
      out.set(prefix, v);
      return;
    }
    if (typeof v !== 'object' || v === null || seen.has(v)) return;
    if (depth > maxDepth) throw new JobError(`checkpoint nests deeper than ${maxDepth} levels at '${prefix}'`);
    seen.add(v);
    const join = (k: string) => (prefix ? `${prefix}.${k}` : k);
    if (v instanceof Map) for (const [k, x] of v) walk(x, join(String(k)), depth + 1);
    else if (Array.isArray(v)) v.forEach((x, i) => walk(x, join(String(i)), depth + 1));
    else if (v instanceof PyTuple) v.items.forEach((x, i) => walk(x, join(String(i)), depth + 1));
  };
  walk(root, '', 0);
  return out;
}

/** Keys under which trainers nest the weights, in the order they are tried. */
const STATE_DICT_KEYS = ['state_dict', 'model_state_dict', 'model', 'ema', 'params_ema', 'module', 'net'];

/**
 * The weights of a checkpoint: `key` (dotted, e.g. `ema` or `model.ema`) when given; else the root
 * when it is a dict of tensors; else the first of the usual nesting keys that holds one; else every
 * tensor by dotted path.
 */
export function findStateDict(root: unknown, key?: string): Map<string, TorchTensor> {
  if (key) {
    let v: unknown = root;
    for (const part of key.split('.')) {
      if (!(v instanceof Map) || !v.has(part)) throw new UsageError(`checkpoint has no '${key}' (stopped at '${part}'); top-level keys: ${topKeys(root)}`);
      v = v.get(part);
    }
    return flattenTensors(v);
  }
  if (isTensorDict(root)) return flattenTensors(root);
  if (root instanceof Map) for (const k of STATE_DICT_KEYS) if (isTensorDict(root.get(k))) return flattenTensors(root.get(k));
  return flattenTensors(root);
}

function isTensorDict(v: unknown): v is Map<unknown, unknown> {
  return v instanceof Map && v.size > 0 && [...v.values()].every((x) => x instanceof TorchTensor);
}

function topKeys(root: unknown): string {
  return root instanceof Map ? [...root.keys()].map(String).join(', ') : describe(root);
}

/** The non-tensor values at the top level (epoch, step, config…), for `inspect`. */
export function checkpointScalars(root: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!(root instanceof Map)) return out;
  for (const [k, v] of root) {
    if (typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'bigint' || v === null) out[String(k)] = String(v);
  }
  const meta = pyAttributes.get(root);
  if (meta?.has('_metadata')) out._metadata = '(module version metadata)';
  return out;
}

export interface ConversionResult {
  tensors: number;
  bytes: number;
  /** The dotted key the weights were found under ('' for the root). */
  names: string[];
}

/**
 * A `.pth` state dict as `.safetensors` (dtypes kept, views made contiguous), written atomically;
 * `key` picks a nested dict (`ema`, `state_dict`…) as in findStateDict.
 */
export async function convertPyTorchToSafetensors(
  src: string,
  dest: string,
  opts: { key?: string; metadata?: Record<string, string> } = {},
): Promise<ConversionResult> {
  const f = readPyTorchFile(src);
  try {
    const sd = findStateDict(f.root, opts.key);
    if (sd.size === 0) throw new JobError(`${src}: no tensors found to convert`);
    const entries = new Map<string, TensorEntry>();
    let bytes = 0;
    for (const [name, t] of sd) {
      const e = t.toSafetensorsEntry();
      bytes += e.data.byteLength;
      entries.set(name, e);
    }
    await saveSafetensors(dest, entries, { source_format: 'pytorch', source_file: src.split(/[\\/]/).pop() ?? src, ...opts.metadata });
    return { tensors: sd.size, bytes, names: [...sd.keys()] };
  } finally {
    f.close();
  }
}

/** A tensor as loaders take it: float dtypes as float32, integer and bool dtypes as int32 (range-checked). */
export function toHostTensor(t: TorchTensor, where: string): HostTensor {
  const a = t.toTypedArray();
  const shape = [...t.shape];
  switch (t.dtype) {
    case 'float32':
      return { shape, data: a as Float32Array };
    case 'float64':
      return { shape, data: Float32Array.from(a as Float64Array) };
    case 'float16':
      return { shape, data: Float32Array.from(a as Uint16Array, f16BitsToF32) };
    case 'bfloat16':
      return { shape, data: Float32Array.from(a as Uint16Array, bf16BitsToF32) };
    case 'int64': {
      const out = new Int32Array(a.length);
      (a as BigInt64Array).forEach((v, i) => {
        if (v > 2147483647n || v < -2147483648n) throw new JobError(`${where}: int64 value ${v} at element ${i} does not fit int32`);
        out[i] = Number(v);
      });
      return { shape, data: out };
    }
    default:
      return { shape, data: Int32Array.from(a as ArrayLike<number>) };
  }
}

/**
 * A `.pth` state dict behind the interface safetensors loaders read (names, shapes, tensors on demand),
 * so a model loads from the original PyTorch file without converting it first.
 */
export class PyTorchTensorSource implements TensorSource {
  readonly metadata: Record<string, string>;
  private readonly file: PyTorchFile;
  private readonly tensors: Map<string, TorchTensor>;

  constructor(readonly path: string, opts: { key?: string } = {}) {
    this.file = readPyTorchFile(path);
    try {
      this.tensors = findStateDict(this.file.root, opts.key);
    } catch (e) {
      this.file.close();
      throw e;
    }
    this.metadata = { format: 'pt', ...checkpointScalars(this.file.root) };
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  private get(name: string): TorchTensor {
    const t = this.tensors.get(name);
    if (!t) throw new JobError(`${this.path}: no tensor '${name}'`);
    return t;
  }

  info(name: string): TensorInfo {
    const t = this.get(name);
    return { dtype: TORCH_TO_SAFETENSORS[t.dtype], shape: [...t.shape], dataOffsets: [0, t.numel * TORCH_DTYPE_BYTES[t.dtype]] };
  }

  read(name: string): HostTensor {
    return toHostTensor(this.get(name), `${this.path}: ${name}`);
  }

  readRaw(name: string): Uint8Array {
    return this.get(name).contiguousBytes();
  }

  close(): void {
    this.file.close();
  }
}

/** Weights from a `.safetensors` (or sharded index) or a PyTorch `.pth`/`.pt`/`.bin`, by extension. */
export function openWeightsSource(p: string): TensorSource {
  return isPyTorchPath(p) ? new PyTorchTensorSource(p) : openSafetensors(p);
}
