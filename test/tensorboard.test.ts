import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SummaryWriter } from '../src/io/tensorboard.js';

// ---------------------------------------------------------------------------------------------
// An independent reader: table-driven CRC32C and a minimal protobuf wire decoder, sharing no code
// with the writer.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function masked(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

interface Field {
  no: number;
  wire: number;
  varint?: bigint;
  bytes?: Uint8Array;
}
function decodeMessage(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const no = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ no, wire, varint: varint() });
    else if (wire === 1) out.push({ no, wire, bytes: buf.subarray(i, (i += 8)) });
    else if (wire === 5) out.push({ no, wire, bytes: buf.subarray(i, (i += 4)) });
    else if (wire === 2) {
      const len = Number(varint());
      out.push({ no, wire, bytes: buf.subarray(i, (i += len)) });
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}
const one = (fs_: Field[], no: number): Field => {
  const hits = fs_.filter((f) => f.no === no);
  if (hits.length !== 1) throw new Error(`field ${no}: expected once, found ${hits.length}`);
  return hits[0]!;
};
const has = (fs_: Field[], no: number) => fs_.some((f) => f.no === no);
const f64 = (f: Field) => new DataView(f.bytes!.buffer, f.bytes!.byteOffset, 8).getFloat64(0, true);
const f32 = (f: Field) => new DataView(f.bytes!.buffer, f.bytes!.byteOffset, 4).getFloat32(0, true);
const str = (f: Field) => new TextDecoder().decode(f.bytes!);
const packedDoubles = (f: Field) => {
  const b = f.bytes!;
  return Array.from({ length: b.length / 8 }, (_, k) => new DataView(b.buffer, b.byteOffset + 8 * k, 8).getFloat64(0, true));
};

/** Split a TFRecord file, checking the length and both masked CRCs of every record. */
function readRecords(file: string): Uint8Array[] {
  const buf = new Uint8Array(fs.readFileSync(file));
  const records: Uint8Array[] = [];
  let i = 0;
  while (i < buf.length) {
    const view = new DataView(buf.buffer, buf.byteOffset + i);
    const len = Number(view.getBigUint64(0, true));
    expect(view.getUint32(8, true), `length crc at ${i}`).toBe(masked(buf.subarray(i, i + 8)));
    const data = buf.subarray(i + 12, i + 12 + len);
    expect(view.getUint32(12 + len, true), `data crc at ${i}`).toBe(masked(data));
    records.push(data);
    i += 16 + len;
  }
  expect(i).toBe(buf.length);
  return records;
}

interface Ev {
  wallTime: number;
  step: bigint;
  fileVersion?: string;
  value?: Field[];
}
function readEvents(file: string): Ev[] {
  return readRecords(file).map((r) => {
    const e = decodeMessage(r);
    const ev: Ev = { wallTime: f64(one(e, 1)), step: has(e, 2) ? one(e, 2).varint! : 0n };
    if (has(e, 3)) ev.fileVersion = str(one(e, 3));
    if (has(e, 5)) ev.value = decodeMessage(one(decodeMessage(one(e, 5).bytes!), 1).bytes!);
    return ev;
  });
}

// ---------------------------------------------------------------------------------------------

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-tb-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('test helpers', () => {
  it('CRC32C matches the standard check value', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });
});

