import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32c } from '@aws-crypto/crc32c';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import sharp from 'sharp';

/** Raw pixels, row-major HWC: bytes 0..255, or floats in [0, 1] (clamped). */
export interface RawImage {
  rgb: Uint8Array | Float32Array;
  height: number;
  width: number;
  /** 1 gray, 2 gray+alpha, 3 RGB (default), 4 RGBA. */
  channels?: 1 | 2 | 3 | 4;
}

export interface SummaryWriterOptions {
  /** Seconds between background flushes (default 10). */
  flushSecs?: number;
  /** Flush as soon as this many encoded bytes are pending (default 1 MiB), bounding memory between flushes. */
  maxPendingBytes?: number;
  /** Appended to the event file name, as TensorBoard's own `filename_suffix`. */
  filenameSuffix?: string;
}

// Field numbers from tensorboard/compat/proto/{event,summary,histogram,tensor,tensor_shape}.proto.
const EVENT = { wallTime: 1, step: 2, fileVersion: 3, summary: 5 } as const;
const SUMMARY = { value: 1 } as const;
const VALUE = { tag: 1, simpleValue: 2, image: 4, histo: 5, tensor: 8, metadata: 9 } as const;
const IMAGE = { height: 1, width: 2, colorspace: 3, encoded: 4 } as const;
const HISTO = { min: 1, max: 2, num: 3, sum: 4, sumSquares: 5, bucketLimit: 6, bucket: 7 } as const;
const METADATA = { pluginData: 1 } as const;
const PLUGIN_DATA = { pluginName: 1 } as const;
const TENSOR = { dtype: 1, shape: 2, stringVal: 8 } as const;
const DT_STRING = 7;

export const FILE_VERSION = 'brain.Event:2';

/** TFRecord's CRC mask: rotate right by 15 and add a constant, all in uint32. */
export function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(data) >>> 0;
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: u64 length, masked CRC of the length bytes, the data, masked CRC of the data. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.byteLength + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.byteLength), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.byteLength, maskedCrc32c(data), true);
  return out;
}

let defaultBucketLimits: Float64Array | undefined;
/**
 * TensorFlow's default histogram bucket edges (histogram.cc): ±1e-12 growing by 10% up to 1e20,
 * mirrored, with 0 and ±DBL_MAX. Bucket i counts values in [limit[i-1], limit[i]).
 */
export function tensorboardBucketLimits(): Float64Array {
  if (!defaultBucketLimits) {
    const pos: number[] = [];
    for (let v = 1e-12; v < 1e20; v *= 1.1) pos.push(v);
    pos.push(Number.MAX_VALUE);
    const neg = pos.map((v) => -v).reverse();
    defaultBucketLimits = Float64Array.from([...neg, 0, ...pos]);
  }
  return defaultBucketLimits;
}

export interface Histogram {
  min: number;
  max: number;
  num: number;
  sum: number;
  sumSquares: number;
  bucketLimit: number[];
  bucket: number[];
}

/**
 * Histogram as TensorFlow encodes it: counts over the default buckets, with every run of empty
 * buckets collapsed into one entry (keeping the run's last edge). Non-finite values are left out:
 * they would turn min/max/sum into NaN and TensorBoard could not draw the rest.
 */
export function computeHistogram(values: ArrayLike<number>): Histogram {
  const limits = tensorboardBucketLimits();
  const counts = new Float64Array(limits.length);
  let min = Number.MAX_VALUE;
  let max = -Number.MAX_VALUE;
  let num = 0;
  let sum = 0;
  let sumSquares = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) continue;
    // upper_bound: the first edge strictly greater than v.
    let lo = 0;
    let hi = limits.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (limits[mid]! > v) hi = mid;
      else lo = mid + 1;
    }
    counts[lo]!++;
    if (v < min) min = v;
    if (v > max) max = v;
    num++;
    sum += v;
    sumSquares += v * v;
  }
  const bucketLimit: number[] = [];
  const bucket: number[] = [];
  for (let i = 0; i < counts.length; ) {
    let end = limits[i]!;
    let count = counts[i]!;
    i++;
    if (count <= 0) {
      while (i < counts.length && counts[i]! <= 0) {
        end = limits[i]!;
        count = counts[i]!;
        i++;
      }
    }
    bucketLimit.push(end);
    bucket.push(count);
  }
  return { min, max, num, sum, sumSquares, bucketLimit, bucket };
}

