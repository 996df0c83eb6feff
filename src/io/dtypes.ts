import os from 'node:os';

/** Every dtype string the safetensors format defines (huggingface/safetensors `Dtype`). */
export const SAFETENSORS_DTYPES = [
  'BOOL',
  'F4',
  'F6_E2M3',
  'F6_E3M2',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'F8_E8M0',
  'F8_E4M3FNUZ',
  'F8_E5M2FNUZ',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'C64',
  'F64',
  'I64',
  'U64',
] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

export type DtypeKind = 'bool' | 'int' | 'uint' | 'float' | 'complex';

export interface DtypeInfo {
  /** Bits per element; the sub-byte formats pack several elements per byte. */
  bits: number;
  kind: DtypeKind;
  /** False for the packed sub-byte formats, whose element order within a byte we cannot convert with confidence. */
  convertible: boolean;
}

export const DTYPE_INFO: Record<SafetensorsDtype, DtypeInfo> = {
  BOOL: { bits: 8, kind: 'bool', convertible: true },
  F4: { bits: 4, kind: 'float', convertible: false },
  F6_E2M3: { bits: 6, kind: 'float', convertible: false },
  F6_E3M2: { bits: 6, kind: 'float', convertible: false },
  U8: { bits: 8, kind: 'uint', convertible: true },
  I8: { bits: 8, kind: 'int', convertible: true },
  F8_E5M2: { bits: 8, kind: 'float', convertible: true },
  F8_E4M3: { bits: 8, kind: 'float', convertible: true },
  F8_E8M0: { bits: 8, kind: 'float', convertible: true },
  F8_E4M3FNUZ: { bits: 8, kind: 'float', convertible: true },
  F8_E5M2FNUZ: { bits: 8, kind: 'float', convertible: true },
  I16: { bits: 16, kind: 'int', convertible: true },
  U16: { bits: 16, kind: 'uint', convertible: true },
  F16: { bits: 16, kind: 'float', convertible: true },
  BF16: { bits: 16, kind: 'float', convertible: true },
  I32: { bits: 32, kind: 'int', convertible: true },
  U32: { bits: 32, kind: 'uint', convertible: true },
  F32: { bits: 32, kind: 'float', convertible: true },
  C64: { bits: 64, kind: 'complex', convertible: true },
  F64: { bits: 64, kind: 'float', convertible: true },
  I64: { bits: 64, kind: 'int', convertible: true },
  U64: { bits: 64, kind: 'uint', convertible: true },
};

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_INFO, s);
}

/**
 * Sort key of the reference writer, which orders tensors by its `Dtype` enum (declared in
 * increasing alignment order, so equal sizes such as C64/F64/I64/U64 still have a fixed order).
 */
export function dtypeAlignmentRank(d: SafetensorsDtype): number {
  return SAFETENSORS_DTYPES.indexOf(d);
}

/** Byte size of `numel` elements, or undefined when sub-byte elements do not fill whole bytes. */
export function byteSize(d: SafetensorsDtype, numel: number): number | undefined {
  const bits = numel * DTYPE_INFO[d].bits;
  return bits % 8 === 0 ? bits / 8 : undefined;
}

// Typed-array views reinterpret file bytes in host order; the format is little-endian.
if (os.endianness() !== 'LE') throw new Error('scaleforge io: big-endian hosts are not supported');

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// ---------------------------------------------------------------- IEEE half (F16)

/** float32 → IEEE binary16 bits, round to nearest even; overflow → ±inf; NaN → quiet NaN with sign. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2^-25 even the smallest subnormal is more than half an ulp away.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (and reaches inf at the top).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

let f16Table: Float32Array | undefined;
/** All 65536 half values, built once: decoding then is one lookup per element. */
function f16Lut(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
  }
  return f16Table;
}

// ---------------------------------------------------------------- bfloat16

