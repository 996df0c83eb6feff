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
  /**
   * inputs {param, grad, m?, v?} (no moments on the first step), attrs AdamKernelAttrs → [param, m, v]:
   * the arithmetic of src/train/optim.ts's Adam/AdamW composite in one pass.
   */
  adam: 'SfAdam',
  /** inputs {x}, attrs {kind: FusedActivation} → f(x) */
  activation: 'SfActivation',
  /** inputs {dy, x}, attrs {kind} → dy·f'(x) */
  activationGrad: 'SfActivationGrad',
  /** inputs {dy, x}, attrs {alpha} → x > 0 ? dy : dy·alpha (tf.leakyRelu's gradient, one pass instead of three kernels) */
  leakyReluGrad: 'SfLeakyReluGrad',
  /**
   * inputs {q [B, Nq, H, d], k, v [B, Nk, Hkv, d]} (token-major, as a projection writes them),
   * attrs AttentionKernelAttrs → [o [B, Nq, H, d], probabilities [B, H, Nq, Nk]].
   */
  attention: 'SfAttention',
  /** inputs {dy, q, k, v, probs}, attrs AttentionKernelAttrs → [dq, dk, dv] */
  attentionGrad: 'SfAttentionGrad',
} as const;

export function hasFusedKernel(kernelName: string): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined;
}

export interface AdamKernelAttrs {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
  /** AdamW's decoupled decay (true) or Adam's L2 term added to the gradient (false). */
  decoupled: boolean;
}

/** Activations with a fused kernel, by the addon's code. */
export const FUSED_ACTIVATIONS = { silu: 0, gelu_tanh: 1, gelu_erf: 2, quick_gelu: 3 } as const;
export type FusedActivation = keyof typeof FUSED_ACTIVATIONS;

export interface AttentionKernelAttrs {
  scale: number;
  causal: boolean;
}
