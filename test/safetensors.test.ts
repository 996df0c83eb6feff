import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  bf16BitsToF32,
  decodeToHost,
  encodeFromHost,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f32ToF8,
  f8ToF32,
  type SafetensorsDtype,
} from '../src/io/dtypes.js';
import {
  SafetensorsFile,
  ShardedSafetensors,
  loadModuleWeights,
  loadSafetensors,
  readSafetensorsHeader,
  saveModule,
  saveSafetensors,
  saveShardedSafetensors,
  serializeSafetensors,
  type TensorEntry,
} from '../src/io/safetensors.js';
import { Linear } from '../src/nn/linear.js';
import { Module } from '../src/nn/module.js';
import { Rng } from '../src/util/rng.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'safetensors');
const reference = JSON.parse(fs.readFileSync(path.join(FIX, 'reference.json'), 'utf8')) as {
  metadata: Record<string, string>;
  order: string[];
  tensors: Record<string, { dtype: SafetensorsDtype; shape: number[]; source: (number | string)[]; decoded: (number | string)[] }>;
};
const conversions = JSON.parse(fs.readFileSync(path.join(FIX, 'conversions.json'), 'utf8')) as {
  f32_bits: number[];
  f16_bits: number[];
  bf16_bits: number[];
  f8_values: Record<string, (number | string)[]>;
};

const num = (v: number | string): number => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : (v as number));
const bitsToF32 = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0]!;

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-safetensors-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A safetensors file assembled byte by byte here, independent of the writer under test. */
function handMade(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): string {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(h.byteLength));
  const p = path.join(dir, `hand-${Math.random().toString(36).slice(2)}.safetensors`);
  fs.writeFileSync(p, Buffer.concat([len, h, data]));
  return p;
}