/** float32 → bfloat16 bits, round to nearest even (overflow → ±inf); NaN stays NaN (quiet bit set). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

// ---------------------------------------------------------------- 8-bit floats

interface MiniFloat {
  expBits: number;
  manBits: number;
  bias: number;
  /** 'ieee': all-ones exponent is inf/NaN; 'fn': only S.1111.111 is NaN; 'fnuz': 0x80 is the only NaN, no −0; 'e8m0': exponent only. */
  style: 'ieee' | 'fn' | 'fnuz' | 'e8m0';
}

const MINIFLOATS: Partial<Record<SafetensorsDtype, MiniFloat>> = {
  F8_E4M3: { expBits: 4, manBits: 3, bias: 7, style: 'fn' },
  F8_E5M2: { expBits: 5, manBits: 2, bias: 15, style: 'ieee' },
  F8_E4M3FNUZ: { expBits: 4, manBits: 3, bias: 8, style: 'fnuz' },
  F8_E5M2FNUZ: { expBits: 5, manBits: 2, bias: 16, style: 'fnuz' },
  F8_E8M0: { expBits: 8, manBits: 0, bias: 127, style: 'e8m0' },
};

function decodeMiniFloat(f: MiniFloat, code: number): number {
  if (f.style === 'e8m0') return code === 0xff ? NaN : 2 ** (code - f.bias);
  if (f.style === 'fnuz' && code === 0x80) return NaN;
  const sign = code & 0x80 ? -1 : 1;
  const expMax = (1 << f.expBits) - 1;
  const exp = (code >>> f.manBits) & expMax;
  const mant = code & ((1 << f.manBits) - 1);
  const mantMax = (1 << f.manBits) - 1;
  if (f.style === 'ieee' && exp === expMax) return mant === 0 ? sign * Infinity : NaN;
  if (f.style === 'fn' && exp === expMax && mant === mantMax) return NaN;
  if (exp === 0) return sign * mant * 2 ** (1 - f.bias - f.manBits);
  return sign * (1 + mant / (1 << f.manBits)) * 2 ** (exp - f.bias);
}

const miniLuts = new Map<SafetensorsDtype, Float32Array>();
function miniLut(d: SafetensorsDtype): Float32Array {
  let lut = miniLuts.get(d);
  if (!lut) {
    const f = MINIFLOATS[d]!;
    lut = new Float32Array(256);
    for (let c = 0; c < 256; c++) lut[c] = decodeMiniFloat(f, c);
    miniLuts.set(d, lut);
  }
  return lut;
}

/** Value of one 8-bit float code, for the F8_* dtypes. */
export function f8ToF32(d: SafetensorsDtype, code: number): number {
  return miniLut(d)[code & 0xff]!;
}

/**
 * float → 8-bit float code, round to nearest even. Overflow follows the formats' usual
 * (non-saturating) conversion: ±inf for E5M2, NaN for the formats without infinities.
 * Works on magnitudes: for the sign-magnitude formats the codes 0..max are in increasing value
 * order, so "even code" is "even mantissa" and the code after the largest finite is the overflow.
 */
