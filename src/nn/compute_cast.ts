import { tf } from '../backend/tf.js';

/**
 * The cast applied to the operands of Linear and Conv2d (inputs and weights) — how reduced-precision
 * compute is emulated: TF.js has no float16/bfloat16 dtype, so a trainer in bf16/fp16 mode installs
 * a rounding function here (train/precision.ts) and the products see low-precision operands while
 * accumulation and master weights stay float32. Null means float32 compute — also when bf16 runs on
 * the native backend's real bf16 kernels instead (train/compute_precision.ts chooses).
 */
type Cast = (x: tf.Tensor) => tf.Tensor;
let current: Cast | null = null;

export function setComputeCast(cast: Cast | null): void {
  current = cast;
}

export function computeCast<T extends tf.Tensor>(x: T): T {
  return current ? (current(x) as T) : x;
}

/** Whether a reduced-precision cast is installed (fused float32 kernels then step aside). */
export function hasComputeCast(): boolean {
  return current !== null;
}
