import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import type { HostTensor, LoadReport, Module } from '../nn/module.js';
import { JobError } from '../util/errors.js';
import { writeAll, writeFileAtomic } from './atomic.js';
import {
  DTYPE_INFO,
  byteSize,
  decodeToHost,
  dtypeAlignmentRank,
  encodeFromHost,
  isSafetensorsDtype,
  type SafetensorsDtype,
} from './dtypes.js';

export type { SafetensorsDtype } from './dtypes.js';
export { SAFETENSORS_DTYPES } from './dtypes.js';

/** The reference reader's limit on the JSON header (safetensors `MAX_HEADER_SIZE`). */
export const MAX_HEADER_SIZE = 100_000_000;

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) relative to the start of the data buffer. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Record<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Length N of the JSON header in bytes (padding included). */
  headerSize: number;
  /** File offset where the data buffer starts: 8 + N. */
  dataStart: number;
  fileSize: number;
}

/** A tensor to write: float/int host data converted to `dtype`, or raw little-endian bytes already in `dtype`. */
export interface TensorEntry {
  dtype?: SafetensorsDtype;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}
export type TensorsToSave = Record<string, TensorEntry> | Map<string, TensorEntry>;

/** A corrupt or unreadable safetensors file; the message names the file (and tensor, where there is one). */
export class SafetensorsError extends JobError {
  override readonly name = 'SafetensorsError' as 'JobError';
  /** The system error code (ENOENT, EISDIR, …) when the file itself could not be opened or read. */
  code?: string;
}

/** Opens a file for reading; a missing or unreadable file is a SafetensorsError naming it, with the system code kept. */
function openForReading(file: string): number {
  try {
    const fd = fs.openSync(file, 'r');
    if (fs.fstatSync(fd).isFile()) return fd;
    fs.closeSync(fd);
    const err = new SafetensorsError(`${file}: not a file (expected a .safetensors file)`);
    err.code = 'EISDIR';
    throw err;
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    const err = new SafetensorsError(`${file}: cannot open (${code === 'ENOENT' ? 'no such file' : code})`);
    err.code = code;
    throw err;
  }
}

// ------------------------------------------------------------------------------------------- reading