export function f32ToF8(d: SafetensorsDtype, x: number): number {
  const f = MINIFLOATS[d];
  if (!f || f.style === 'e8m0') throw new Error(`no float → ${d} encoder`);
  const nanCode = f.style === 'fnuz' ? 0x80 : f.style === 'fn' ? 0x7f : 0x7e;
  if (Number.isNaN(x)) return nanCode;
  const negative = x < 0 || Object.is(x, -0);
  const signBit = negative ? 0x80 : 0;
  const a = Math.abs(x);
  const lut = miniLut(d);
  // Largest finite magnitude code: 0x7e for fn (0x7f is NaN), 0x7b for ieee (0x7c is inf), 0x7f for fnuz.
  const infCode = ((1 << f.expBits) - 1) << f.manBits;
  const maxCode = f.style === 'fn' ? 0x7e : f.style === 'ieee' ? infCode - 1 : 0x7f;
  const overflow = f.style === 'ieee' ? infCode : nanCode;
  const maxVal = lut[maxCode]!;
  if (a >= maxVal) {
    if (a === maxVal) return signBit | maxCode;
    const ulp = maxVal - lut[maxCode - 1]!;
    const halfway = maxVal + ulp / 2;
    // A tie goes to the even neighbour: maxCode is even for fn (0x7e), odd for ieee (0x7b) and fnuz (0x7f).
    if (a < halfway || (a === halfway && (maxCode & 1) === 0)) return signBit | maxCode;
    return f.style === 'fnuz' ? nanCode : signBit | overflow;
  }
  let lo = 0;
  let hi = maxCode;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (lut[mid]! <= a) lo = mid;
    else hi = mid;
  }
  // Now lut[lo] <= a < lut[hi], hi = lo + 1.
  const dLo = a - lut[lo]!;
  const dHi = lut[hi]! - a;
  const code = dLo < dHi || (dLo === dHi && (lo & 1) === 0) ? lo : hi;
  // fnuz has no −0 (0x80 is its NaN), so anything that rounds to zero is +0.
  if (code === 0 && f.style === 'fnuz') return 0;
  return signBit | code;
}

// ---------------------------------------------------------------- bulk conversion

/** Host array a dtype converts to: floats (and complex, as interleaved re/im) → Float32Array, ints/bool → Int32Array. */
export function hostArrayKind(d: SafetensorsDtype): 'float32' | 'int32' {
  const k = DTYPE_INFO[d].kind;
  return k === 'float' || k === 'complex' ? 'float32' : 'int32';
}

export class DtypeConversionError extends Error {
  override readonly name = 'DtypeConversionError';
}

/**
 * Decode little-endian file bytes of `dtype` into a host array. For F32, C64 and I32 the result
 * is a view sharing memory with `bytes` when aligned (so a multi-GB tensor is not held twice);
 * misaligned input is copied first.
 */
