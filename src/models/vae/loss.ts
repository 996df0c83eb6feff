import { tf } from '../../backend/tf.js';
import type { DiagonalGaussianDistribution } from './autoencoder_kl.js';

export interface VaeLossWeights {
  /** Weight of the mean absolute error. */
  l1: number;
  /** Weight of the mean squared error. */
  mse: number;
  /** β: weight of the KL term. LDM's SD/SDXL autoencoders use 1e-6. */
  kl: number;
}

export const DEFAULT_VAE_LOSS_WEIGHTS: Readonly<VaeLossWeights> = { l1: 1, mse: 0, kl: 1e-6 };

export interface VaeLoss {
  total: tf.Scalar;
  l1: tf.Scalar;
  mse: tf.Scalar;
  kl: tf.Scalar;
}

/** Mean |x − x̂| over all elements. */
export function l1Loss(input: tf.Tensor, reconstruction: tf.Tensor): tf.Scalar {
  return tf.tidy(() => input.sub(reconstruction).abs().mean() as tf.Scalar);
}

/** Mean (x − x̂)² over all elements. */
export function mseLoss(input: tf.Tensor, reconstruction: tf.Tensor): tf.Scalar {
  return tf.tidy(() => input.sub(reconstruction).square().mean() as tf.Scalar);
}

/**
 * KL(q(z|x) ‖ N(0, I)) summed over each sample's latent elements, averaged over the batch —
 * LDM's `torch.sum(posteriors.kl()) / batch`, so its size grows with the latent resolution.
 */
export function klLoss(posterior: DiagonalGaussianDistribution): tf.Scalar {
  return tf.tidy(() => posterior.kl().mean() as tf.Scalar);
}

/**
 * l1·L1 + mse·MSE + kl·KL. Reconstruction terms are per-element means so that their weights do not
 * depend on image size; each part is returned (undetached) for logging. Terms with weight 0 are
 * still computed for logging but add nothing to the total.
 */
export function vaeLoss(
  input: tf.Tensor4D,
  reconstruction: tf.Tensor4D,
  posterior: DiagonalGaussianDistribution,
  weights: Partial<VaeLossWeights> = {},
): VaeLoss {
  const w = { ...DEFAULT_VAE_LOSS_WEIGHTS, ...weights };
  for (const [k, v] of Object.entries(w)) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`VAE loss weight '${k}' must be a finite number ≥ 0, got ${v}`);
  }
  const l1 = l1Loss(input, reconstruction);
  const mse = mseLoss(input, reconstruction);
  const kl = klLoss(posterior);
  const total = tf.tidy(() => l1.mul(w.l1).add(mse.mul(w.mse)).add(kl.mul(w.kl)) as tf.Scalar);
  return { total, l1, mse, kl };
}
