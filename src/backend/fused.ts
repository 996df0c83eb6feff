import { tf } from './tf.js';

/**
 * Kernels that tfjs does not have, which a backend may provide to replace a composite of many
 * small ops (the native backend does). Callers ask `hasFusedKernel` for the active backend and
 * fall back to the composite otherwise, so every backend computes the same function.
 */
export const FUSED_KERNELS = {
  /** inputs {x: [n, s, c]}, attrs {groups, eps} → [y, mean [n, groups], rstd [n, groups]] */
  groupNorm: 'SfGroupNorm',
  /** inputs {dy, x, mean, rstd}, attrs {groups} → dx */
  groupNormGrad: 'SfGroupNormGrad',
} as const;

export function hasFusedKernel(kernelName: string): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined;
}