describe('SummaryWriter', () => {
  it('names the file like TensorBoard and starts with the file_version event', () => {
    const before = Date.now() / 1000;
    const w = new SummaryWriter(path.join(dir, 'run0'));
    w.close();
    const name = path.basename(w.path);
    expect(name).toMatch(new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.${os.hostname().replace(/[.]/g, '\\.')}\\.${process.pid}\\.\\d+$`));
    const [ev, ...rest] = readEvents(w.path);
    expect(rest).toEqual([]);
    expect(ev!.fileVersion).toBe('brain.Event:2');
    expect(ev!.wallTime).toBeGreaterThanOrEqual(before - 1);
    expect(ev!.wallTime).toBeLessThanOrEqual(Date.now() / 1000 + 1);
  });

  it('writes scalars with tag, step, wall time and float32 value', () => {
    const w = new SummaryWriter(path.join(dir, 'scalars'));
    w.scalar('loss/train', 0.1, 7, 1700000000.25);
    w.scalar('lr', 3e-4, 2 ** 40, 1700000001.5); // int64 steps beyond 32 bits
    w.close();
    const evs = readEvents(w.path).slice(1);
    expect(evs.map((e) => [e.wallTime, e.step])).toEqual([
      [1700000000.25, 7n],
      [1700000001.5, 2n ** 40n],
    ]);
    expect(str(one(evs[0]!.value!, 1))).toBe('loss/train');
    expect(one(evs[0]!.value!, 2).wire).toBe(5); // fixed32: simple_value is a float
    expect(f32(one(evs[0]!.value!, 2))).toBe(Math.fround(0.1));
    expect(f32(one(evs[1]!.value!, 2))).toBe(Math.fround(3e-4));
  });

  it('writes images: raw pixels are PNG-encoded with height/width/colorspace, PNG bytes pass through', async () => {
    const w = new SummaryWriter(path.join(dir, 'images'));
    const rgb = Uint8Array.from({ length: 2 * 3 * 3 }, (_, i) => (i * 37) % 256);
    await w.image('samples', { rgb, height: 2, width: 3 }, 1);
    const gray = Float32Array.from([0, 0.5, 1, 2]); // 2 is clamped to 1
    await w.image('gray', { rgb: gray, height: 2, width: 2, channels: 1 }, 2);
    const rgba = await sharp({ create: { width: 5, height: 4, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 0.5 } } }).png().toBuffer();
    await w.image('passthrough', new Uint8Array(rgba), 3);
    w.close();
    const evs = readEvents(w.path).slice(1);
    const img = (e: Ev) => decodeMessage(one(e.value!, 4).bytes!);

    const a = img(evs[0]!);
    expect([one(a, 1).varint, one(a, 2).varint, one(a, 3).varint]).toEqual([2n, 3n, 3n]);
    const decoded = await sharp(Buffer.from(one(a, 4).bytes!)).raw().toBuffer({ resolveWithObject: true });
    expect(decoded.info).toMatchObject({ width: 3, height: 2, channels: 3 });
    expect([...decoded.data]).toEqual([...rgb]);

    const g = img(evs[1]!);
    expect([one(g, 1).varint, one(g, 2).varint, one(g, 3).varint]).toEqual([2n, 2n, 1n]);
    expect(one(g, 4).bytes![25]).toBe(0); // PNG colour type 0: stored as gray
    const gd = await sharp(Buffer.from(one(g, 4).bytes!)).extractChannel(0).raw().toBuffer();
    expect([...gd]).toEqual([0, 128, 255, 255]); // 0.5*255 = 127.5 rounds half up

    const p = img(evs[2]!);
    expect([one(p, 1).varint, one(p, 2).varint, one(p, 3).varint]).toEqual([4n, 5n, 4n]);
    expect(Buffer.from(one(p, 4).bytes!).equals(rgba)).toBe(true);
    expect(str(one(evs[2]!.value!, 1))).toBe('passthrough');
  });

  it('writes histograms: hand-worked single zero', () => {
    const w = new SummaryWriter(path.join(dir, 'hist0'));
    w.histogram('h', [0], 1);
    w.close();
    const h = decodeMessage(one(readEvents(w.path)[1]!.value!, 5).bytes!);
    expect([f64(one(h, 1)), f64(one(h, 2)), f64(one(h, 3)), f64(one(h, 4)), f64(one(h, 5))]).toEqual([0, 0, 1, 0, 0]);
    // Zero falls in [0, 1e-12); the empty runs below and above collapse to their last edge.
    expect(packedDoubles(one(h, 6))).toEqual([0, 1e-12, Number.MAX_VALUE]);
    expect(packedDoubles(one(h, 7))).toEqual([0, 1, 0]);
  });

  it('writes histograms whose buckets agree with a brute-force count over the TensorFlow edges', () => {
    const values = [-3.5, -1, 0.001, 0.5, 1, 1, 2.5, 1e6, NaN];
    const w = new SummaryWriter(path.join(dir, 'hist'));
    w.histogram('weights', values, 10);
    w.close();
    const h = decodeMessage(one(readEvents(w.path)[1]!.value!, 5).bytes!);
    const finite = values.filter(Number.isFinite);
    expect(f64(one(h, 1))).toBe(-3.5);
    expect(f64(one(h, 2))).toBe(1e6);
    expect(f64(one(h, 3))).toBe(finite.length);
    expect(f64(one(h, 4))).toBeCloseTo(finite.reduce((s, v) => s + v, 0), 9);
    expect(f64(one(h, 5))).toBeCloseTo(finite.reduce((s, v) => s + v * v, 0), 3);
    // Edges per TensorFlow histogram.cc, rebuilt here; each value counted by linear scan.
    const pos: number[] = [];
    for (let v = 1e-12; v < 1e20; v *= 1.1) pos.push(v);
    const edges = [...pos.map((v) => -v).reverse(), -Number.MAX_VALUE, 0, ...pos, Number.MAX_VALUE].sort((a, b) => a - b);
    const counts = new Map<number, number>();
    for (const v of finite) {
      const edge = edges.find((e) => e > v)!;
      counts.set(edge, (counts.get(edge) ?? 0) + 1);
    }
    const limits = packedDoubles(one(h, 6));
    const buckets = packedDoubles(one(h, 7));
    const nonEmpty = limits.map((l, k) => [l, buckets[k]!] as const).filter(([, c]) => c > 0);
    expect(new Map(nonEmpty)).toEqual(counts);
    // Empty runs are collapsed: never two empty buckets in a row, and the last edge is DBL_MAX.
    for (let k = 1; k < buckets.length; k++) expect(buckets[k - 1]! > 0 || buckets[k]! > 0).toBe(true);
    expect(limits[limits.length - 1]).toBe(Number.MAX_VALUE);
    expect(limits.every((l, k) => k === 0 || l > limits[k - 1]!)).toBe(true);
  });

  it('writes text as a DT_STRING tensor with text-plugin metadata', () => {
    const w = new SummaryWriter(path.join(dir, 'text'));
    w.text('config', '# run\nlr = 3e-4 — ünïcode', 0);
    w.close();
    const v = readEvents(w.path)[1]!.value!;
    expect(str(one(v, 1))).toBe('config');
    const pluginData = decodeMessage(one(decodeMessage(one(v, 9).bytes!), 1).bytes!);
    expect(str(one(pluginData, 1))).toBe('text');
    const tensor = decodeMessage(one(v, 8).bytes!);
    expect(one(tensor, 1).varint).toBe(7n); // DT_STRING
    expect(one(tensor, 2).bytes!.length).toBe(0); // scalar shape
    expect(str(one(tensor, 8))).toBe('# run\nlr = 3e-4 — ünïcode');
  });

  it('buffers until flush, then flushes on its interval without being asked', async () => {
    const w = new SummaryWriter(path.join(dir, 'interval'), { flushSecs: 0.05 });
    const size0 = fs.statSync(w.path).size;
    w.scalar('a', 1, 1);
    expect(fs.statSync(w.path).size).toBe(size0);
    await new Promise((r) => setTimeout(r, 200));
    expect(readEvents(w.path).length).toBe(2);
    w.close();
    expect(() => w.scalar('a', 1, 2)).toThrow(/closed/);
  });

  it('flushes at process exit', () => {
    const logdir = path.join(dir, 'exit');
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
    const script = path.join(dir, 'exit-child.ts');
    fs.writeFileSync(
      script,
      `import { SummaryWriter } from ${JSON.stringify(path.join(root, 'src/io/tensorboard.ts'))};\n` +
        `const w = new SummaryWriter(${JSON.stringify(logdir)}, { flushSecs: 3600 });\n` +
        `w.scalar('last', 42, 99);\nprocess.exit(0);\n`,
    );
    execFileSync(process.execPath, ['--import', 'tsx', script], { cwd: root, stdio: 'pipe' });
    const [file] = fs.readdirSync(logdir);
    const evs = readEvents(path.join(logdir, file!));
    expect(evs.length).toBe(2);
    expect(evs[1]!.step).toBe(99n);
    expect(f32(one(evs[1]!.value!, 2))).toBe(42);
  });
});
