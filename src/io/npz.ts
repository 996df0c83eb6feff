import fs from 'node:fs';
import path from 'node:path';
import { JobError, UsageError } from '../util/errors.js';
import { writeFileAtomic } from './atomic.js';
import { ZipReader, writeZip } from './zip.js';

/**
 * NumPy `.npy` arrays and `.npz` archives (a zip of `<key>.npy`), as `np.save`/`np.savez`/
 * `np.savez_compressed` write them: format versions 1.0, 2.0 and 3.0, little- or big-endian,
 * C or Fortran order. Arrays come out in C order, little-endian host typed arrays. This is how
 * FID statistics travel between tools: pytorch-fid and clean-fid store `mu` and `sigma`.
 */

export type NpyDtype = 'float64' | 'float32' | 'float16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'uint16' | 'uint32' | 'bool';
export type NpyData = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint32Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** C order. float16 comes as raw uint16 bits. */
  data: NpyData;
}

const DESCR: Record<string, { dtype: NpyDtype; bytes: number }> = {
  f8: { dtype: 'float64', bytes: 8 },
  f4: { dtype: 'float32', bytes: 4 },
  f2: { dtype: 'float16', bytes: 2 },
  i8: { dtype: 'int64', bytes: 8 },
  i4: { dtype: 'int32', bytes: 4 },
  i2: { dtype: 'int16', bytes: 2 },
  i1: { dtype: 'int8', bytes: 1 },
  u1: { dtype: 'uint8', bytes: 1 },
  u2: { dtype: 'uint16', bytes: 2 },
  u4: { dtype: 'uint32', bytes: 4 },
  b1: { dtype: 'bool', bytes: 1 },
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

export class NpyError extends JobError {
  override readonly name = 'NpyError' as 'JobError';
}

/** Parse one `.npy` file's bytes; `where` names it in errors (`stats.npz:mu.npy`). */
export function parseNpy(bytes: Uint8Array, where: string): NpyArray {
  const fail = (m: string) => new NpyError(`${where}: ${m}`);
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw fail('not a NumPy .npy array (bad magic)');
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = dv.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw fail('truncated header');
    headerLen = dv.getUint32(8, true);
    headerStart = 12;
  } else throw fail(`.npy format version ${major}.${bytes[7]} is not supported (1.0, 2.0 and 3.0 are)`);
  if (headerStart + headerLen > bytes.length) throw fail('header runs past the end of the file');
  const header = Buffer.from(bytes.subarray(headerStart, headerStart + headerLen)).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr'\s*:\s*'([<>|=])([a-z]\d+)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) throw fail(`cannot read the header ${JSON.stringify(header.trim())} (structured dtypes are not supported)`);
  const kind = DESCR[descr[2]!];
  if (!kind) throw fail(`dtype '${descr[1]}${descr[2]}' is not supported (float64/32/16, int64/32/16/8, uint8/16/32, bool are)`);
  const shape = shapeM[1]!
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  if (shape.some((s) => !Number.isSafeInteger(s) || s < 0)) throw fail(`bad shape (${shapeM[1]})`);
  const numel = shape.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLen;
  const need = numel * kind.bytes;
  if (dataStart + need > bytes.length) throw fail(`shape [${shape}] of ${kind.dtype} needs ${need} bytes, the file holds ${bytes.length - dataStart}`);
  // A copy of exactly the data (Buffer#slice would share a Node Buffer's whole pool, and the byte swap below would
  // write into the caller's bytes): the typed view below spans all of raw.buffer.
  const raw = Uint8Array.prototype.slice.call(bytes, dataStart, dataStart + need);
  if (descr[1] === '>' && kind.bytes > 1) {
    for (let i = 0; i < raw.length; i += kind.bytes) raw.subarray(i, i + kind.bytes).reverse();
  }
  let data = typedView(kind.dtype, raw.buffer);
  if (fortran[1] === 'True' && shape.length > 1) data = fortranToC(data, shape);
  return { dtype: kind.dtype, shape, data };
}

