import { UsageError } from '../util/errors.js';
import { frechetDistance } from './fid.js';
import { inceptionScore } from './inception_score.js';
import { kernelInceptionDistance } from './kid.js';
import { meanAndCov, type EvalInput } from './evaluate_inputs.js';

/**
 * The metrics of an evaluation under torch-fidelity's key names (plus `clip_score`), each computed
 * from EvalInputs by the maths in fid.ts / kid.ts / inception_score.ts, with the settings that
 * produced it and any warnings (rank-deficient covariance, eps retry).
 */

export interface MetricValues {
  frechet_inception_distance?: number;
  kernel_inception_distance_mean?: number;
  kernel_inception_distance_std?: number;
  inception_score_mean?: number;
  inception_score_std?: number;
  /** torchmetrics' convention: mean over images of max(100·cos, 0). */
  clip_score?: number;
  /** Hessel et al.: mean of 2.5·max(cos, 0). */
  clip_score_hessel?: number;
}

export interface KidSettings {
  subsets: number;
  subsetSize: number;
  seed: number;
}

export interface IsSettings {
  splits: number;
  seed: number;
}

export const DEFAULT_KID: KidSettings = { subsets: 100, subsetSize: 1000, seed: 2020 };
export const DEFAULT_IS: IsSettings = { splits: 10, seed: 2020 };

function checkDims(a: EvalInput, b: EvalInput): void {
  if (a.dim !== b.dim) {
    throw new UsageError(`feature dimensions differ: ${a.source} has ${a.dim}, ${b.source} has ${b.dim} (were they made by the same network and layer?)`);
  }
}

export function computeFid(a: EvalInput, b: EvalInput): { value: number; warnings: string[]; n: [number | undefined, number | undefined] } {
  checkDims(a, b);
  const sa = meanAndCov(a);
  const sb = meanAndCov(b);
  const r = frechetDistance({ mu: sa.mu, sigma: sa.sigma, ...(sa.n ? { n: sa.n } : {}) }, { mu: sb.mu, sigma: sb.sigma, ...(sb.n ? { n: sb.n } : {}) });
  const warnings = [...r.warnings];
  for (const [s, side] of [
    [sa, a],
    [sb, b],
  ] as const) {
    if (s.n !== undefined && s.n < a.dim) {
      const w = `${side.source}: ${s.n} samples for ${a.dim}-d features: the covariance is rank-deficient and FID is biased upwards; use at least ${a.dim} (50,000 is the usual)`;
      if (!warnings.some((x) => x.includes(side.source))) warnings.push(w);
    }
  }
  return { value: r.fid, warnings, n: [sa.n, sb.n] };
}

export function computeKid(a: EvalInput, b: EvalInput, s: KidSettings): { mean: number; std: number } {
  checkDims(a, b);
  for (const side of [a, b]) {
    if (!side.features) throw new UsageError(`${side.source}: KID needs per-image features (an image folder or a feature file), not only mu/sigma`);
    if (side.features.n < s.subsetSize) {
      throw new UsageError(`${side.source}: ${side.features.n} images, fewer than the KID subset size ${s.subsetSize}; pass --kid-subset-size ${side.features.n} or less (torch-fidelity refuses this too)`);
    }
  }
  const fa = a.features!;
  const fb = b.features!;
  const r = kernelInceptionDistance({ data: fa.features, n: fa.n, d: fa.featureDim }, { data: fb.features, n: fb.n, d: fb.featureDim }, s);
  return { mean: r.mean, std: r.std };
}

export function computeIs(a: EvalInput, s: IsSettings): { mean: number; std: number } {
  const f = a.features;
  if (!f?.logits || !f.logitDim) throw new UsageError(`${a.source}: Inception Score needs the network's logits (an image folder, or a feature file written with them)`);
  if (f.n < s.splits) throw new UsageError(`${a.source}: ${f.n} images cannot fill ${s.splits} splits; pass --is-splits ${f.n} or less`);
  const r = inceptionScore(f.logits, f.n, f.logitDim, { splits: s.splits, seed: s.seed });
  return { mean: r.mean, std: r.std };
}

/** Per-image CLIP-score from unit image and text embeddings (row-major [n × d]). */
export function clipScores(image: Float32Array, text: Float32Array, n: number, d: number): { perImage: number[]; clip_score: number; clip_score_hessel: number } {
  const perImage: number[] = [];
  let hessel = 0;
  for (let i = 0; i < n; i++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let j = 0; j < d; j++) {
      const x = image[i * d + j]!;
      const y = text[i * d + j]!;
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    const cos = dot / Math.max(Math.sqrt(na * nb), 1e-12);
    perImage.push(Math.max(100 * cos, 0));
    hessel += 2.5 * Math.max(cos, 0);
  }
  const mean = perImage.reduce((s, v) => s + v, 0) / Math.max(n, 1);
  return { perImage, clip_score: mean, clip_score_hessel: hessel / Math.max(n, 1) };
}