describe('dtype conversions', () => {
  it('float32 → F16 matches PyTorch round-to-nearest-even on every fixture value', () => {
    conversions.f32_bits.forEach((b, i) => {
      expect(f32ToF16Bits(bitsToF32(b)), `input 0x${b.toString(16)}`).toBe(conversions.f16_bits[i]);
    });
  });
  it('float32 → BF16 matches PyTorch round-to-nearest-even on every fixture value', () => {
    conversions.f32_bits.forEach((b, i) => {
      expect(f32ToBf16Bits(bitsToF32(b)), `input 0x${b.toString(16)}`).toBe(conversions.bf16_bits[i]);
    });
  });
  it('knows the F16 landmarks', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // halfway to the next binade: ties to even = inf
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal → even (0)
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 units → 2
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(f32ToF16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(f32ToF16Bits(NaN) & 0x3ff).not.toBe(0);
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(Number.isNaN(f16BitsToF32(0x7e00))).toBe(true);
  });
  it('every finite half survives decode → encode', () => {
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue;
      if (f32ToF16Bits(f16BitsToF32(h)) !== h) throw new Error(`half 0x${h.toString(16)} did not round-trip`);
    }
  });
  it('BF16 ties go to the even mantissa and NaN stays NaN', () => {
    expect(f32ToBf16Bits(bitsToF32(0x3f808000))).toBe(0x3f80); // tie, kept mantissa even → down
    expect(f32ToBf16Bits(bitsToF32(0x3f818000))).toBe(0x3f82); // tie, kept mantissa odd → up
    expect(f32ToBf16Bits(bitsToF32(0x3f808001))).toBe(0x3f81);
    expect(f32ToBf16Bits(bitsToF32(0x7f7fffff))).toBe(0x7f80); // max float rounds to inf
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc049)).toBe(-3.140625);
  });
  it('decodes every code of the F8 formats as defined', () => {
    for (const [dtype, values] of Object.entries(conversions.f8_values)) {
      for (let c = 0; c < 256; c++) {
        const want = num(values[c]!);
        const got = f8ToF32(dtype as SafetensorsDtype, c);
        if (Number.isNaN(want)) expect(got, `${dtype} 0x${c.toString(16)}`).toBeNaN();
        else expect(got, `${dtype} 0x${c.toString(16)}`).toBe(want);
      }
    }
    // Landmarks straight from the OCP FP8 spec.
    expect(f8ToF32('F8_E4M3', 0x7e)).toBe(448);
    expect(f8ToF32('F8_E4M3', 0x01)).toBe(2 ** -9);
    expect(f8ToF32('F8_E5M2', 0x7b)).toBe(57344);
    expect(f8ToF32('F8_E5M2', 0x7c)).toBe(Infinity);
  });
  it('F8 encoding: exact codes round-trip, midpoints tie to even, overflow as the formats define', () => {
    for (const dtype of ['F8_E4M3', 'F8_E5M2', 'F8_E4M3FNUZ', 'F8_E5M2FNUZ'] as const) {
      const finite: number[] = [];
      for (let c = 0; c < 256; c++) {
        const v = f8ToF32(dtype, c);
        if (Number.isNaN(v) || !Number.isFinite(v)) continue;
        expect(f32ToF8(dtype, v), `${dtype} code 0x${c.toString(16)}`).toBe(c);
        if (c < 0x80) finite.push(c);
      }
      finite.sort((a, b) => f8ToF32(dtype, a) - f8ToF32(dtype, b));
      for (let i = 0; i + 1 < finite.length; i++) {
        const [a, b] = [finite[i]!, finite[i + 1]!];
        const mid = (f8ToF32(dtype, a) + f8ToF32(dtype, b)) / 2;
        expect(f32ToF8(dtype, mid), `${dtype} midpoint of 0x${a.toString(16)},0x${b.toString(16)}`).toBe(a % 2 === 0 ? a : b);
      }
    }
    expect(f32ToF8('F8_E4M3', 464)).toBe(0x7e); // halfway above 448: ties to even 0x7e
    expect(f32ToF8('F8_E4M3', 465)).toBe(0x7f); // beyond → NaN (no inf in e4m3fn)
    expect(f32ToF8('F8_E4M3', -1e9)).toBe(0xff);
    expect(f32ToF8('F8_E5M2', 61440)).toBe(0x7c); // halfway above 57344: ties to even = inf
    expect(f32ToF8('F8_E5M2', 60000)).toBe(0x7b);
    expect(f32ToF8('F8_E5M2', -Infinity)).toBe(0xfc);
    expect(f32ToF8('F8_E4M3FNUZ', 1e6)).toBe(0x80);
    expect(f32ToF8('F8_E4M3FNUZ', -0)).toBe(0x00); // fnuz has no negative zero
  });
  it('refuses mixed float/int conversions and out-of-range integers', () => {
    expect(() => encodeFromHost('I32', new Float32Array([1]))).toThrow(/float32 data cannot be written as I32/);
    expect(() => encodeFromHost('F16', new Int32Array([1]))).toThrow(/int32 data cannot be written as F16/);
    expect(() => encodeFromHost('I8', new Int32Array([5, 200]))).toThrow(/200 at index 1 is out of range for I8/);
    expect(() => encodeFromHost('BOOL', new Int32Array([2]))).toThrow(/out of range for BOOL/);
    expect(() => encodeFromHost('U64', new Int32Array([-1]))).toThrow(/out of range for U64/);
    const big = new Uint8Array(new BigInt64Array([2n ** 40n]).buffer);
    expect(() => decodeToHost('I64', big)).toThrow(/1099511627776 at index 0 does not fit in int32/);
    expect(() => decodeToHost('U32', new Uint8Array(new Uint32Array([2 ** 31]).buffer))).toThrow(/does not fit in int32/);
    expect(() => decodeToHost('F4', new Uint8Array(2))).toThrow(/F4 is a packed 4-bit format/);
  });
});

