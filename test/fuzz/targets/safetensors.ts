import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { SAFETENSORS_DTYPES, SafetensorsFile, ShardedSafetensors, serializeSafetensors, numelOf } from '../../../src/io/safetensors.js';
import { FuzzFailure, target } from '../harness.js';

/** Opens the file and reads every tensor, checking each decoded size against its header entry. */
function readAll(file: string): void {
  const f = SafetensorsFile.open(file);
  try {
    for (const name of f.names()) {
      const t = f.read(name);
      const info = f.info(name);
      const want = numelOf(info.shape) * (info.dtype === 'C64' ? 2 : 1);
      if (t.data.length !== want) throw new FuzzFailure(`tensor '${name}' decoded to ${t.data.length} values, header says ${want}`);
    }
  } finally {
    f.close();
  }
}

const u64le = (n: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, n), true);
  return b;
};

/** Numbers a hostile header puts where a count belongs. */
const junkNumber = fc.oneof(
  { weight: 6, arbitrary: fc.nat(64) },
  fc.constantFrom(-1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e15, 1e308, Number.MAX_SAFE_INTEGER),
  fc.double(),
);
const junkValue: fc.Arbitrary<unknown> = fc.oneof(junkNumber, fc.string({ maxLength: 8 }), fc.constant(null), fc.boolean(), fc.array(junkNumber, { maxLength: 3 }));
const tensorName = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__proto__', 'constructor', 'toString', '__metadata__', 'hasOwnProperty', ''));
const dtype = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...SAFETENSORS_DTYPES) }, fc.constantFrom('F128', 'f32', '', 'U1'), junkValue);

/** A header built as the reference writer would, then bent: wrong offsets, shapes, dtypes, lengths, sizes. */
const hostileFile = fc
  .record({
    tensors: fc.array(
      fc.record({
        name: tensorName,
        dtype,
        shape: fc.oneof({ weight: 6, arbitrary: fc.array(fc.nat(6), { maxLength: 3 }) }, fc.array(junkNumber, { maxLength: 4 }), junkValue),
        offsets: fc.option(fc.oneof(fc.tuple(junkNumber, junkNumber), junkValue), { freq: 3 }),
        extra: fc.option(fc.dictionary(fc.string({ maxLength: 4 }), junkValue, { maxKeys: 2 })),
      }),
      { maxLength: 5 },
    ),
    metadata: fc.option(fc.oneof(fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string({ maxLength: 6 }), junkValue), { maxKeys: 3 }), junkValue)),
    lengthField: fc.oneof(
      { weight: 6, arbitrary: fc.constant<'exact'>('exact') },
      fc.constantFrom(2n ** 63n, 2n ** 64n - 1n, 0n, 100_000_001n, 10n ** 12n),
      fc.integer({ min: -16, max: 16 }).map((d) => ({ delta: d })),
    ),
    dataDelta: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, fc.integer({ min: -40, max: 40 })),
    padding: fc.constantFrom('', ' ', '   ', '\0', '\n'),
    rawJson: fc.option(fc.string({ maxLength: 40 }), { freq: 8 }),
  })
  .map((spec) => {
    let offset = 0;
    const members: string[] = [];
    if (spec.metadata !== null) members.push(`"__metadata__":${JSON.stringify(spec.metadata)}`);
    for (const t of spec.tensors) {
      let offsets: unknown = t.offsets;
      if (offsets === null) {
        // The offsets a consistent file would have, if the dtype and shape allow computing them.
        const shape = Array.isArray(t.shape) ? (t.shape as unknown[]) : [];
        const numel = shape.reduce<number>((a, b) => a * (typeof b === 'number' ? b : 1), 1);
        const bytes = Number.isSafeInteger(numel) ? Math.ceil(numel * (t.dtype === 'F64' ? 8 : t.dtype === 'F32' ? 4 : 1)) : 0;
        offsets = [offset, offset + bytes];
        offset += bytes;
      }
      members.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: offsets, ...(t.extra ?? {}) })}`);
    }
    const json = new TextEncoder().encode((spec.rawJson ?? `{${members.join(',')}}`) + spec.padding);
    const len = spec.lengthField === 'exact' ? BigInt(json.length) : typeof spec.lengthField === 'bigint' ? spec.lengthField : BigInt(json.length + spec.lengthField.delta);
    const data = new Uint8Array(Math.max(0, Math.min(offset, 1 << 16) + spec.dataDelta)).map((_, i) => i * 31);
    return Buffer.concat([u64le(len), json, data]);
  });

export const safetensorsTargets = [
  target({
    name: 'safetensors.bytes',
    arbitrary: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.uint8Array({ maxLength: 48 })).map(([n, rest]) => Buffer.concat([u64le(n), rest])),
    ),
    run(bytes, ctx) {
      const file = ctx.file('x.safetensors');
      writeFileSync(file, bytes);
      readAll(file);
    },
  }),
  target({
    name: 'safetensors.header',
    arbitrary: hostileFile,
    run(bytes, ctx) {
      const file = ctx.file('h.safetensors');
      writeFileSync(file, bytes);
      readAll(file);
    },
  }),
  target({
    name: 'safetensors.roundtrip',
    arbitrary: fc.dictionary(
      fc.string({ minLength: 1, maxLength: 10 }),
      fc.array(fc.nat(4), { maxLength: 3 }).chain((shape) =>
        fc.float32Array({ minLength: numelOf(shape), maxLength: numelOf(shape), noDefaultInfinity: false }).map((data) => ({ shape, data })),
      ),
      { maxKeys: 4 },
    ),
    run(tensors, ctx) {
      const file = ctx.file('r.safetensors');
      writeFileSync(file, serializeSafetensors(tensors));
      const f = SafetensorsFile.open(file);
      try {
        const names = f.names().sort();
        const want = Object.keys(tensors).sort();
        if (JSON.stringify(names) !== JSON.stringify(want)) throw new FuzzFailure(`names ${JSON.stringify(names)} came back for ${JSON.stringify(want)}`);
        for (const n of want) {
          const got = f.read(n);
          const src = tensors[n]!;
          if (JSON.stringify(got.shape) !== JSON.stringify(src.shape)) throw new FuzzFailure(`'${n}': shape ${got.shape} for ${src.shape}`);
          if (!Buffer.from(new Float32Array(got.data).buffer).equals(Buffer.from(src.data.buffer, src.data.byteOffset, src.data.byteLength))) {
            throw new FuzzFailure(`'${n}': data differs after a round trip`);
          }
        }
      } finally {
        f.close();
      }
    },
  }),
  target({
    name: 'safetensors.shard-index',
    arbitrary: fc.oneof(
      fc.json({ maxDepth: 3 }),
      fc
        .dictionary(tensorName, fc.oneof(fc.constantFrom('a.safetensors', '../a.safetensors', '/etc/passwd', '.', '..', 'missing.safetensors', 'a\\..\\b'), fc.string({ maxLength: 8 }), junkValue), { maxKeys: 4 })
        .map((weight_map) => JSON.stringify({ metadata: { total_size: 0 }, weight_map })),
      fc.string({ maxLength: 30 }),
    ),
    run(text, ctx) {
      writeFileSync(`${ctx.dir}/a.safetensors`, serializeSafetensors({ a: { shape: [2], data: new Float32Array([1, 2]) } }));
      const file = ctx.file('model.safetensors.index.json');
      writeFileSync(file, text);
      const s = ShardedSafetensors.open(file);
      try {
        for (const n of s.names()) s.read(n);
      } finally {
        s.close();
      }
    },
  }),
];
