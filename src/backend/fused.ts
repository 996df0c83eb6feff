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
  /**
   * inputs {x0 … x{k−1} NHWC, weight [O, C, kh, kw], bias? [O]}, attrs ConvListAttrs → act(conv(concat(x, channels)) + bias):
   * a convolution over the channel concatenation of its inputs without materialising it, PyTorch's weight layout.
   */
  convList: 'SfConvList',
  /** inputs {dy, y (for the activation's derivative), x0 …, weight}, attrs ConvListAttrs → [dx0 …, dweight if wanted, dbias if wanted] */
  convListGrad: 'SfConvListGrad',
  /**
   * inputs {x [B, …, C], mod [B, W]}, attrs NormModulateAttrs → [act(norm(x)·(1 + scale) + shift), mean, rstd] with
   * scale and shift the C columns of mod at their offsets: GroupNorm/LayerNorm (no affine) + FiLM + activation.
   */
  normModulate: 'SfNormModulate',
  /** inputs {dy, x, mod, mean, rstd}, attrs NormModulateAttrs → [dx, dmod] */
  normModulateGrad: 'SfNormModulateGrad',
  /** inputs {x [..., in], weight [out, in], bias? [out]} → x·weightᵀ + bias [..., out]: torch.nn.Linear as one kernel, no reshapes. */
  linear: 'SfLinear',
  /** inputs {dy, weight, x (only when dweight is wanted)}, attrs LinearGradAttrs → the wanted ones of [dx, dweight, dbias], in that order */
  linearGrad: 'SfLinearGrad',
  /**
   * inputs {x [..., in], weight [out, in], bias? [out], loraA [r, in], loraB [out, r]}, attrs {scale} →
   * [x·weightᵀ + bias + h·loraBᵀ, h] with h = scale·x·loraAᵀ [rows, r]: a Linear with its LoRA branch (PEFT's
   * lora.Linear without dropout or DoRA), the branch added in the product's epilogue.
   */
  loraLinear: 'SfLoraLinear',
  /** inputs {dy, x, h, weight, loraA, loraB}, attrs LoraLinearGradAttrs → the wanted ones of [dx, dweight, dbias], then [dloraA, dloraB] */
  loraLinearGrad: 'SfLoraLinearGrad',
  /** inputs {x [B, …, C], branch (x's shape), mod [B, W]}, attrs {offset} → x + branch·gate, gate = mod[:, offset : offset + C] per sample (DiT's gated residual) */
  gatedResidual: 'SfGatedResidual',
  /** inputs {dy, branch, mod}, attrs {offset} → [dbranch, dmod] (dx is dy itself) */
  gatedResidualGrad: 'SfGatedResidualGrad',
} as const;

/** Fused kernels switched off by name (bench/fusion.ts times each step with and without them). */
const disabled = new Set<string>();

export function hasFusedKernel(kernelName: string): boolean {
  return !disabled.has(kernelName) && tf.getKernel(kernelName, tf.getBackend()) !== undefined;
}

/** Makes `hasFusedKernel` answer false for these kernels (callers then compose them from tfjs ops); an empty list turns all back on. */
export function disableFusedKernels(kernelNames: readonly string[]): void {
  disabled.clear();
  for (const k of kernelNames) disabled.add(k);
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

/** Activations a SfConvList applies to its output, by the addon's code (oneDNN post-ops of the ReLU family). */
export const CONV_ACTIVATIONS = { linear: 0, relu: 1, leaky_relu: 3 } as const;
export type ConvListActivation = keyof typeof CONV_ACTIVATIONS;

export type ConvListAttrs = {
  /** How many list inputs (x0 …) precede the weight. */
  inputs: number;
  hasBias: boolean;
  /** Whether the gradient kernel computes the weight's and the bias's gradients (not for frozen parameters). */
  dweight: boolean;
  dbias: boolean;
  stride: number;
  /** Zero rows/columns added [top, left, bottom, right]. */
  pad: [number, number, number, number];
  activation: ConvListActivation;
  /** Leaky ReLU slope (>= 0: the gradient reads the sign of the output). */
  alpha: number;
};

/** Activations a SfNormModulate applies, by the addon's code. */
export const NORM_MODULATE_ACTIVATIONS = { none: 0, silu: 1 } as const;
export type NormModulateActivation = keyof typeof NORM_MODULATE_ACTIVATIONS;

export type NormModulateAttrs = {
  /** Channel groups (GroupNorm); ignored when perPosition. */
  groups: number;
  /** LayerNorm: statistics over each position's channels rather than over every position of a group. */
  perPosition: boolean;
  eps: number;
  scaleOffset: number;
  shiftOffset: number;
  activation: NormModulateActivation;
};

/** SfLoraLinearGrad: the base's wanted gradients as for SfLinearGrad, and the LoRA scale; dloraA and dloraB always. */
export type LoraLinearGradAttrs = LinearGradAttrs & { scale: number };

/** Which gradients SfLinearGrad computes (a frozen weight's is never needed). */
export type LinearGradAttrs = {
  /** x's shape ([..., in]), so x itself is only an input when dweight needs its values. */
  xShape: number[];
  dx: boolean;
  dweight: boolean;
  dbias: boolean;
};
