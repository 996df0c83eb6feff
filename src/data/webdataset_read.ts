import fs from 'node:fs';
import { UsageError } from '../util/errors.js';

/**
 * Reading WebDataset shards (plain POSIX tar, as `scaleforge curate --format webdataset` writes them):
 * members are grouped into samples by key = member path up to the first `.` of its file name, the
 * rest being the field (`jpg`, `txt`, `json`, …). ustar long names (prefix field) are honoured; pax
 * and GNU long-name records are understood; anything else non-regular is skipped.
 */
export interface ShardSample {
  key: string;
  fields: Map<string, Uint8Array>;
}

function field(block: Uint8Array, start: number, length: number): string {
  const bytes = block.subarray(start, start + length);
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end === -1 ? bytes : bytes.subarray(0, end));
}

function octal(block: Uint8Array, start: number, length: number, where: string): number {
  const text = field(block, start, length).trim();
  if (!/^[0-7]*$/.test(text)) throw new UsageError(`${where}: corrupt tar header (size field '${text}')`);
  return text ? parseInt(text, 8) : 0;
}

export function readTarMembers(file: string): { name: string; data: Uint8Array }[] {
  let bytes: Uint8Array;
  try {
    const buf = fs.readFileSync(file);
    bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch {
    throw new UsageError(`${file}: cannot read the shard`);
  }
  const out: { name: string; data: Uint8Array }[] = [];
  let off = 0;
  let longName: string | undefined;
  while (off + 512 <= bytes.length) {
    const header = bytes.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const where = `${file} at byte ${off}`;
    const size = octal(header, 124, 12, where);
    const type = String.fromCharCode(header[156]!);
    const prefix = field(header, 345, 155);
    let name = longName ?? (prefix ? `${prefix}/${field(header, 0, 100)}` : field(header, 0, 100));
    longName = undefined;
    const dataStart = off + 512;
    if (dataStart + size > bytes.length) throw new UsageError(`${where}: member '${name}' runs past the end of the file (truncated shard)`);
    const data = bytes.subarray(dataStart, dataStart + size);
    if (type === 'L') longName = field(data, 0, data.length);
    else if (type === 'x') {
      const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(new TextDecoder().decode(data));
      if (path) longName = path[1];
    } else if (type === '0' || type === '\0') out.push({ name, data });
    off = dataStart + Math.ceil(size / 512) * 512;
    name = '';
  }
  return out;
}

/** Samples of one shard in file order. */
export function readShardSamples(file: string): ShardSample[] {
  const samples = new Map<string, ShardSample>();
  for (const m of readTarMembers(file)) {
    const slash = m.name.lastIndexOf('/');
    const dot = m.name.indexOf('.', slash + 1);
    if (dot === -1) continue;
    const key = m.name.slice(0, dot);
    const ext = m.name.slice(dot + 1).toLowerCase();
    const s = samples.get(key) ?? { key, fields: new Map<string, Uint8Array>() };
    s.fields.set(ext, m.data);
    samples.set(key, s);
  }
  return [...samples.values()];
}
