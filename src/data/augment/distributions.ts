import type { Rng } from '../../util/rng.js';

/** Uniform in (0, 1]: safe to take the log or a negative power of. */
function openUniform(rng: Rng): number {
  return 1 - rng.uniform();
}

/**
 * Gamma(shape, 1) by Marsaglia & Tsang (2000), "A simple method for generating gamma variables". Shapes below 1 use
 * their boost: Gamma(k) = Gamma(k + 1) · U^(1/k).
 */
export function sampleGamma(rng: Rng, shape: number): number {
  if (!(shape > 0) || !Number.isFinite(shape)) throw new RangeError(`gamma shape must be a positive number, got ${shape}`);
  if (shape < 1) return sampleGamma(rng, shape + 1) * Math.pow(openUniform(rng), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = rng.normal();
    const t = 1 + c * x;
    if (t <= 0) continue;
    const v = t * t * t;
    const u = openUniform(rng);
    if (u < 1 - 0.0331 * x * x * x * x) return d * v;
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
export function sampleBeta(rng: Rng, a: number, b: number): number {
  const x = sampleGamma(rng, a);
  const y = sampleGamma(rng, b);
  // Both can underflow to 0 for tiny shapes; either end is then equally likely, as it is in the limit.
  if (x + y === 0) return rng.uniform() < a / (a + b) ? 1 : 0;
  return x / (x + y);
}