export function decodeToHost(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array | Int32Array {
  const info = DTYPE_INFO[dtype];
  if (!info.convertible) {
    throw new DtypeConversionError(`${dtype} is a packed ${info.bits}-bit format; it can be read raw but not converted`);
  }
  const numel = (bytes.byteLength * 8) / info.bits;
  const view = <T>(Ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number }, n: number): T => {
    const b = bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0 ? bytes : bytes.slice();
    return new Ctor(b.buffer, b.byteOffset, n);
  };
  switch (dtype) {
    case 'F32':
      return view(Float32Array, numel);
    case 'C64':
      return view(Float32Array, numel * 2);
    case 'F64':
      return Float32Array.from(view(Float64Array, numel));
    case 'F16': {
      const lut = f16Lut();
      const src = view(Uint16Array, numel);
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = lut[src[i]!]!;
      return out;
    }
    case 'BF16': {
      const src = view(Uint16Array, numel);
      const out = new Uint32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = src[i]! << 16;
      return new Float32Array(out.buffer);
    }
    case 'F8_E4M3':
    case 'F8_E5M2':
    case 'F8_E4M3FNUZ':
    case 'F8_E5M2FNUZ':
    case 'F8_E8M0': {
      const lut = miniLut(dtype);
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = lut[bytes[i]!]!;
      return out;
    }
    case 'BOOL': {
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = bytes[i] ? 1 : 0;
      return out;
    }
    case 'U8':
      return Int32Array.from(bytes);
    case 'I8':
      return Int32Array.from(view(Int8Array, numel));
    case 'I16':
      return Int32Array.from(view(Int16Array, numel));
    case 'U16':
      return Int32Array.from(view(Uint16Array, numel));
    case 'I32':
      return view(Int32Array, numel);
    case 'U32': {
      const src = view(Uint32Array, numel);
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) {
        if (src[i]! > 0x7fffffff) throw new DtypeConversionError(`U32 value ${src[i]} at index ${i} does not fit in int32`);
        out[i] = src[i]!;
      }
      return out;
    }
    case 'I64':
    case 'U64': {
      const src = dtype === 'I64' ? view(BigInt64Array, numel) : view(BigUint64Array, numel);
      const out = new Int32Array(numel);
      for (let i = 0; i < numel; i++) {
        const v = src[i]!;
        if (v > 2147483647n || v < -2147483648n) {
          throw new DtypeConversionError(`${dtype} value ${v} at index ${i} does not fit in int32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    default:
      throw new DtypeConversionError(`no conversion for ${dtype}`);
  }
}

/**
 * Encode a host array as little-endian bytes of `dtype`. Floats go to the float dtypes (rounding to
 * nearest even where the target is narrower), ints to the int dtypes with a range check; mixing the
 * two is refused rather than silently rounded. C64 takes interleaved (re, im) pairs.
 */
export function encodeFromHost(dtype: SafetensorsDtype, data: Float32Array | Int32Array): Uint8Array {
  const info = DTYPE_INFO[dtype];
  if (!info.convertible) throw new DtypeConversionError(`${dtype} is a packed ${info.bits}-bit format; pass raw bytes to write it`);
  const isFloatTarget = info.kind === 'float' || info.kind === 'complex';
  if (isFloatTarget !== data instanceof Float32Array) {
    throw new DtypeConversionError(
      `${data instanceof Float32Array ? 'float32' : 'int32'} data cannot be written as ${dtype} (convert it first)`,
    );
  }
  const n = data.length;
  const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (dtype) {
    case 'F32':
    case 'C64':
      return bytesOf(Float32Array.from(data));
    case 'F64':
      return bytesOf(Float64Array.from(data));
    case 'F16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = f32ToF16Bits(data[i]!);
      return bytesOf(out);
    }
    case 'BF16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = f32ToBf16Bits(data[i]!);
      return bytesOf(out);
    }
    case 'F8_E4M3':
    case 'F8_E5M2':
    case 'F8_E4M3FNUZ':
    case 'F8_E5M2FNUZ': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = f32ToF8(dtype, data[i]!);
      return out;
    }
    case 'F8_E8M0':
      throw new DtypeConversionError('writing F8_E8M0 from floats is not supported (scale formats are produced by quantisers)');
    case 'BOOL':
      return bytesOf(checkedInts(data, 0, 1, dtype, Uint8Array));
    case 'U8':
      return bytesOf(checkedInts(data, 0, 255, dtype, Uint8Array));
    case 'I8':
      return bytesOf(checkedInts(data, -128, 127, dtype, Int8Array));
    case 'I16':
      return bytesOf(checkedInts(data, -32768, 32767, dtype, Int16Array));
    case 'U16':
      return bytesOf(checkedInts(data, 0, 65535, dtype, Uint16Array));
    case 'I32':
      return bytesOf(Int32Array.from(data));
    case 'U32':
      return bytesOf(checkedInts(data, 0, 0x7fffffff, dtype, Uint32Array));
    case 'I64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(data[i]!);
      return bytesOf(out);
    }
    case 'U64': {
      checkedInts(data, 0, 0x7fffffff, dtype, Int32Array);
      const out = new BigUint64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(data[i]!);
      return bytesOf(out);
    }
    default:
      throw new DtypeConversionError(`no conversion for ${dtype}`);
  }
}

function checkedInts<T extends { [i: number]: number }>(
  data: Float32Array | Int32Array,
  min: number,
  max: number,
  dtype: SafetensorsDtype,
  Ctor: new (n: number) => T,
): T {
  const out = new Ctor(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < min || v > max) throw new DtypeConversionError(`value ${v} at index ${i} is out of range for ${dtype} [${min}, ${max}]`);
    out[i] = v;
  }
  return out;
}