describe('reference file (written by a Python script with struct + json)', () => {
  const refPath = path.join(FIX, 'reference.safetensors');

  it('reads header, metadata and every tensor with the values the script recorded', () => {
    const h = readSafetensorsHeader(refPath);
    expect(h.metadata).toEqual(reference.metadata);
    expect(h.headerSize % 8).toBe(0);
    const f = SafetensorsFile.open(refPath);
    try {
      expect(f.names()).toEqual(reference.order);
      for (const [name, t] of Object.entries(reference.tensors)) {
        expect(f.info(name).dtype).toBe(t.dtype);
        expect(f.info(name).shape).toEqual(t.shape);
        const got = f.read(name);
        expect(got.shape).toEqual(t.dtype === 'C64' ? [...t.shape, 2] : t.shape);
        expect(got.data).toBeInstanceOf(['F32', 'F16', 'BF16', 'F64', 'C64', 'F8_E4M3', 'F8_E5M2'].includes(t.dtype) ? Float32Array : Int32Array);
        const want = t.decoded.map(num);
        // F64 is rounded to the nearest float32 on the way in.
        const expected = t.dtype === 'F64' ? want.map(Math.fround) : want;
        expect([...got.data].map((v) => (Number.isNaN(v) ? 'nan' : v)), name).toEqual(expected.map((v) => (Number.isNaN(v) ? 'nan' : v)));
      }
    } finally {
      f.close();
    }
  });

  it('the writer reproduces the reference file byte for byte', async () => {
    const tensors = new Map<string, TensorEntry>();
    for (const [name, t] of Object.entries(reference.tensors)) {
      const src = t.source.map(num);
      const isFloat = ['F32', 'F16', 'BF16', 'F64'].includes(t.dtype);
      if (t.dtype.startsWith('F8')) tensors.set(name, { dtype: t.dtype, shape: t.shape, data: Uint8Array.from(src) });
      else if (t.dtype === 'C64') tensors.set(name, { dtype: 'C64', shape: [...t.shape, 2], data: Float32Array.from(src) });
      else tensors.set(name, { dtype: t.dtype, shape: t.shape, data: isFloat ? Float32Array.from(src) : Int32Array.from(src) });
    }
    const expected = fs.readFileSync(refPath);
    const bytes = serializeSafetensors(tensors, reference.metadata);
    expect(Buffer.from(bytes).equals(expected)).toBe(true);
    const out = path.join(dir, 'rewritten.safetensors');
    await saveSafetensors(out, tensors, reference.metadata);
    expect(fs.readFileSync(out).equals(expected)).toBe(true);
  });

  it('matches the reference serializer test vectors (empty file, metadata only)', () => {
    // From safetensors tensor.rs test_empty: `{}` padded to 8, and {"__metadata__":{"framework":"pt"}} padded to 40.
    expect([...serializeSafetensors({})]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    const withMeta = serializeSafetensors({}, { framework: 'pt' });
    expect(withMeta[0]).toBe(40);
    expect(new TextDecoder().decode(withMeta.subarray(8))).toBe('{"__metadata__":{"framework":"pt"}}     ');
    // test_serialization: one F32 [1,2,3] tensor "attn.0" → 64-byte header, data 0..5.
    const one = serializeSafetensors({ 'attn.0': { shape: [1, 2, 3], data: Float32Array.from([0, 1, 2, 3, 4, 5]) } });
    expect(one[0]).toBe(64);
    expect(new TextDecoder().decode(one.subarray(8, 72)).trimEnd()).toBe('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}');
    expect([...one.subarray(72, 80)]).toEqual([0, 0, 0, 0, 0, 0, 128, 63]);
  });
});

describe('round trips through a file for every dtype', () => {
  const rng = new Rng(5);
  const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => rng.nextU32() & 0xff);

  it('float dtypes: raw bytes → read (decode) → write (encode) gives the same bytes', async () => {
    const cases: [SafetensorsDtype, number][] = [
      ['F32', 4],
      ['F16', 2],
      ['BF16', 2],
      ['F8_E4M3', 1],
      ['F8_E5M2', 1],
      ['F8_E4M3FNUZ', 1],
      ['F8_E5M2FNUZ', 1],
    ];
    for (const [dtype, size] of cases) {
      const n = 64;
      let raw = randomBytes(n * size);
      // NaN payloads are not preserved through float32, so keep only non-NaN codes.
      const decoded = decodeToHost(dtype, raw.slice()) as Float32Array;
      const keep = [...decoded.keys()].filter((i) => !Number.isNaN(decoded[i]!));
      raw = Uint8Array.from(keep.flatMap((i) => [...raw.subarray(i * size, (i + 1) * size)]));
      const p = path.join(dir, `rt-${dtype}.safetensors`);
      await saveSafetensors(p, { t: { dtype, shape: [keep.length], data: raw } });
      const f = SafetensorsFile.open(p);
      expect(Buffer.from(f.readRaw('t')).equals(Buffer.from(raw))).toBe(true);
      const host = f.read('t');
      f.close();
      expect(Buffer.from(encodeFromHost(dtype, host.data)).equals(Buffer.from(raw)), dtype).toBe(true);
    }
  });

  it('F64, C64, F8_E8M0 and the packed formats', async () => {
    const f64 = Float64Array.from([1.5, -2.25, 3e-39, 1e30]); // float32-representable values round-trip exactly
    const e8m0 = Uint8Array.from([0, 1, 127, 200, 254, 255]);
    const f4 = Uint8Array.from([0x12, 0xff]);
    const p = path.join(dir, 'rt-misc.safetensors');
    await saveSafetensors(p, {
      d: { dtype: 'F64', shape: [4], data: Float32Array.from(f64) },
      c: { dtype: 'C64', shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) },
      s: { dtype: 'F8_E8M0', shape: [6], data: e8m0 },
      q: { dtype: 'F4', shape: [4], data: f4 },
    });
    const f = SafetensorsFile.open(p);
    expect(Buffer.from(f.readRaw('d')).equals(Buffer.from(new Uint8Array(Float64Array.from(f64.map(Math.fround)).buffer)))).toBe(true);
    expect([...f.read('d').data]).toEqual([...f64].map(Math.fround));
    expect(f.info('c').shape).toEqual([2]);
    expect(f.read('c')).toEqual({ shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) });
    expect([...f.read('s').data]).toEqual([2 ** -127, 2 ** -126, 1, 2 ** 73, 2 ** 127, NaN]);
    expect([...f.readRaw('q')]).toEqual([0x12, 0xff]);
    expect(() => f.read('q')).toThrow(/rt-misc\.safetensors: tensor 'q': F4 is a packed 4-bit format/);
    f.close();
  });

  it('integer and bool dtypes keep their values, extremes included', async () => {
    const cases: [SafetensorsDtype, number[]][] = [
      ['BOOL', [0, 1, 1, 0]],
      ['U8', [0, 1, 128, 255]],
      ['I8', [-128, -1, 0, 127]],
      ['I16', [-32768, -1, 0, 32767]],
      ['U16', [0, 1, 40000, 65535]],
      ['I32', [-2147483648, -1, 0, 2147483647]],
      ['U32', [0, 1, 65536, 2147483647]],
      ['I64', [-2147483648, -1, 0, 2147483647]],
      ['U64', [0, 1, 65536, 2147483647]],
    ];
    const p = path.join(dir, 'rt-int.safetensors');
    await saveSafetensors(p, Object.fromEntries(cases.map(([d, v]) => [d, { dtype: d, shape: [2, 2], data: Int32Array.from(v) }])));
    const back = loadSafetensors(p);
    for (const [d, v] of cases) expect(back.get(d), d).toEqual({ shape: [2, 2], data: Int32Array.from(v) });
    // The bytes are the plain little-endian encoding (checked for the 64-bit case against BigInt64Array).
    const f = SafetensorsFile.open(p);
    expect(Buffer.from(f.readRaw('I64')).equals(Buffer.from(new BigInt64Array([-2147483648n, -1n, 0n, 2147483647n]).buffer))).toBe(true);
    f.close();
  });

  it('scalars, empty tensors and integer-like names', async () => {
    const p = path.join(dir, 'rt-shapes.safetensors');
    await saveSafetensors(p, { '2': { shape: [], data: Float32Array.from([7]) }, '10': { shape: [0, 4], data: new Float32Array(0) }, a: { shape: [1], data: Int32Array.from([3]) } });
    const h = readSafetensorsHeader(p);
    const text = fs.readFileSync(p).subarray(8, 8 + h.headerSize).toString();
    // name order within one dtype is by name ("10" < "2"), not JS object-key order.
    expect(text.indexOf('"10"')).toBeLessThan(text.indexOf('"2"'));
    expect(loadSafetensors(p)).toEqual(
      new Map<string, unknown>([
        ['10', { shape: [0, 4], data: new Float32Array(0) }],
        ['2', { shape: [], data: Float32Array.from([7]) }],
        ['a', { shape: [1], data: Int32Array.from([3]) }],
      ]),
    );
  });

  it('rejects bad input to the writer, naming the tensor', async () => {
    await expect(saveSafetensors(path.join(dir, 'x.safetensors'), { w: { shape: [2, 2], data: new Float32Array(3) } })).rejects.toThrow(
      /tensor 'w': data has 3 elements but shape \[2,2\] has 4/,
    );
    await expect(saveSafetensors(path.join(dir, 'x.safetensors'), { w: { shape: [2], data: new Uint8Array(2) } })).rejects.toThrow(
      /tensor 'w': raw Uint8Array data needs an explicit dtype/,
    );
    await expect(saveSafetensors(path.join(dir, 'x.safetensors'), { w: { shape: [2], data: new Int32Array([1, 300]), dtype: 'U8' } })).rejects.toThrow(
      /tensor 'w': value 300 at index 1 is out of range for U8/,
    );
    await expect(
      saveSafetensors(path.join(dir, 'x.safetensors'), {}, { step: 5 as unknown as string }),
    ).rejects.toThrow(/metadata value for 'step' must be a string/);
    expect(fs.existsSync(path.join(dir, 'x.safetensors'))).toBe(false);
  });
});

