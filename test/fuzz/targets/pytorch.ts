import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { parseNpy, readNpz, serializeNpy } from '../../../src/io/npz.js';
import { unpickle } from '../../../src/io/pickle.js';
import { flattenTensors, readPyTorchFile, TORCH_ALLOWED_GLOBALS } from '../../../src/io/pytorch_file.js';
import { writeZip } from '../../../src/io/zip.js';
import { FuzzFailure, target } from '../harness.js';

/** The evaluation readers: pickles (through the allow-list), PyTorch .pth files (zip and legacy), .npy/.npz. */
const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');
const pthSeeds = ['torch1', 'torch2'].flatMap((v) =>
  readdirSync(join(FIXTURES, 'pth', v))
    .filter((f) => f.endsWith('.pth'))
    .map((f) => readFileSync(join(FIXTURES, 'pth', v, f))),
);
const npzSeeds = readdirSync(join(FIXTURES, 'npz'))
  .filter((f) => f.endsWith('.npz'))
  .map((f) => readFileSync(join(FIXTURES, 'npz', f)));

/** Truncations and byte edits of one of `seeds`, biased towards the start where headers live. */
function mutated(seeds: Buffer[]): fc.Arbitrary<Buffer> {
  return fc
    .record({
      which: fc.nat(seeds.length - 1),
      edits: fc.array(fc.tuple(fc.oneof(fc.nat(200), fc.nat()), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
      cut: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 3 }),
      fromEnd: fc.option(fc.tuple(fc.nat(120), fc.integer({ min: 0, max: 255 })), { freq: 2 }),
    })
    .map(({ which, edits, cut, fromEnd }) => {
      const b = Buffer.from(seeds[which]!);
      for (const [at, v] of edits) b[at % b.length] = v;
      // Zip archives keep their directory at the end: edit there too.
      if (fromEnd) b[Math.max(0, b.length - 1 - fromEnd[0])] = fromEnd[1];
      return cut === null ? b : b.subarray(0, Math.floor(b.length * cut));
    });
}

/** Pickle opcodes with plausible arguments: enough structure to get past the first byte, hostile in the details. */
const opcode = fc.oneof(
  fc.constantFrom(
    '(', ')', ']', '}', 'a', 'e', 's', 'u', 't', '0', '1', '2', 'R', 'b', 'c', '\x93', 'Q', 'q\x00', 'r\x00\x00\x00\x00', 'h\x00', 'j\x00\x00\x00\x00',
    'K\x07', 'M\xff\xff', 'J\xff\xff\xff\xff', 'N', '\x88', '\x89', '\x85', '\x86', '\x87', '\x94', '\x95\x00\x00\x00\x00\x00\x00\x00\x00',
    'X\x01\x00\x00\x00a', 'X\xff\xff\xff\x7f', 'B\x03\x00\x00\x00abc', 'C\x02ab', '\x8c\x05torch', '\x8c\x08builtins', '\x8c\x04eval',
    'ctorch._utils\n_rebuild_tensor_v2\n', 'cos\nsystem\n', 'cbuiltins\ngetattr\n', 'c__builtin__\nset\n', 'ccollections\nOrderedDict\n',
    '\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80', '\x8b\xff\xff\xff\x7f', 'G?\xf0\x00\x00\x00\x00\x00\x00', 'I12\n', 'L99999999999999999999999L\n', 'F1.5\n',
    'S\'x\'\n', 'Vx\n', 'P0\n', 'Q', 'p0\n', 'g0\n', '\x8e\x00\x00\x00\x00\x00\x00\x00\x00', '\x96\x00\x00\x00\x00\x00\x00\x00\x00', '\x97', '\x98', '.',
  ),
  fc.string({ maxLength: 3 }),
);
const pickleSoup = fc
  .tuple(fc.constantFrom('\x80\x02', '\x80\x04', '\x80\x05', '', '\x80\x09'), fc.array(opcode, { maxLength: 30 }), fc.boolean())
  .map(([proto, ops, stop]) => Buffer.from(proto + ops.join('') + (stop ? '.' : ''), 'latin1'));

/** .npy bytes: the magic, a version, a header dict built from hostile pieces, and some data. */
const npyHeader = fc
  .record({
    descr: fc.oneof(fc.constantFrom("'<f4'", "'>f8'", "'|u1'", "'<i8'", "'|b1'", "'<f2'", "'<c16'", "'O'", "'<U4'", "[('a', '<f4')]", "''"), fc.string({ maxLength: 5 })),
    fortran: fc.constantFrom('False', 'True', '1', 'None'),
    shape: fc.oneof(
      fc.array(fc.nat(5), { maxLength: 3 }).map((s) => `(${s.join(', ')}${s.length === 1 ? ',' : ''})`),
      fc.constantFrom('(-1,)', '(1e9, 1e9)', '(99999999999999999999,)', '(2147483648, 2147483648)', '()', '[3]', '(3', 'None'),
    ),
    version: fc.constantFrom(1, 2, 3, 0, 9),
    data: fc.uint8Array({ maxLength: 64 }),
    lenDelta: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, fc.integer({ min: -20, max: 20 })),
  })
  .map(({ descr, fortran, shape, version, data, lenDelta }) => {
    const text = Buffer.from(`{'descr': ${descr}, 'fortran_order': ${fortran}, 'shape': ${shape}, }`.padEnd(118, ' ') + '\n', 'latin1');
    const len = Math.max(0, text.length + lenDelta);
    const lenField = version === 1 ? Buffer.from([len & 0xff, (len >> 8) & 0xff]) : Buffer.from([len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >>> 24]);
    return Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]), lenField, text, data]);
  });