/** Read and validate the header only: two small reads, however large the file. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForReading(file);
  try {
    return readHeaderFromFd(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}

function readHeaderFromFd(fd: number, file: string): SafetensorsHeader {
  const fail = (msg: string) => new SafetensorsError(`${file}: ${msg}`);
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) throw fail(`file is ${fileSize} bytes, too short for the 8-byte header length`);
  const lenBytes = readAt(fd, 0, 8);
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_SIZE)) throw fail(`header length ${n} exceeds the ${MAX_HEADER_SIZE}-byte limit (is this a safetensors file?)`);
  const headerSize = Number(n);
  if (8 + headerSize > fileSize) throw fail(`header length ${headerSize} runs past the end of the ${fileSize}-byte file`);
  let raw: Uint8Array;
  try {
    raw = readAt(fd, 8, headerSize);
  } catch (e) {
    throw fail(`cannot read the header: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw fail(`header must start with '{' (got ${JSON.stringify(text.slice(0, 10))})`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fail('header must be a JSON object');
  // No prototype: a tensor named `__proto__` or `constructor` is a tensor like any other.
  const tensors: Record<string, TensorInfo> = Object.create(null);
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') metadata = parseMetadata(v, fail);
    else tensors[name] = parseTensorInfo(name, v, fail);
  }
  validateLayout(tensors, 8 + headerSize, fileSize, fail);
  return { tensors, metadata, headerSize, dataStart: 8 + headerSize, fileSize };
}

function parseMetadata(v: unknown, fail: (m: string) => Error): Record<string, string> {
  if (v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw fail('__metadata__ must be an object of string values');
  const out: Record<string, string> = Object.create(null);
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (typeof val !== 'string') throw fail(`__metadata__ value for '${k}' must be a string, got ${preview(val)}`);
    out[k] = val;
  }
  return out;
}

function parseTensorInfo(name: string, v: unknown, fail: (m: string) => Error): TensorInfo {
  const bad = (what: string) => fail(`tensor '${name}': ${what}`);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('entry must be an object with dtype, shape, data_offsets');
  const o = v as Record<string, unknown>;
  if (!isSafetensorsDtype(o.dtype)) throw bad(`unknown dtype ${preview(o.dtype)}`);
  if (!Array.isArray(o.shape) || !o.shape.every(isCount)) throw bad(`shape must be an array of non-negative integers, got ${preview(o.shape)}`);
  const off = o.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount)) {
    throw bad(`data_offsets must be [begin, end] non-negative integers, got ${preview(off)}`);
  }
  return { dtype: o.dtype, shape: [...(o.shape as number[])], dataOffsets: [off[0] as number, off[1] as number] };
}

/** A value quoted in an error message, cut short: a hostile header can hold megabytes in one field. */
function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** The reference `validate`: sorted by offset, tensors tile the buffer from 0 with no gap or overlap, sizes match, nothing trails. */
function validateLayout(tensors: Record<string, TensorInfo>, dataStart: number, fileSize: number, fail: (m: string) => Error): void {
  const order = Object.entries(tensors).sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let expectedBegin = 0;
  for (const [name, t] of order) {
    const [b, e] = t.dataOffsets;
    if (b !== expectedBegin || e < b) {
      const why = b > expectedBegin ? `a gap of ${b - expectedBegin} bytes before it` : b < expectedBegin ? 'it overlaps the previous tensor' : 'end < begin';
      throw fail(`tensor '${name}': invalid data_offsets [${b}, ${e}] (expected begin ${expectedBegin}; ${why})`);
    }
    const numel = numelOf(t.shape);
    if (!Number.isSafeInteger(numel)) throw fail(`tensor '${name}': shape [${t.shape}] overflows`);
    const size = byteSize(t.dtype, numel);
    if (size === undefined) throw fail(`tensor '${name}': ${numel} elements of ${t.dtype} do not fill whole bytes`);
    if (e - b !== size) {
      throw fail(`tensor '${name}': data_offsets span ${e - b} bytes but ${t.dtype} [${t.shape}] needs ${size}`);
    }
    expectedBegin = e;
  }
  if (dataStart + expectedBegin !== fileSize) {
    throw fail(
      `file is ${fileSize} bytes but header + tensors account for ${dataStart + expectedBegin} ` +
        (fileSize > dataStart + expectedBegin ? '(trailing bytes)' : '(file truncated)'),
    );
  }
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Read exactly `length` bytes at `position`; readSync may return less and caps one call at 2 GiB. */
function readAt(fd: number, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const maxChunk = 1 << 30;
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, Math.min(maxChunk, length - done), position + done);
    if (n === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return out;
}

/** Anything tensors can be looked up in by name: one file, or a sharded checkpoint. */
export interface TensorSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): HostTensor;
  readRaw(name: string): Uint8Array;
  close(): void;
}