describe('reader validation (each rule, error names file and tensor)', () => {
  const f32 = (shape: number[], b: number, e: number) => JSON.stringify({ dtype: 'F32', shape, data_offsets: [b, e] });
  const cases: [string, () => string, RegExp][] = [
    ['too short', () => {
      const p = path.join(dir, 'short.safetensors');
      fs.writeFileSync(p, Buffer.from([1, 2, 3]));
      return p;
    }, /too short for the 8-byte header length/],
    ['header over 100 MB', () => handMade('{}', undefined, 100_000_001n), /header length 100000001 exceeds the 100000000-byte limit/],
    ['header length past EOF', () => handMade('{}', undefined, 64n), /header length 64 runs past the end/],
    ['invalid UTF-8', () => handMade(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/],
    ['not starting with {', () => handMade('[1,2]   '), /must start with '\{'/],
    ['invalid JSON', () => handMade('{"a":'), /not valid JSON/],
    ['unknown dtype', () => handMade(`{"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(4)), /tensor 'w': unknown dtype "F7"/],
    ['negative dimension', () => handMade(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, new Uint8Array(4)), /tensor 'w': shape must be/],
    ['gap between tensors', () => handMade(`{"a":${f32([1], 0, 4)},"b":${f32([1], 8, 12)}}`, new Uint8Array(12)), /tensor 'b': invalid data_offsets \[8, 12\].*gap of 4 bytes/],
    ['overlap', () => handMade(`{"a":${f32([2], 0, 8)},"b":${f32([1], 4, 8)}}`, new Uint8Array(8)), /tensor '[ab]': invalid data_offsets.*overlaps/],
    ['not starting at 0', () => handMade(`{"a":${f32([1], 4, 8)}}`, new Uint8Array(8)), /tensor 'a': invalid data_offsets \[4, 8\]/],
    ['end before begin', () => handMade(`{"a":${f32([1], 0, 4)},"b":${f32([0], 4, 0)}}`, new Uint8Array(4)), /tensor 'b': invalid data_offsets \[4, 0\].*end < begin/],
    ['size mismatch', () => handMade(`{"a":${f32([3], 0, 8)}}`, new Uint8Array(8)), /tensor 'a': data_offsets span 8 bytes but F32 \[3\] needs 12/],
    ['trailing bytes', () => handMade(`{"a":${f32([1], 0, 4)}}`, new Uint8Array(5)), /trailing bytes/],
    ['truncated data', () => handMade(`{"a":${f32([2], 0, 8)}}`, new Uint8Array(4)), /file truncated/],
    ['metadata value not a string', () => handMade(`{"__metadata__":{"step":3}}`), /__metadata__ value for 'step' must be a string/],
    ['sub-byte tensor not filling bytes', () => handMade(`{"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, new Uint8Array(2)), /tensor 'q': 3 elements of F4 do not fill whole bytes/],
  ];
  for (const [what, make, re] of cases) {
    it(what, () => {
      const p = make();
      const base = path.basename(p).replace(/[.]/g, '\\.');
      expect(() => readSafetensorsHeader(p)).toThrow(new RegExp(base));
      expect(() => SafetensorsFile.open(p)).toThrow(re);
    });
  }
  it('accepts what the reference accepts: padding, null metadata, zero-size tensors', () => {
    const p = handMade(`{"__metadata__":null,"e":${f32([0], 0, 0)},"a":${f32([1], 0, 4)}}  `, new Uint8Array(Float32Array.from([9]).buffer));
    expect(loadSafetensors(p)).toEqual(new Map<string, unknown>([['e', { shape: [0], data: new Float32Array(0) }], ['a', { shape: [1], data: Float32Array.from([9]) }]]));
  });
  it('reading an unknown name says which file', () => {
    const f = SafetensorsFile.open(path.join(FIX, 'reference.safetensors'));
    expect(() => f.read('nope')).toThrow(/reference\.safetensors: no tensor named 'nope'/);
    f.close();
  });
});

describe('large files', () => {
  it('reads the header of a 4 GiB (sparse) file without touching the data, and a tensor past 4 GiB by positioned read', () => {
    const big = 2 ** 30; // elements of the F32 tensor: 4 GiB
    const header = JSON.stringify({ huge: { dtype: 'F32', shape: [big], data_offsets: [0, 4 * big] }, tail: { dtype: 'I32', shape: [2], data_offsets: [4 * big, 4 * big + 8] } });
    const hb = Buffer.from(header.padEnd(Math.ceil(header.length / 8) * 8, ' '));
    const p = path.join(dir, 'huge.safetensors');
    const fd = fs.openSync(p, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hb.length));
    fs.writeSync(fd, len, 0, 8, 0);
    fs.writeSync(fd, hb, 0, hb.length, 8);
    fs.writeSync(fd, Buffer.from(Int32Array.from([-7, 123456]).buffer), 0, 8, 8 + hb.length + 4 * big);
    fs.closeSync(fd);
    expect(fs.statSync(p).size).toBe(8 + hb.length + 4 * big + 8);

    const spy = vi.spyOn(fs, 'readSync');
    const h = readSafetensorsHeader(p);
    const bytesRead = spy.mock.calls.reduce((s, c) => s + ((c as unknown[])[3] as number), 0);
    spy.mockRestore();
    expect(h.tensors.huge!.shape).toEqual([big]);
    expect(bytesRead).toBe(8 + hb.length);

    const f = SafetensorsFile.open(p);
    expect(f.read('tail')).toEqual({ shape: [2], data: Int32Array.from([-7, 123456]) });
    f.close();
    fs.unlinkSync(p);
  });
});

describe('sharded checkpoints', () => {
  it('writes HF-style shards + index and loads tensors by name across them', async () => {
    const tensors: Record<string, TensorEntry> = {};
    const rng = new Rng(3);
    for (let i = 0; i < 5; i++) tensors[`layer.${i}.weight`] = { shape: [4, 4], data: rng.fillNormal(new Float32Array(16)) };
    tensors['big'] = { shape: [100], data: rng.fillNormal(new Float32Array(100)) };
    tensors['steps'] = { shape: [1], data: Int32Array.from([42]) };
    const indexPath = path.join(dir, 'shard', 'model.safetensors.index.json');
    fs.mkdirSync(path.dirname(indexPath), { recursive: true });
    // 64 B per 4x4 tensor, 400 B for "big", 4 B for "steps": limit 150 → [l0,l1], [l2,l3], [l4], [big], [steps].
    const shards = await saveShardedSafetensors(indexPath, tensors, { maxShardBytes: 150, metadata: { format: 'pt' } });
    expect(shards).toEqual([1, 2, 3, 4, 5].map((i) => `model-0000${i}-of-00005.safetensors`));
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    expect(index.metadata.total_size).toBe(5 * 64 + 400 + 4);
    expect(index.weight_map['layer.1.weight']).toBe('model-00001-of-00005.safetensors');
    expect(index.weight_map['layer.4.weight']).toBe('model-00003-of-00005.safetensors');
    expect(index.weight_map['big']).toBe('model-00004-of-00005.safetensors');
    expect(readSafetensorsHeader(path.join(dir, 'shard', shards[0]!)).metadata).toEqual({ format: 'pt' });

    const all = loadSafetensors(indexPath);
    expect(all.size).toBe(7);
    for (const [k, t] of Object.entries(tensors)) expect(all.get(k)).toEqual({ shape: t.shape, data: t.data });
    const some = loadSafetensors(indexPath, ['big', 'layer.0.weight']);
    expect([...some.keys()]).toEqual(['big', 'layer.0.weight']);

    const s = ShardedSafetensors.open(indexPath);
    expect(s.info('steps').dtype).toBe('I32');
    expect(() => s.read('missing')).toThrow(/model\.safetensors\.index\.json: no tensor named 'missing'/);
    s.close();
  });

  it('an index pointing at a shard without the tensor is reported', async () => {
    const d = path.join(dir, 'badshard');
    fs.mkdirSync(d);
    await saveSafetensors(path.join(d, 'a.safetensors'), { x: { shape: [1], data: Float32Array.from([1]) } });
    fs.writeFileSync(path.join(d, 'm.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: { y: 'a.safetensors' } }));
    expect(() => loadSafetensors(path.join(d, 'm.safetensors.index.json'))).toThrow(/weight_map puts 'y' in a\.safetensors, which does not contain it/);
    fs.writeFileSync(path.join(d, 'n.safetensors.index.json'), JSON.stringify({ weight_map: { y: '../etc/passwd' } }));
    expect(() => loadSafetensors(path.join(d, 'n.safetensors.index.json'))).toThrow(/must be a shard file name in the same directory/);
  });
});

describe('module save / load', () => {
  class Tiny extends Module {
    readonly fc: Linear;
    constructor(seed: number) {
      super();
      this.fc = this.module('fc', new Linear(3, 2, { rng: new Rng(seed) }));
    }
  }

  it('saveModule (F16) → loadModuleWeights gives the F16-rounded weights; strict and non-strict', async () => {
    const a = new Tiny(1);
    const b = new Tiny(2);
    const p = path.join(dir, 'tiny.safetensors');
    await saveModule(p, a, { dtype: 'F16', metadata: { step: '10' } });
    const h = readSafetensorsHeader(p);
    expect(h.tensors['fc.weight']).toMatchObject({ dtype: 'F16', shape: [2, 3] });
    expect(h.metadata).toEqual({ step: '10' });
    expect(loadModuleWeights(p, b)).toEqual({ missing: [], unexpected: [] });
    const wantW = [...a.fc.weight.dataSync()].map((x) => f16BitsToF32(f32ToF16Bits(x)));
    expect([...b.fc.weight.dataSync()]).toEqual(wantW);

    const extra = path.join(dir, 'tiny-extra.safetensors');
    await saveSafetensors(extra, { 'fc.weight': { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }, 'other.bias': { shape: [7], data: new Float32Array(7) } });
    expect(() => loadModuleWeights(extra, b)).toThrow(/missing keys \(1\): fc\.bias[\s\S]*unexpected keys \(1\): other\.bias/);
    expect(loadModuleWeights(extra, b, { strict: false })).toEqual({ missing: ['fc.bias'], unexpected: ['other.bias'] });
    expect([...b.fc.weight.dataSync()]).toEqual([1, 2, 3, 4, 5, 6]);
    a.dispose();
    b.dispose();
  });
});

describe('scaleforge inspect', () => {
  async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
    const { main } = await import('../src/cli/main.js');
    const out: string[] = [];
    const err: string[] = [];
    const w = process.stdout.write.bind(process.stdout);
    const e = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      return { code: await main(args), out: out.join(''), err: err.join('') };
    } finally {
      process.stdout.write = w;
      process.stderr.write = e;
    }
  }

  it('--json lists every tensor with numel and bytes, totals and per-dtype sums, from the header only', async () => {
    const { code, out } = await run(['inspect', path.join(FIX, 'reference.safetensors'), '--json']);
    expect(code).toBe(0);
    const r = JSON.parse(out);
    expect(r.metadata).toEqual(reference.metadata);
    expect(r.tensors.map((t: { name: string }) => t.name)).toEqual(reference.order);
    const size = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, C64: 8, F64: 8, I64: 8, U64: 8 } as Record<string, number>;
    let params = 0;
    let bytes = 0;
    for (const t of r.tensors) {
      const ref = reference.tensors[t.name]!;
      const numel = ref.shape.reduce((a, b) => a * b, 1);
      expect(t).toEqual({ name: t.name, dtype: ref.dtype, shape: ref.shape, numel, bytes: numel * size[ref.dtype]! });
      params += numel;
      bytes += numel * size[ref.dtype]!;
    }
    expect(r.totals).toEqual({ tensors: 19, params, bytes });
    expect(r.byDtype.F32).toEqual({ tensors: 3, params: 7, bytes: 28 });
    expect(r.fileBytes).toBe(fs.statSync(path.join(FIX, 'reference.safetensors')).size);
  });

  it('prints metadata, a table and totals as text; handles a sharded index', async () => {
    const p = path.join(dir, 'inspect.safetensors');
    await saveSafetensors(p, { 'blocks.0.w': { shape: [3, 4], data: new Float32Array(12), dtype: 'BF16' }, n: { shape: [2], data: new Int32Array(2) } }, { format: 'pt' });
    const { code, out } = await run(['inspect', p]);
    expect(code).toBe(0);
    expect(out).toContain('  format: pt');
    expect(out).toMatch(/blocks\.0\.w\s+BF16\s+\[3, 4\]\s+12\s+24/);
    expect(out).toMatch(/total: 2 tensors, 14 params, 32 B/);

    const idx = path.join(dir, 'inspect-shards', 'model.safetensors.index.json');
    fs.mkdirSync(path.dirname(idx));
    await saveShardedSafetensors(idx, { a: { shape: [4], data: new Float32Array(4) }, b: { shape: [4], data: new Float32Array(4) } }, { maxShardBytes: 16 });
    const s = await run(['inspect', idx, '--json']);
    const r = JSON.parse(s.out);
    expect(r.kind).toBe('sharded');
    expect(r.metadata).toEqual({ total_size: '32' });
    expect(r.tensors.map((t: { shard: string }) => t.shard)).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(r.totals).toEqual({ tensors: 2, params: 8, bytes: 32 });
  });

  it('missing file → usage error (exit 2); corrupt file → error naming it (exit 1)', async () => {
    const missing = await run(['inspect', path.join(dir, 'nope.safetensors')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/nope\.safetensors: no such file/);
    const bad = path.join(dir, 'corrupt.safetensors');
    fs.writeFileSync(bad, '{"not": "safetensors"}');
    const corrupt = await run(['inspect', bad]);
    expect(corrupt.code).toBe(1);
    expect(corrupt.err).toMatch(/corrupt\.safetensors: header length \d+ exceeds .*is this a safetensors file/);
  });
});
