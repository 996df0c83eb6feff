import fs from 'node:fs';
import zlib from 'node:zlib';
import { JobError } from '../util/errors.js';

/**
 * A minimal ZIP reader and writer for the two zip-shaped formats evaluation reads: PyTorch's
 * `torch.save` archives (stored entries, ZIP64 past 4 GiB) and NumPy's `.npz` (stored, or deflated
 * by `savez_compressed`). Reading goes through the central directory, the authoritative list,
 * never by scanning local headers, and every offset and size is checked against the file size
 * before anything is allocated.
 */

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the local file header. */
  localHeaderOffset: number;
}

export class ZipError extends JobError {
  override readonly name = 'ZipError' as 'JobError';
}

const EOCD_SIG = 0x06054b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
/** The largest entry this reader inflates into memory (a guard against zip bombs claiming terabytes). */
export const MAX_ENTRY_BYTES = 8 * 1024 ** 3;

/** True when the first four bytes are a local file header or an empty archive's end record. */
export function looksLikeZip(head: Uint8Array): boolean {
  if (head.length < 4) return false;
  const sig = head[0]! | (head[1]! << 8) | (head[2]! << 16) | (head[3]! << 24);
  return sig >>> 0 === LOCAL_SIG || sig >>> 0 === EOCD_SIG;
}

export class ZipReader {
  readonly entries: ZipEntry[];
  private readonly byName: Map<string, ZipEntry>;
  private readonly fd: number;
  private readonly size: number;

  private constructor(
    readonly file: string,
    fd: number,
  ) {
    this.fd = fd;
    this.size = fs.fstatSync(fd).size;
    this.entries = this.readCentralDirectory();
    this.byName = new Map(this.entries.map((e) => [e.name, e]));
  }

  static open(file: string): ZipReader {
    const fd = fs.openSync(file, 'r');
    try {
      return new ZipReader(file, fd);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** The entry's bytes, inflated if deflated, CRC-checked. */
  read(entry: ZipEntry | string): Uint8Array {
    const e = typeof entry === 'string' ? this.byName.get(entry) : entry;
    if (!e) throw new ZipError(`${this.file}: no entry '${String(entry)}' in the archive`);
    const dataStart = this.dataOffset(e);
    if (dataStart + e.compressedSize > this.size) throw this.fail(`entry '${e.name}' runs past the end of the file`);
    const raw = this.readAt(dataStart, e.compressedSize);
    let out: Uint8Array;
    if (e.method === 0) out = raw;
    else if (e.method === 8) {
      if (e.size > MAX_ENTRY_BYTES) throw this.fail(`entry '${e.name}' claims ${e.size} bytes, over the ${MAX_ENTRY_BYTES}-byte limit`);
      try {
        const b = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
        // A plain Uint8Array view: Buffer.slice would share memory where callers expect a copy.
        out = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      } catch (err) {
        throw this.fail(`entry '${e.name}' does not inflate: ${(err as Error).message}`);
      }
    } else throw this.fail(`entry '${e.name}' uses compression method ${e.method}; only stored (0) and deflate (8) are supported`);
    if (out.length !== e.size) throw this.fail(`entry '${e.name}' is ${out.length} bytes, the directory says ${e.size}`);
    if ((zlib.crc32(out) >>> 0) !== e.crc32) throw this.fail(`entry '${e.name}' fails its CRC-32 check (corrupt file)`);
    return out;
  }

  /** Stored entries only: the file offset of the data, so large storages can be read in place. */
  dataOffset(e: ZipEntry): number {
    if (e.localHeaderOffset + 30 > this.size) throw this.fail(`entry '${e.name}': local header offset ${e.localHeaderOffset} is past the end`);
    const h = this.readAt(e.localHeaderOffset, 30);
    const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
    if (v.getUint32(0, true) !== LOCAL_SIG) throw this.fail(`entry '${e.name}': no local file header at offset ${e.localHeaderOffset}`);
    return e.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
  }

  private fail(msg: string): ZipError {
    return new ZipError(`${this.file}: ${msg}`);
  }

  private readAt(offset: number, length: number): Uint8Array {
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) throw this.fail(`unexpected end of file at offset ${offset + done}`);
      done += n;
    }
    return new Uint8Array(buf.buffer, buf.byteOffset, length);
  }