/** An open safetensors file: header parsed up front, each tensor read on demand at its offset. */
export class SafetensorsFile implements TensorSource {
  private fd: number | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    readonly header: SafetensorsHeader,
  ) {
    this.fd = fd;
  }

  static open(file: string): SafetensorsFile {
    const fd = openForReading(file);
    try {
      return new SafetensorsFile(file, fd, readHeaderFromFd(fd, file));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** Tensor names in file order (by data offset). */
  names(): string[] {
    return Object.entries(this.header.tensors)
      .sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0])
      .map(([n]) => n);
  }

  has(name: string): boolean {
    return Object.hasOwn(this.header.tensors, name);
  }

  info(name: string): TensorInfo {
    if (!this.has(name)) throw new SafetensorsError(`${this.path}: no tensor named '${name}'`);
    return this.header.tensors[name]!;
  }

  readRaw(name: string): Uint8Array {
    if (this.fd === undefined) throw new Error(`${this.path}: file is closed`);
    const [b, e] = this.info(name).dataOffsets;
    try {
      return readAt(this.fd, this.header.dataStart + b, e - b);
    } catch (err) {
      throw new SafetensorsError(`${this.path}: tensor '${name}': ${(err as Error).message}`);
    }
  }

  /** Decoded to float32 (float dtypes; C64 as a trailing (re, im) dimension) or int32 (int and bool dtypes). */
  read(name: string): HostTensor {
    const t = this.info(name);
    try {
      const data = decodeToHost(t.dtype, this.readRaw(name));
      return { shape: t.dtype === 'C64' ? [...t.shape, 2] : [...t.shape], data };
    } catch (err) {
      if (err instanceof SafetensorsError) throw err;
      throw new SafetensorsError(`${this.path}: tensor '${name}': ${(err as Error).message}`);
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Contents of a `*.safetensors.index.json` (the Hugging Face sharded-checkpoint index). */
export interface ShardIndex {
  metadata: Record<string, unknown>;
  weight_map: Record<string, string>;
}

export function readShardIndex(indexPath: string): ShardIndex {
  let json: unknown;
  try {
    const size = fs.statSync(indexPath).size;
    if (size > MAX_HEADER_SIZE) throw new SafetensorsError(`${indexPath}: ${size} bytes is too large for a shard index (limit ${MAX_HEADER_SIZE})`);
    json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    if (e instanceof SafetensorsError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new SafetensorsError(`${indexPath}: ${code ? `cannot read (${code})` : `not valid JSON: ${(e as Error).message}`}`);
  }
  const o = json as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || typeof o.weight_map !== 'object' || o.weight_map === null || Array.isArray(o.weight_map)) {
    throw new SafetensorsError(`${indexPath}: expected an object with a "weight_map" object`);
  }
  for (const [k, v] of Object.entries(o.weight_map as Record<string, unknown>)) {
    if (typeof v !== 'string' || v.includes('/') || v.includes('\\') || v.includes('\0') || v === '..' || v === '.' || v === '') {
      throw new SafetensorsError(`${indexPath}: weight_map['${k}'] must be a shard file name in the same directory, got ${preview(v)}`);
    }
  }
  const metadata = typeof o.metadata === 'object' && o.metadata !== null ? (o.metadata as Record<string, unknown>) : {};
  return { metadata, weight_map: o.weight_map as Record<string, string> };
}

/** A sharded checkpoint: tensors resolved through the index, shard files opened lazily and kept open. */
export class ShardedSafetensors implements TensorSource {
  private readonly shards = new Map<string, SafetensorsFile>();

  private constructor(
    readonly path: string,
    readonly index: ShardIndex,
  ) {}

  static open(indexPath: string): ShardedSafetensors {
    return new ShardedSafetensors(indexPath, readShardIndex(indexPath));
  }

  /** Index metadata with non-string values (e.g. HF's numeric total_size) rendered as JSON text. */
  get metadata(): Record<string, string> {
    return Object.fromEntries(Object.entries(this.index.metadata).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
  }

  names(): string[] {
    return Object.keys(this.index.weight_map);
  }

  has(name: string): boolean {
    return Object.hasOwn(this.index.weight_map, name);
  }

  shardFileOf(name: string): string {
    if (!this.has(name)) throw new SafetensorsError(`${this.path}: no tensor named '${name}' in weight_map`);
    return this.index.weight_map[name]!;
  }

  shard(fileName: string): SafetensorsFile {
    let f = this.shards.get(fileName);
    if (!f) {
      f = SafetensorsFile.open(path.join(path.dirname(this.path), fileName));
      this.shards.set(fileName, f);
    }
    return f;
  }

  private fileFor(name: string): SafetensorsFile {
    const shardName = this.shardFileOf(name);
    const f = this.shard(shardName);
    if (!f.has(name)) throw new SafetensorsError(`${this.path}: weight_map puts '${name}' in ${shardName}, which does not contain it`);
    return f;
  }

  info(name: string): TensorInfo {
    return this.fileFor(name).info(name);
  }
  read(name: string): HostTensor {
    return this.fileFor(name).read(name);
  }
  readRaw(name: string): Uint8Array {
    return this.fileFor(name).readRaw(name);
  }
  close(): void {
    for (const f of this.shards.values()) f.close();
    this.shards.clear();
  }
}

export function isShardIndexPath(p: string): boolean {
  return p.endsWith('.index.json');
}

/** Open a single `.safetensors` file or a sharded `*.index.json`. */
export function openSafetensors(p: string): TensorSource {
  return isShardIndexPath(p) ? ShardedSafetensors.open(p) : SafetensorsFile.open(p);
}

/** Read the named tensors (default: all) from a file or sharded index into host arrays. */
export function loadSafetensors(p: string, names?: readonly string[]): Map<string, HostTensor> {
  const src = openSafetensors(p);
  try {
    const out = new Map<string, HostTensor>();
    for (const n of names ?? src.names()) out.set(n, src.read(n));
    return out;
  } finally {
    src.close();
  }
}

// ------------------------------------------------------------------------------------------- writing

interface PreparedTensor {
  name: string;
  dtype: SafetensorsDtype;
  /** Shape as stored in the file (for C64, without the trailing re/im dimension). */
  shape: number[];
  bytes: Uint8Array;
}

function prepareTensor(name: string, t: TensorEntry): PreparedTensor {
  const bad = (m: string) => new Error(`tensor '${name}': ${m}`);
  if (!t.shape.every(isCount)) throw bad(`shape must be non-negative integers, got [${t.shape}]`);
  if (t.data instanceof Uint8Array) {
    if (!t.dtype) throw bad('raw Uint8Array data needs an explicit dtype');
    const size = byteSize(t.dtype, numelOf(t.shape));
    if (size !== t.data.byteLength) throw bad(`${t.data.byteLength} raw bytes given but ${t.dtype} [${t.shape}] needs ${size}`);
    return { name, dtype: t.dtype, shape: [...t.shape], bytes: t.data };
  }
  const dtype = t.dtype ?? (t.data instanceof Float32Array ? 'F32' : 'I32');
  let shape = [...t.shape];
  if (dtype === 'C64') {
    if (shape[shape.length - 1] !== 2) throw bad(`C64 data is given as (re, im) pairs: the last dimension must be 2, got [${t.shape}]`);
    shape = shape.slice(0, -1);
  }
  const expected = numelOf(t.shape);
  if (t.data.length !== expected) throw bad(`data has ${t.data.length} elements but shape [${t.shape}] has ${expected}`);
  try {
    return { name, dtype, shape, bytes: encodeFromHost(dtype, t.data) };
  } catch (e) {
    throw bad((e as Error).message);
  }
}

function checkMetadata(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!metadata) return undefined;
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new Error(`safetensors metadata value for '${k}' must be a string, got ${typeof v}`);
  }
  return metadata;
}

/**
 * Header bytes and data order as the reference writer lays them out: tensors by descending dtype
 * (enum order, i.e. alignment) then name (so every tensor starts aligned), `__metadata__` first, JSON padded with
 * spaces to a multiple of 8 so the data buffer starts 8-aligned.
 */
function layout(tensors: PreparedTensor[], metadata: Record<string, string> | undefined): { header: Uint8Array; order: PreparedTensor[] } {
  const order = [...tensors].sort((a, b) => dtypeAlignmentRank(b.dtype) - dtypeAlignmentRank(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // Built by hand: a JS object would move integer-like keys (a tensor named "0") to the front.
  const members: string[] = [];
  if (metadata && Object.keys(metadata).length > 0) {
    const keys = Object.keys(metadata).sort();
    members.push(`"__metadata__":{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`);
  }
  let offset = 0;
  for (const t of order) {
    const info = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    members.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    offset += t.bytes.byteLength;
  }
  const json = new TextEncoder().encode(`{${members.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, order };
}

function entriesOf(tensors: TensorsToSave): [string, TensorEntry][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

/** Encode to the exact bytes of a safetensors file (for small files, tests and in-memory use). */
export function serializeSafetensors(tensors: TensorsToSave, metadata?: Record<string, string>): Uint8Array {
  const prepared = entriesOf(tensors).map(([n, t]) => prepareTensor(n, t));
  const { header, order } = layout(prepared, checkMetadata(metadata));
  const total = header.byteLength + order.reduce((s, t) => s + t.bytes.byteLength, 0);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let off = header.byteLength;
  for (const t of order) {
    out.set(t.bytes, off);
    off += t.bytes.byteLength;
  }
  return out;
}

/** Write a safetensors file atomically: the previous file stays intact if anything fails. */
export async function saveSafetensors(file: string, tensors: TensorsToSave, metadata?: Record<string, string>): Promise<void> {
  const prepared = entriesOf(tensors).map(([n, t]) => prepareTensor(n, t));
  const { header, order } = layout(prepared, checkMetadata(metadata));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  // Streamed tensor by tensor so the whole file never has to exist as one buffer.
  await writeFileAtomic(file, (fd) => {
    writeAll(fd, header);
    for (const t of order) writeAll(fd, t.bytes);
  });
}

export interface ShardedSaveOptions {
  /** Start a new shard when adding a tensor would push the current one past this many data bytes. */
  maxShardBytes: number;
  /** Stored in each shard's `__metadata__`. */
  metadata?: Record<string, string>;
}

/**
 * Write a sharded checkpoint in the Hugging Face layout: `<base>-00001-of-0000N.safetensors` shards
 * next to `indexPath` (`<base>.safetensors.index.json`), filled greedily in the given order; a tensor
 * larger than the limit gets a shard of its own. Returns the shard file names.
 */
export async function saveShardedSafetensors(indexPath: string, tensors: TensorsToSave, opts: ShardedSaveOptions): Promise<string[]> {
  if (!isShardIndexPath(indexPath)) throw new Error(`sharded index path must end in .index.json, got ${indexPath}`);
  if (!(opts.maxShardBytes > 0)) throw new Error(`maxShardBytes must be positive, got ${opts.maxShardBytes}`);
  const metadata = checkMetadata(opts.metadata);
  const entries = entriesOf(tensors);
  const groups: [string, TensorEntry][][] = [];
  let current: [string, TensorEntry][] = [];
  let currentBytes = 0;
  let totalSize = 0;
  for (const [name, t] of entries) {
    const size = entrySize(name, t);
    totalSize += size;
    if (current.length > 0 && currentBytes + size > opts.maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push([name, t]);
    currentBytes += size;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);
  const base = path.basename(indexPath).replace(/\.safetensors\.index\.json$|\.index\.json$/, '');
  const dir = path.dirname(indexPath);
  const pad = (i: number) => String(i).padStart(5, '0');
  const shardNames = groups.map((_, i) => `${base}-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < groups.length; i++) {
    await saveSafetensors(path.join(dir, shardNames[i]!), new Map(groups[i]), metadata);
    for (const [name] of groups[i]!) weightMap[name] = shardNames[i]!;
  }
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]!]));
  // The index goes last so it never points at shards that are not there yet.
  await writeFileAtomic(indexPath, `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2)}\n`);
  return shardNames;
}

