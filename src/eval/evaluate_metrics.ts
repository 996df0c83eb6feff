import { cosineSimilarity } from '../models/clip/clip_model.js';
import { UsageError } from '../util/errors.js';
import { clipScoreFromCosines, HESSEL_PREFIX } from './clip_score.js';
import type { FeatureExtractor } from './evaluate_features.js';
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
  /** torchmetrics' convention: max(mean over images of 100·cos, 0). */
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
  // fid.ts words the N < d (rank-deficient covariance) warning; name which input it is about.
  const warnings = r.warnings.map((w) => w.replace(/^the first set/, a.source).replace(/^the second set/, b.source));
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

/**
 * CLIP-score of images against captions from the extractor's embeddings, in both conventions
 * (clip_score.ts): torchmetrics' 100·cos with the clamp on the mean, and Hessel et al.'s
 * 2.5·max(cos, 0) with captions prefixed "A photo depicts ". Per image: 100·max(cos, 0).
 */
export async function computeClipScore(
  extractor: FeatureExtractor,
  imageFeatures: Float32Array,
  captions: readonly string[],
): Promise<{ perImage: number[]; clip_score: number; clip_score_hessel: number; model: string }> {
  if (!extractor.encodeTexts) throw new UsageError(`${extractor.name} has no text tower; CLIP-score needs a CLIP model`);
  const n = captions.length;
  const d = extractor.featureDim;
  const cosines = async (texts: readonly string[]) => {
    const t = await extractor.encodeTexts!(texts);
    return Array.from({ length: n }, (_, i) => cosineSimilarity(imageFeatures.subarray(i * d, (i + 1) * d), t.subarray(i * d, (i + 1) * d)));
  };
  const plain = await cosines(captions);
  const tm = clipScoreFromCosines(plain, 'torchmetrics', extractor.name);
  const hessel = clipScoreFromCosines(await cosines(captions.map((c) => HESSEL_PREFIX + c)), 'hessel', extractor.name);
  return { perImage: plain.map((c) => Math.max(100 * c, 0)), clip_score: tm.score, clip_score_hessel: hessel.score, model: extractor.name };
}