/** A signed 32-bit pickle int (BININT), or a LONG1 for values past it. */
function pickleInt(n: number): string {
  if (Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return `J${b.toString('latin1')}`;
  }
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt.asIntN(64, BigInt(Math.trunc(n))));
  return `\x8a\x08${b.toString('latin1')}`;
}

const hostileInt = fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 0, max: 6 }) }, fc.constantFrom(-1, -(2 ** 31), 2 ** 31 - 1, 2 ** 40, 2 ** 53, 2 ** 62, 1e15));

/**
 * A well-formed .pth (valid zip, CRCs right) whose pickle rebuilds a tensor with hostile storage size, offset,
 * shape and strides, as a crafted file would: the zip layer passes, the tensor checks have to catch it.
 */
const hostileTensorPth = fc
  .record({
    storage: fc.constantFrom('FloatStorage', 'FloatStorage', 'FloatStorage', 'DoubleStorage', 'HalfStorage', 'LongStorage', 'ByteStorage', 'BoolStorage', 'ComplexFloatStorage', 'Storage'),
    numel: hostileInt,
    dataBytes: fc.option(fc.nat(64), { freq: 3 }),
    offset: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, hostileInt),
    // Usually of one rank, so the extent checks are reached; zero strides make broadcast views of any size.
    view: fc.integer({ min: 0, max: 4 }).chain((rank) =>
      fc.tuple(fc.array(hostileInt, { minLength: rank, maxLength: rank }), fc.oneof(fc.constant(new Array<number>(rank).fill(0)), fc.array(hostileInt, { minLength: rank, maxLength: rank }), fc.array(hostileInt, { maxLength: 4 }))),
    ),
    key: fc.oneof({ weight: 6, arbitrary: fc.constant('0') }, fc.constantFrom('1', '../0', '/etc/passwd', '')),
  })
  .map(({ storage, numel, dataBytes, offset, view: [size, stride], key }) => {
    // Usually a storage of exactly the declared size, so the view checks (not just the size check) are reached.
    const tuple = (xs: number[]) => `(${xs.map(pickleInt).join('')}t`;
    const pkl =
      '\x80\x02}(X\x01\x00\x00\x00w' +
      'ctorch._utils\n_rebuild_tensor_v2\n(' +
      `(X\x07\x00\x00\x00storagectorch\n${storage}\nX${Buffer.from([key.length, 0, 0, 0]).toString('latin1')}${key}X\x03\x00\x00\x00cpu${pickleInt(numel)}tQ` +
      `${pickleInt(offset)}${tuple(size)}${tuple(stride)}\x89ccollections\nOrderedDict\n)RtRu.`;
    const elem = ({ DoubleStorage: 8, HalfStorage: 2, LongStorage: 8, ByteStorage: 1, BoolStorage: 1 } as Record<string, number>)[storage] ?? 4;
    return Buffer.from(
      writeZip([
        { name: 'archive/data.pkl', data: Buffer.from(pkl, 'latin1') },
        { name: 'archive/byteorder', data: Buffer.from('little') },
        { name: 'archive/data/0', data: new Uint8Array(dataBytes ?? Math.max(0, Math.min(numel * elem, 1 << 16))) },
        { name: 'archive/version', data: Buffer.from('3\n') },
      ]),
    );
  });

/** Reads everything a .pth holds the way inspect and the weights converter do: every tensor's bytes. */
function readAllTensors(file: string): void {
  const f = readPyTorchFile(file);
  try {
    for (const t of flattenTensors(f.root).values()) t.contiguousBytes();
  } finally {
    f.close();
  }
}

export const pytorchTargets = [
  target({
    name: 'pickle.opcodes',
    arbitrary: pickleSoup,
    run(bytes) {
      unpickle(bytes, { globals: TORCH_ALLOWED_GLOBALS, source: 'fuzz.pkl' });
    },
  }),
  target({
    name: 'pytorch.file',
    cost: 2,
    arbitrary: mutated(pthSeeds),
    run(bytes, ctx) {
      const file = ctx.file('m.pth');
      writeFileSync(file, bytes);
      readAllTensors(file);
    },
  }),
  target({
    name: 'pytorch.hostile-tensor',
    arbitrary: hostileTensorPth,
    run(bytes, ctx) {
      const file = ctx.file('t.pth');
      writeFileSync(file, bytes);
      readAllTensors(file);
    },
  }),
  target({
    name: 'npz.npy',
    arbitrary: fc.oneof(npyHeader, fc.uint8Array({ maxLength: 40 }), fc.array(fc.nat(4), { maxLength: 3 }).map((shape) => Buffer.from(serializeNpy({ data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape })))),
    run(bytes) {
      const a = parseNpy(bytes, 'fuzz.npy');
      const n = a.shape.reduce((x, y) => x * y, 1);
      if (a.data.length !== n) throw new FuzzFailure(`parsed ${a.data.length} values for shape [${a.shape}]`);
    },
  }),
  target({
    name: 'npz.file',
    cost: 2,
    arbitrary: mutated(npzSeeds),
    run(bytes, ctx) {
      const file = ctx.file('m.npz');
      writeFileSync(file, bytes);
      readNpz(file);
    },
  }),
];
