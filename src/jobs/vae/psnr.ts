/**
 * Peak signal-to-noise ratio in dB between two images (or batches) with values in [0, peak]:
 * 10·log10(peak² / MSE). Identical inputs give +Infinity.
 */
export function psnr(reference: ArrayLike<number>, test: ArrayLike<number>, peak = 1): number {
  if (reference.length !== test.length) throw new Error(`psnr: inputs have ${reference.length} and ${test.length} values`);
  if (reference.length === 0) throw new Error('psnr: empty input');
  let sum = 0;
  for (let i = 0; i < reference.length; i++) {
    const d = reference[i]! - test[i]!;
    sum += d * d;
  }
  const mse = sum / reference.length;
  return mse === 0 ? Infinity : 10 * Math.log10((peak * peak) / mse);
}
