/**
 * WebDataset shards: POSIX ustar archives in which the files of one sample share a key (`000123.jpg`,
 * `000123.txt`, `000123.json`). WebDataset splits a member name at the first dot of its last path component, so
 * keys must not contain dots; members of a sample are written in sorted extension order, as its TarWriter does.
 */

import { JobError } from '../util/errors.js';

const BLOCK = 512;
const encoder = new TextEncoder();

export interface TarMember {
  name: string;
  data: Uint8Array;
}

export interface TarOptions {
  /** Seconds since the epoch stored for every member; fixed so the same samples give byte-identical shards. */
  mtime?: number;
  /** Permission bits, default 0o444 (read-only, as WebDataset writes). */
  mode?: number;
}

function writeString(buf: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = encoder.encode(value);
  if (bytes.length > length) throw new JobError(`tar header field too long: '${value}' (${bytes.length} > ${length} bytes)`);
  buf.set(bytes, offset);
}

/** Octal digits, zero-padded, NUL-terminated (the ustar numeric field form). */
function writeOctal(buf: Uint8Array, offset: number, length: number, value: number): void {
  const digits = value.toString(8);
  if (digits.length > length - 1) throw new JobError(`tar numeric field overflow: ${value} needs more than ${length - 1} octal digits`);
  writeString(buf, offset, length - 1, digits.padStart(length - 1, '0'));
  buf[offset + length - 1] = 0;
}

/** One 512-byte ustar header for a regular file. Names up to 100 bytes, or 255 split at a slash into prefix/name. */
export function ustarHeader(name: string, size: number, opts: TarOptions = {}): Uint8Array {
  const h = new Uint8Array(BLOCK);
  let prefix = '';
  let base = name;
  if (encoder.encode(name).length > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || encoder.encode(name.slice(cut + 1)).length > 100) throw new JobError(`tar member name too long for ustar: ${name}`);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  writeString(h, 0, 100, base);
  writeOctal(h, 100, 8, opts.mode ?? 0o444);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, Math.floor(opts.mtime ?? 0));
  h.fill(0x20, 148, 156); // the checksum is computed with its own field as spaces
  h[156] = 0x30; // '0': regular file
  writeString(h, 257, 6, 'ustar');
  h[262] = 0;
  writeString(h, 263, 2, '00');
  writeString(h, 265, 32, 'scaleforge');
  writeString(h, 297, 32, 'scaleforge');
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  writeString(h, 148, 7, sum.toString(8).padStart(6, '0') + '\0');
  h[155] = 0x20;
  return h;
}

/** Header, data and padding of one member. */
export function tarMemberChunks(m: TarMember, opts: TarOptions = {}): Uint8Array[] {
  const chunks = [ustarHeader(m.name, m.data.byteLength, opts), m.data];
  const pad = (BLOCK - (m.data.byteLength % BLOCK)) % BLOCK;
  if (pad) chunks.push(new Uint8Array(pad));
  return chunks;
}

/** Two zero blocks close an archive. */
export function tarEnd(): Uint8Array {
  return new Uint8Array(2 * BLOCK);
}

/** A whole archive in memory (small archives and tests; shards are streamed member by member). */
export function tarBytes(members: readonly TarMember[], opts: TarOptions = {}): Uint8Array {
  return Buffer.concat([...members.flatMap((m) => tarMemberChunks(m, opts)), tarEnd()]);
}

export interface WebDatasetSample {
  key: string;
  /** extension (without dot) → bytes */
  fields: Record<string, Uint8Array>;
}

// Member names become paths when a shard is extracted: no separators, NUL or other control characters, no `..`.
const SAFE_KEY = /^[^./\\\x00-\x1f\x7f]+$/;
const SAFE_EXT = /^[^/\\\x00-\x1f\x7f]+$/;

/** A sample key is a file name stem in the output: non-empty, without dots, slashes or control characters. */
export function checkSampleKey(key: string): void {
  if (!SAFE_KEY.test(key)) {
    throw new JobError(`sample key ${JSON.stringify(key.slice(0, 80))} must be non-empty without dots, slashes or control characters`);
  }
}

export function sampleMembers(sample: WebDatasetSample): TarMember[] {
  checkSampleKey(sample.key);
  const exts = Object.keys(sample.fields).filter((ext) => !ext.startsWith('_'));
  for (const ext of exts) {
    if (!SAFE_EXT.test(ext) || ext.split('.').includes('')) {
      throw new JobError(`webdataset field ${JSON.stringify(ext.slice(0, 80))} of sample '${sample.key}' must be an extension without slashes, empty parts or control characters`);
    }
  }
  return exts.sort().map((ext) => ({ name: `${sample.key}.${ext}`, data: sample.fields[ext]! }));
}

/** `00000.tar`, `00001.tar`, … */
export function shardName(index: number): string {
  return `${String(index).padStart(5, '0')}.tar`;
}