/** A typed array of `dtype` over `buf` (float16 as raw uint16 bits); the PyTorch reader shares it. */
export function typedView(dtype: NpyDtype, buf: ArrayBufferLike): NpyData {
  switch (dtype) {
    case 'float64':
      return new Float64Array(buf);
    case 'float32':
      return new Float32Array(buf);
    case 'float16':
    case 'uint16':
      return new Uint16Array(buf);
    case 'int64':
      return new BigInt64Array(buf);
    case 'int32':
      return new Int32Array(buf);
    case 'int16':
      return new Int16Array(buf);
    case 'int8':
      return new Int8Array(buf);
    case 'uint32':
      return new Uint32Array(buf);
    case 'uint8':
    case 'bool':
      return new Uint8Array(buf);
  }
}

/** Fortran (column-major) element order to C (row-major) for any rank. */
function fortranToC<T extends NpyData>(src: T, shape: number[]): T {
  const out = new (src.constructor as new (n: number) => T)(src.length);
  const nd = shape.length;
  const fStride = new Array<number>(nd);
  for (let d = 0, s = 1; d < nd; d++) {
    fStride[d] = s;
    s *= shape[d]!;
  }
  const idx = new Array<number>(nd).fill(0);
  let f = 0;
  for (let c = 0; c < src.length; c++) {
    (out as unknown as { [i: number]: number | bigint })[c] = (src as unknown as { [i: number]: number | bigint })[f]!;
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      f += fStride[d]!;
      if (idx[d]! < shape[d]!) break;
      f -= fStride[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/** `.npy` bytes as `np.save` writes them: version 1.0 (2.0 for huge headers), little-endian, C order, header padded to 64. */
export function serializeNpy(arr: { data: Float64Array | Float32Array | Int32Array | Uint8Array; shape: number[] }): Uint8Array {
  const descr = arr.data instanceof Float64Array ? '<f8' : arr.data instanceof Float32Array ? '<f4' : arr.data instanceof Int32Array ? '<i4' : '|u1';
  const numel = arr.shape.reduce((a, b) => a * b, 1);
  if (numel !== arr.data.length) throw new Error(`shape [${arr.shape}] has ${numel} elements, data has ${arr.data.length}`);
  const shapeStr = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  let major = 1;
  let pre = 10;
  if (dict.length + pre + 1 > 65535) {
    major = 2;
    pre = 12;
  }
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  dict = dict.padEnd(total - pre - 1, ' ') + '\n';
  const out = new Uint8Array(total + arr.data.byteLength);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (major === 1) dv.setUint16(8, dict.length, true);
  else dv.setUint32(8, dict.length, true);
  out.set(Buffer.from(dict, 'latin1'), pre);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength), total);
  return out;
}

/** Every array in an `.npz`, by key (the entry name without `.npy`). */
export function readNpz(file: string): Map<string, NpyArray> {
  if (!fs.existsSync(file)) throw new UsageError(`${file}: no such file (expected a NumPy .npz)`);
  const zip = ZipReader.open(file);
  try {
    const out = new Map<string, NpyArray>();
    for (const e of zip.entries) {
      if (!e.name.endsWith('.npy')) continue;
      out.set(e.name.slice(0, -4), parseNpy(zip.read(e), `${file}:${e.name}`));
    }
    return out;
  } finally {
    zip.close();
  }
}

export type NpzArrays = Record<string, { data: Float64Array | Float32Array | Int32Array | Uint8Array; shape: number[] }>;

/** Write an `.npz` atomically; `compressed` deflates like `np.savez_compressed`. */
export async function writeNpz(file: string, arrays: NpzArrays, opts: { compressed?: boolean } = {}): Promise<void> {
  const files = Object.entries(arrays).map(([k, a]) => ({ name: `${k}.npy`, data: serializeNpy(a), deflate: opts.compressed ?? false }));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  await writeFileAtomic(file, writeZip(files));
}

/** A float array as float64 (the precision statistics are kept in). */
export function toFloat64(a: NpyArray, where: string): Float64Array {
  if (a.data instanceof Float64Array) return a.data;
  if (a.data instanceof Float32Array) return Float64Array.from(a.data);
  throw new NpyError(`${where}: expected float32 or float64, got ${a.dtype}`);
}
