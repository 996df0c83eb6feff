import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import type { CpuBackendStorage } from './storage.js';

/**
 * bf16 copies of frozen weights for the bf16 matmul: a frozen parameter (a LoRA base, a frozen text
 * encoder) meets the bf16 kernels twice per step, forward and backward, every step, and converting
 * it each time is a pass over its fp32 values for nothing. An operand that is the data of a
 * non-trainable tf.Variable is converted once, and its bf16 copy is passed from then on
 * (bit-identical: the same rounding). Trainable weights get new values every step and activations
 * live for one, so those are converted per use.
 *
 * Safety rests on tensor data being immutable: a backend array is written once, by the kernel that
 * made it. The exception is the buffer pool handing a disposed tensor's array to a new tensor; it
 * calls forgetBf16Copy first (buffer_pool.ts). Assigning a frozen variable gives it a new array,
 * found at the next refresh.
 */

/** Operands smaller than this are converted every time: the copy would save less than the lookups cost. */
export const MIN_CACHED_LENGTH = 1 << 14;
/** Matmul calls between rescans of the registered variables: a newly frozen weight is copied within this many calls. */
const REFRESH_EVERY = 256;

const copies = new WeakMap<Float32Array, Uint16Array>();
let frozen = new WeakSet<Float32Array>();
let callsSinceRefresh = REFRESH_EVERY;

function refreshFrozen(): void {
  const variables = Object.values(tf.engine().state.registeredVariables);
  callsSinceRefresh = 0;
  const backend = tf.engine().backend as unknown as CpuBackendStorage;
  const next = new WeakSet<Float32Array>();
  for (const v of variables) {
    if (v.trainable || v.isDisposed || v.dtype !== 'float32' || v.size < MIN_CACHED_LENGTH) continue;
    const values = backend.data?.get(v.dataId)?.values;
    if (values instanceof Float32Array) next.add(values);
  }
  frozen = next;
}

/** What to pass to addon.matmul for `values` while the bf16 kernels are on: the array itself, or its kept bf16 copy. */
export function bf16Operand(addon: Pick<NativeAddon, 'toBf16'>, values: Float32Array): Float32Array | Uint16Array {
  if (values.length < MIN_CACHED_LENGTH) return values;
  if (++callsSinceRefresh >= REFRESH_EVERY) refreshFrozen();
  if (!frozen.has(values)) return values;
  const kept = copies.get(values);
  if (kept) return kept;
  const copy = new Uint16Array(values.length);
  addon.toBf16(values, copy);
  copies.set(values, copy);
  return copy;
}

/** `values` is about to hold another tensor's data: drop its copy. */
export function forgetBf16Copy(values: Float32Array): void {
  copies.delete(values);
  frozen.delete(values);
}

/** Rescan the variables at the next bf16 matmul (tests; a frozen flag flipped by hand). */
export function rescanFrozenWeights(): void {
  callsSinceRefresh = REFRESH_EVERY;
}

/** Whether a bf16 copy of `values` is kept (tests). */
export function hasBf16Copy(values: Float32Array): boolean {
  return copies.has(values);
}