/** Width, height and TensorBoard colorspace of a PNG, from its IHDR chunk. */
export function pngInfo(png: Uint8Array): { width: number; height: number; colorspace: number } {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  const isPng = png.byteLength >= 26 && signature.every((b, i) => png[i] === b) && String.fromCharCode(...png.subarray(12, 16)) === 'IHDR';
  if (!isPng) throw new Error('image bytes are not a PNG (pass raw pixels as {rgb, height, width} instead)');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const colorType = png[25]!;
  // PNG color types: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA → Summary.Image colorspace 1..4.
  const colorspace = ({ 0: 1, 2: 3, 3: 3, 4: 2, 6: 4 } as Record<number, number>)[colorType] ?? 3;
  return { width: view.getUint32(16), height: view.getUint32(20), colorspace };
}

async function encodePng(img: RawImage): Promise<Uint8Array> {
  const channels = img.channels ?? 3;
  const n = img.height * img.width * channels;
  if (img.rgb.length !== n) {
    throw new Error(`image has ${img.rgb.length} values but ${img.height}x${img.width}x${channels} needs ${n}`);
  }
  let bytes: Uint8Array;
  if (img.rgb instanceof Float32Array) {
    bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = Math.round(Math.min(1, Math.max(0, img.rgb[i]!)) * 255);
  } else {
    bytes = img.rgb;
  }
  let pipeline = sharp(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
    raw: { width: img.width, height: img.height, channels },
  });
  // sharp widens raw gray to RGB unless told to keep it; TensorBoard shows gray PNGs as they are.
  if (channels <= 2) pipeline = pipeline.toColourspace('b-w');
  const png = await pipeline.png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

const openWriters = new Set<SummaryWriter>();
let exitHookInstalled = false;
let nextUid = 0;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: flush with writeSync so the last steps are not lost.
  process.on('exit', () => {
    for (const w of openWriters) w.flush();
  });
}

/**
 * Writes a TensorBoard event file (`events.out.tfevents.<secs>.<host>.<pid>.<uid>`) under `logdir`,
 * without TensorFlow: Event protos framed as TFRecords. Events are buffered and appended on flush(),
 * every `flushSecs`, when the buffer grows large, and at process exit.
 */
export class SummaryWriter {
  readonly logdir: string;
  readonly path: string;
  private fd: number | undefined;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private readonly maxPendingBytes: number;
  private readonly timer: NodeJS.Timeout;

  constructor(logdir: string, opts: SummaryWriterOptions = {}) {
    const flushSecs = opts.flushSecs ?? 10;
    if (!(flushSecs > 0)) throw new Error(`flushSecs must be positive, got ${flushSecs}`);
    this.logdir = logdir;
    this.maxPendingBytes = opts.maxPendingBytes ?? 1 << 20;
    fs.mkdirSync(logdir, { recursive: true });
    const secs = String(Math.floor(Date.now() / 1000)).padStart(10, '0');
    const name = `events.out.tfevents.${secs}.${os.hostname()}.${process.pid}.${nextUid++}${opts.filenameSuffix ?? ''}`;
    this.path = path.join(logdir, name);
    this.fd = fs.openSync(this.path, 'a');
    openWriters.add(this);
    installExitHook();
    this.timer = setInterval(() => this.flush(), flushSecs * 1000);
    this.timer.unref();
    const first = new BinaryWriter();
    first.tag(EVENT.wallTime, WireType.Bit64).double(Date.now() / 1000);
    first.tag(EVENT.fileVersion, WireType.LengthDelimited).string(FILE_VERSION);
    this.enqueue(first.finish());
    // TensorBoard discovers runs by file; make the file valid immediately.
    this.flush();
  }

  scalar(tag: string, value: number, step: number, wallTime?: number): void {
    this.writeSummaryValue(step, wallTime, (v) => {
      v.tag(VALUE.tag, WireType.LengthDelimited).string(tag);
      v.tag(VALUE.simpleValue, WireType.Bit32).float(value);
    });
  }

