import os from 'node:os';
import type { tf } from '../tf.js';
import { forgetBf16Copy } from './bf16_operands.js';

/**
 * Recycles the Float32Arrays of disposed native-kernel outputs. A fresh multi-megabyte typed array
 * costs page faults and V8 external-memory GCs (measured here: 4–40 ms for 8 MB, against 0.2–0.4 ms
 * to overwrite an existing one), which made the memory-bound kernels of a 64×64 training step
 * slower than their arithmetic. wasm never pays this: its heap is allocated once.
 *
 * Safety: only arrays this pool handed out are ever recycled, and only while no one else can see
 * them. An array escapes, and is never recycled, when its values are read out (readSync/read give
 * callers the backing array itself), when a second tensor is stored with the same array, or when a
 * view of its memory is stored (the cpu kernels' simple slices are subarray views).
 */
export class Float32Pool {
  /** Arrays shorter than this are cheap to allocate; they are neither tracked nor recycled. */
  static readonly MIN_LENGTH = 1 << 14;
  /**
   * Arrays of one length kept for reuse at most. A training step's forward pass keeps hundreds of
   * same-shaped activations alive for the backward pass, and the next step needs them all again.
   */
  static readonly MAX_PER_LENGTH = 1024;

  private readonly free = new Map<number, Float32Array[]>();
  /** Arrays handed out and still recyclable → the tensor data holding them (undefined until stored). */
  private readonly owned = new WeakMap<Float32Array, tf.DataId | undefined>();
  private readonly byBuffer = new WeakMap<ArrayBufferLike, Float32Array>();
  private pooledBytes = 0;
  /** How many outputs reused a recycled array (diagnostics). */
  reuses = 0;
  /** Tests set this so that a kernel which does not write all of a recycled output shows NaNs. */
  poison = false;

  constructor(readonly maxBytes = 1 << 30) {}

  /** An array of `length` floats with arbitrary contents: for kernels that write every element. */
  take(length: number): Float32Array {
    if (length < Float32Pool.MIN_LENGTH) return new Float32Array(length);
    const list = this.free.get(length);
    const reused = list?.pop();
    let out: Float32Array;
    if (reused) {
      forgetBf16Copy(reused);
      this.pooledBytes -= reused.byteLength;
      this.reuses++;
      out = reused;
    } else {
      out = new Float32Array(length);
    }
    this.owned.set(out, undefined);
    this.byBuffer.set(out.buffer, out);
    return out;
  }

  /** As take, zero-filled: for kernels that accumulate into their output. */
  takeZeroed(length: number): Float32Array {
    const out = this.take(length);
    return length < Float32Pool.MIN_LENGTH ? out : out.fill(0);
  }

  /** The backend stored `values` as the data of `dataId`. */
  stored(dataId: tf.DataId, values: unknown): void {
    if (!ArrayBuffer.isView(values)) return;
    const base = this.byBuffer.get(values.buffer);
    if (!base || !this.owned.has(base)) return;
    const owner = this.owned.get(base);
    const aliased = values !== base || (owner !== undefined && owner !== dataId);
    if (aliased) this.escape(base);
    else this.owned.set(base, dataId);
  }

  /** The backing array was handed to a caller (dataSync, data, moves between backends). */
  escape(values: unknown): void {
    if (values instanceof Float32Array) this.owned.delete(values);
  }

  /** The backend dropped the data that held `values`. */
  released(dataId: tf.DataId, values: unknown): void {
    if (!(values instanceof Float32Array) || this.owned.get(values) !== dataId) return;
    this.owned.delete(values);
    const list = this.free.get(values.length) ?? [];
    if (list.length >= Float32Pool.MAX_PER_LENGTH || this.pooledBytes + values.byteLength > this.maxBytes) return;
    if (this.poison) values.fill(NaN);
    list.push(values);
    this.free.set(values.length, list);
    this.pooledBytes += values.byteLength;
  }

  /** Drops every pooled array (memory goes back to the GC). */
  clear(): void {
    this.free.clear();
    this.pooledBytes = 0;
  }

  get bytes(): number {
    return this.pooledBytes;
  }
}

/** The pool of the native backend's kernel outputs: up to an eighth of the machine's memory. */
export const nativeBuffers = new Float32Pool(Math.min(4 * 2 ** 30, Math.floor(os.totalmem() / 8)));

export interface PooledBackend {
  data: { get(id: tf.DataId): { values?: unknown } | undefined; set(id: tf.DataId, v: { values?: unknown }): void; has(id: tf.DataId): boolean };
  disposeData(id: tf.DataId, force?: boolean): boolean;
  readSync(id: tf.DataId): unknown;
  read(id: tf.DataId): Promise<unknown>;
}

/** Hooks a cpu-storage backend's data lifecycle into `pool` (see Float32Pool for the rules). */
export function attachPool(backend: PooledBackend, pool: Float32Pool): void {
  const data = backend.data;
  const set = data.set.bind(data);
  data.set = (id, v) => {
    set(id, v);
    pool.stored(id, v.values);
  };
  const disposeData = backend.disposeData.bind(backend);
  backend.disposeData = (id, force) => {
    const values = data.get(id)?.values;
    const disposed = disposeData(id, force);
    if (!data.has(id)) pool.released(id, values);
    return disposed;
  };
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (id) => {
    pool.escape(data.get(id)?.values);
    return readSync(id);
  };
  const read = backend.read.bind(backend);
  backend.read = (id) => {
    pool.escape(data.get(id)?.values);
    return read(id);
  };
}
