import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { DiagonalGaussianDistribution } from '../src/models/vae/autoencoder_kl.js';
import { klLoss, l1Loss, mseLoss, vaeLoss } from '../src/models/vae/loss.js';

// Hand-worked case. Images [1,1,2,1]: x = (0.5, −1), x̂ = (0, 1) → |d| = (0.5, 2), d² = (0.25, 4).
// Posterior, batch 2, 1×1 spatial, 2 latent channels:
//   sample 0: μ = (1, 0), log σ² = (0, ln 2) → KL = ½[(1+1−1−0) + (0+2−1−ln 2)] = ½(2 − ln 2)
//   sample 1: μ = (0, 0), log σ² = (0, 0)    → KL = 0
// LDM's KL loss is the batch mean of per-sample sums: ¼(2 − ln 2).
const x = (): tf.Tensor4D => tf.tensor4d([0.5, -1], [1, 1, 2, 1]);
const xHat = (): tf.Tensor4D => tf.tensor4d([0, 1], [1, 1, 2, 1]);
const posterior = (): DiagonalGaussianDistribution =>
  new DiagonalGaussianDistribution(tf.tensor4d([1, 0, 0, Math.log(2), 0, 0, 0, 0], [2, 1, 1, 4]));
const KL = (2 - Math.LN2) / 4;

describe('VAE loss', () => {
  it('computes per-element mean L1 and MSE and the batch-mean summed KL', () => {
    expect(l1Loss(x(), xHat()).dataSync()[0]).toBeCloseTo(1.25, 6);
    expect(mseLoss(x(), xHat()).dataSync()[0]).toBeCloseTo(2.125, 6);
    expect(klLoss(posterior()).dataSync()[0]).toBeCloseTo(KL, 6);
  });

  it('weights the terms: total = l1·L1 + mse·MSE + β·KL, each part reported', () => {
    const loss = vaeLoss(x(), xHat(), posterior(), { l1: 0.5, mse: 2, kl: 0.1 });
    expect(loss.total.dataSync()[0]).toBeCloseTo(0.5 * 1.25 + 2 * 2.125 + 0.1 * KL, 5);
    expect(loss.l1.dataSync()[0]).toBeCloseTo(1.25, 6);
    expect(loss.mse.dataSync()[0]).toBeCloseTo(2.125, 6);
    expect(loss.kl.dataSync()[0]).toBeCloseTo(KL, 6);
    // Defaults: LDM's setting, L1 with β = 1e-6.
    expect(vaeLoss(x(), xHat(), posterior()).total.dataSync()[0]).toBeCloseTo(1.25 + 1e-6 * KL, 6);
    expect(() => vaeLoss(x(), xHat(), posterior(), { kl: -1 })).toThrow(/'kl' must be a finite number ≥ 0/);
  });

  it('has the analytic gradients: ∂MSE/∂x̂ = 2(x̂−x)/n, ∂KL/∂μ = μ/B, ∂KL/∂logσ² = (σ²−1)/(2B)', () => {
    const target = x();
    const moments = tf.tensor4d([1, 0, 0, Math.log(2), 0, 0, 0, 0], [2, 1, 1, 4]);
    const [gRec, gMoments] = tf.grads((rec: tf.Tensor, m: tf.Tensor) => {
      const d = new DiagonalGaussianDistribution(m as tf.Tensor4D);
      return vaeLoss(target, rec as tf.Tensor4D, d, { l1: 0, mse: 1, kl: 1 }).total;
    })([xHat(), moments]);
    const rec = Array.from(gRec!.dataSync());
    expect(rec[0]).toBeCloseTo((2 * (0 - 0.5)) / 2, 6);
    expect(rec[1]).toBeCloseTo((2 * (1 - -1)) / 2, 6);
    const gm = Array.from(gMoments!.dataSync());
    const expected = [1 / 2, 0, 0, (2 - 1) / 4, 0, 0, 0, 0];
    gm.forEach((g, i) => expect(g).toBeCloseTo(expected[i]!, 6));
  });
});