  /** A PNG as is, or raw pixels encoded to PNG first. */
  async image(tag: string, img: Uint8Array | RawImage, step: number, wallTime?: number): Promise<void> {
    const when = wallTime ?? Date.now() / 1000;
    const png = img instanceof Uint8Array ? img : await encodePng(img);
    const info = pngInfo(png);
    this.writeSummaryValue(step, when, (v) => {
      v.tag(VALUE.tag, WireType.LengthDelimited).string(tag);
      v.tag(VALUE.image, WireType.LengthDelimited).fork();
      v.tag(IMAGE.height, WireType.Varint).int32(info.height);
      v.tag(IMAGE.width, WireType.Varint).int32(info.width);
      v.tag(IMAGE.colorspace, WireType.Varint).int32(info.colorspace);
      v.tag(IMAGE.encoded, WireType.LengthDelimited).bytes(png);
      v.join();
    });
  }

  histogram(tag: string, values: ArrayLike<number>, step: number, wallTime?: number): void {
    const h = computeHistogram(values);
    this.writeSummaryValue(step, wallTime, (v) => {
      v.tag(VALUE.tag, WireType.LengthDelimited).string(tag);
      v.tag(VALUE.histo, WireType.LengthDelimited).fork();
      v.tag(HISTO.min, WireType.Bit64).double(h.min);
      v.tag(HISTO.max, WireType.Bit64).double(h.max);
      v.tag(HISTO.num, WireType.Bit64).double(h.num);
      v.tag(HISTO.sum, WireType.Bit64).double(h.sum);
      v.tag(HISTO.sumSquares, WireType.Bit64).double(h.sumSquares);
      v.tag(HISTO.bucketLimit, WireType.LengthDelimited).fork();
      for (const x of h.bucketLimit) v.double(x);
      v.join();
      v.tag(HISTO.bucket, WireType.LengthDelimited).fork();
      for (const x of h.bucket) v.double(x);
      v.join();
      v.join();
    });
  }

  /** Markdown text, as the text plugin reads it: a scalar DT_STRING tensor tagged with plugin 'text'. */
  text(tag: string, text: string, step: number, wallTime?: number): void {
    this.writeSummaryValue(step, wallTime, (v) => {
      v.tag(VALUE.tag, WireType.LengthDelimited).string(tag);
      v.tag(VALUE.metadata, WireType.LengthDelimited).fork();
      v.tag(METADATA.pluginData, WireType.LengthDelimited).fork();
      v.tag(PLUGIN_DATA.pluginName, WireType.LengthDelimited).string('text');
      v.join();
      v.join();
      v.tag(VALUE.tensor, WireType.LengthDelimited).fork();
      v.tag(TENSOR.dtype, WireType.Varint).int32(DT_STRING);
      v.tag(TENSOR.shape, WireType.LengthDelimited).bytes(new Uint8Array(0));
      v.tag(TENSOR.stringVal, WireType.LengthDelimited).bytes(new TextEncoder().encode(text));
      v.join();
    });
  }

  /** Append everything buffered to the file (synchronously, so it also works in an exit handler). */
  flush(): void {
    if (this.fd === undefined || this.pending.length === 0) return;
    const chunk = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    let off = 0;
    while (off < chunk.byteLength) off += fs.writeSync(this.fd, chunk, off, chunk.byteLength - off);
  }

  close(): void {
    if (this.fd === undefined) return;
    this.flush();
    clearInterval(this.timer);
    fs.closeSync(this.fd);
    this.fd = undefined;
    openWriters.delete(this);
  }

  private writeSummaryValue(step: number, wallTime: number | undefined, value: (w: BinaryWriter) => void): void {
    if (this.fd === undefined) throw new Error(`SummaryWriter for ${this.logdir} is closed`);
    if (!Number.isInteger(step)) throw new Error(`step must be an integer, got ${step}`);
    const w = new BinaryWriter();
    w.tag(EVENT.wallTime, WireType.Bit64).double(wallTime ?? Date.now() / 1000);
    w.tag(EVENT.step, WireType.Varint).int64(step);
    w.tag(EVENT.summary, WireType.LengthDelimited).fork();
    w.tag(SUMMARY.value, WireType.LengthDelimited).fork();
    value(w);
    w.join();
    w.join();
    this.enqueue(w.finish());
  }

  private enqueue(event: Uint8Array): void {
    const rec = frameRecord(event);
    this.pending.push(rec);
    this.pendingBytes += rec.byteLength;
    if (this.pendingBytes >= this.maxPendingBytes) this.flush();
  }
}