  private readCentralDirectory(): ZipEntry[] {
    if (this.size < 22) throw this.fail(`${this.size} bytes is too short for a zip archive`);
    // The end record sits in the last 22 bytes plus up to 64 KiB of comment.
    const tailLen = Math.min(this.size, 22 + 0xffff);
    const tail = this.readAt(this.size - tailLen, tailLen);
    const tv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === EOCD_SIG) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw this.fail('no end-of-central-directory record (not a zip archive, or truncated)');
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    const eocdFileOffset = this.size - tailLen + eocd;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      if (eocdFileOffset < 20) throw this.fail('ZIP64 markers without a ZIP64 locator');
      const loc = this.readAt(eocdFileOffset - 20, 20);
      const lv = new DataView(loc.buffer, loc.byteOffset, 20);
      if (lv.getUint32(0, true) !== ZIP64_LOCATOR_SIG) throw this.fail('ZIP64 markers without a ZIP64 locator');
      const z64Off = Number(lv.getBigUint64(8, true));
      if (z64Off + 56 > this.size) throw this.fail('ZIP64 end record offset is past the end of the file');
      const z = this.readAt(z64Off, 56);
      const zv = new DataView(z.buffer, z.byteOffset, 56);
      if (zv.getUint32(0, true) !== ZIP64_EOCD_SIG) throw this.fail('bad ZIP64 end-of-central-directory record');
      count = Number(zv.getBigUint64(32, true));
      cdSize = Number(zv.getBigUint64(40, true));
      cdOffset = Number(zv.getBigUint64(48, true));
    }
    if (cdOffset + cdSize > this.size) throw this.fail(`central directory [${cdOffset}, +${cdSize}) runs past the end of the ${this.size}-byte file`);
    if (count > cdSize / 46) throw this.fail(`central directory claims ${count} entries in ${cdSize} bytes`);
    const cd = this.readAt(cdOffset, cdSize);
    const v = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
    const entries: ZipEntry[] = [];
    let p = 0;
    const utf8 = new TextDecoder('utf-8');
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || v.getUint32(p, true) !== CENTRAL_SIG) throw this.fail(`central directory entry ${i} is malformed`);
      const method = v.getUint16(p + 10, true);
      const crc32 = v.getUint32(p + 16, true);
      let compressedSize = v.getUint32(p + 20, true);
      let size = v.getUint32(p + 24, true);
      const nameLen = v.getUint16(p + 28, true);
      const extraLen = v.getUint16(p + 30, true);
      const commentLen = v.getUint16(p + 32, true);
      let localHeaderOffset = v.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen + commentLen > cdSize) throw this.fail(`central directory entry ${i} runs past the directory`);
      const name = utf8.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // ZIP64 extra field (id 1): the 64-bit values, in order, for each 32-bit field that is saturated.
      let q = p + 46 + nameLen;
      const extraEnd = q + extraLen;
      while (q + 4 <= extraEnd) {
        const id = v.getUint16(q, true);
        const len = v.getUint16(q + 2, true);
        if (id === 1) {
          let r = q + 4;
          const next = () => {
            if (r + 8 > q + 4 + len) throw this.fail(`entry '${name}': short ZIP64 extra field`);
            const x = Number(v.getBigUint64(r, true));
            r += 8;
            return x;
          };
          if (size === 0xffffffff) size = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
        }
        q += 4 + len;
      }
      if (localHeaderOffset + compressedSize > this.size) throw this.fail(`entry '${name}' claims data past the end of the file`);
      entries.push({ name, method, compressedSize, size, crc32, localHeaderOffset });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return entries;
  }
}

// ------------------------------------------------------------------------------------------- writing

export interface ZipFileToWrite {
  name: string;
  data: Uint8Array;
  /** Deflate this entry (NumPy's savez_compressed); default stored. */
  deflate?: boolean;
}

/**
 * A complete zip archive in memory. Entries past 4 GiB are out of scope (statistics files are
 * megabytes); the writer refuses rather than writing a broken archive.
 */
export function writeZip(files: ZipFileToWrite[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const body = f.deflate ? zlib.deflateRawSync(f.data) : f.data;
    if (body.length >= 0xffffffff || offset >= 0xffffffff) throw new ZipError(`zip entry '${f.name}' is too large for a non-ZIP64 archive`);
    const crc = zlib.crc32(f.data) >>> 0;
    const method = f.deflate ? 8 : 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(LOCAL_SIG, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01: reproducible bytes
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(f.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(CENTRAL_SIG, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(0x0800, 8);
    cd.writeUInt16LE(method, 10);
    cd.writeUInt16LE(0, 12);
    cd.writeUInt16LE(0x21, 14);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(body.length, 20);
    cd.writeUInt32LE(f.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(offset, 42);
    parts.push(local, name, body);
    central.push(cd, name);
    offset += local.length + name.length + body.length;
  }
  const cdSize = central.reduce((s, b) => s + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(EOCD_SIG, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(cdSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, ...central, end]);
}