function entrySize(name: string, t: TensorEntry): number {
  if (t.data instanceof Uint8Array) return t.data.byteLength;
  const dtype = t.dtype ?? (t.data instanceof Float32Array ? 'F32' : 'I32');
  const numel = numelOf(t.shape) / (dtype === 'C64' ? 2 : 1);
  const size = byteSize(dtype, numel);
  if (size === undefined) throw new Error(`tensor '${name}': ${dtype} cannot hold ${numel} elements`);
  return size;
}

// ------------------------------------------------------------------------------------------- modules

export interface SaveModuleOptions {
  /** Dtype for floating-point tensors (default F32); integer and bool tensors keep their own. */
  dtype?: SafetensorsDtype;
  metadata?: Record<string, string>;
}

/** Host copies of a state dict, ready for saveSafetensors. */
export function stateDictToEntries(state: Map<string, tf.Tensor>, floatDtype: SafetensorsDtype = 'F32'): Map<string, TensorEntry> {
  if (DTYPE_INFO[floatDtype].kind !== 'float') throw new Error(`dtype for float tensors must be a float dtype, got ${floatDtype}`);
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of state) {
    const data = t.dataSync();
    if (t.dtype === 'float32') out.set(name, { shape: [...t.shape], data: data as Float32Array, dtype: floatDtype });
    else if (t.dtype === 'int32') out.set(name, { shape: [...t.shape], data: data as Int32Array, dtype: 'I32' });
    else if (t.dtype === 'bool') out.set(name, { shape: [...t.shape], data: new Uint8Array(data as Uint8Array), dtype: 'BOOL' });
    else throw new Error(`tensor '${name}': cannot save tfjs dtype ${t.dtype}`);
  }
  return out;
}

export async function saveModule(file: string, module: Module, opts: SaveModuleOptions = {}): Promise<void> {
  await saveSafetensors(file, stateDictToEntries(module.stateDict(), opts.dtype ?? 'F32'), opts.metadata);
}

/**
 * Load weights by name into `module` (Module.loadStateDict semantics: strict by default, shape
 * mismatches always fail). Only tensors the module has are read from disk.
 */
export function loadModuleWeights(file: string, module: Module, opts: { strict?: boolean } = {}): LoadReport {
  const src = openSafetensors(file);
  try {
    const wanted = new Set(module.stateDict().keys());
    const input = new Map<string, HostTensor>();
    for (const name of src.names()) {
      if (wanted.has(name)) {
        input.set(name, src.read(name));
      } else {
        // loadStateDict only reports extra keys by name and never reads their data, so a shape-only
        // stand-in spares reading tensors the module will not use.
        input.set(name, { shape: src.info(name).shape, data: new Float32Array(0) });
      }
    }
    return module.loadStateDict(input, opts);
  } finally {
    src.close();
  }
}
