import { matmul } from './linalg.js';
import { NumpyRandomState } from './numpy_random.js';
import { UsageError } from '../util/errors.js';

/**
 * Kernel Inception Distance (Bińkowski et al. 2018) as clean-fid, torch-fidelity and torchmetrics compute it:
 * the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, the unbiased estimate of MMD² on `subsets` random
 * subsets of `subsetSize` samples from each set (drawn without replacement, each subset independently;
 * the size is capped at the smaller set), reported as the mean and the population std (ddof 0, np.std)
 * over subsets. The subsets are torch-fidelity's own: one numpy RandomState(seed) (default 2020) draws
 * choice(n1, m, replace=False) then choice(n2, m, replace=False) per subset, reproduced bit for bit by
 * NumpyRandomState. Kernels are evaluated in float64 (torch-fidelity: in the features' float32).
 */

export interface KidOptions {
  /** Number of subsets (default 100). */
  subsets?: number;
  /** Samples per subset (default 1000). */
  subsetSize?: number;
  /** Seed of the subset sampler (default 2020, torch-fidelity's rng_seed). */
  seed?: number;
  /** Override the sampler: the indices of subset `s` drawn from a set of n (tests use numpy's draws). */
  sample?: (set: 'first' | 'second', subset: number, n: number, m: number) => ArrayLike<number>;
}

export interface KidResult {
  mean: number;
  std: number;
  /** MMD² of each subset. */
  values: Float64Array;
  subsets: number;
  subsetSize: number;
  seed: number;
}

/** A feature set: row-major [n × d]. */
export interface FeatureMatrix {
  data: Float32Array | Float64Array;
  n: number;
  d: number;
}

export function kernelInceptionDistance(first: FeatureMatrix, second: FeatureMatrix, opts: KidOptions = {}): KidResult {
  const d = first.d;
  if (second.d !== d) throw new UsageError(`KID: feature dimensions differ (${d} and ${second.d})`);
  const subsets = opts.subsets ?? 100;
  const requested = opts.subsetSize ?? 1000;
  const seed = opts.seed ?? 2020;
  if (!Number.isInteger(subsets) || subsets < 1) throw new UsageError(`KID: subsets must be a positive integer, got ${subsets}`);
  if (!Number.isInteger(requested) || requested < 2) throw new UsageError(`KID: subsetSize must be an integer ≥ 2, got ${requested}`);
  const m = Math.min(first.n, second.n, requested);
  if (m < 2) throw new UsageError(`KID: needs at least 2 samples in each set, have ${first.n} and ${second.n}`);
  const rng = new NumpyRandomState(seed);
  const draw = opts.sample ?? ((_set: 'first' | 'second', _s: number, n: number, size: number) => rng.choiceWithoutReplacement(n, size));
  const values = new Float64Array(subsets);
  for (let s = 0; s < subsets; s++) {
    const x = gatherRows(first, draw('first', s, first.n, m), m);
    const y = gatherRows(second, draw('second', s, second.n, m), m);
    values[s] = mmd2PolynomialUnbiased(x, y, m, d);
  }
  let mean = 0;
  for (const v of values) mean += v;
  mean /= subsets;
  let variance = 0;
  for (const v of values) variance += (v - mean) ** 2;
  return { mean, std: Math.sqrt(variance / subsets), values, subsets, subsetSize: m, seed };
}

/**
 * Unbiased MMD² of two equal-size samples x, y ([m × d] row-major, float64) under the cubic kernel:
 * (Σ_{i≠j} k(xi,xj) + Σ_{i≠j} k(yi,yj)) / (m(m−1)) − 2 Σ_{i,j} k(xi,yj) / m².
 */
export function mmd2PolynomialUnbiased(x: Float64Array, y: Float64Array, m: number, d: number): number {
  const kernelSum = (g: Float64Array, skipDiagonal: boolean): number => {
    let s = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) {
        if (skipDiagonal && i === j) continue;
        s += (g[i * m + j]! / d + 1) ** 3;
      }
    }
    return s;
  };
  const kxx = kernelSum(matmul(x, x, m, m, d, false, true), true);
  const kyy = kernelSum(matmul(y, y, m, m, d, false, true), true);
  const kxy = kernelSum(matmul(x, y, m, m, d, false, true), false);
  return (kxx + kyy) / (m * (m - 1)) - (2 * kxy) / (m * m);
}

function gatherRows(set: FeatureMatrix, idx: ArrayLike<number>, m: number): Float64Array {
  if (idx.length !== m) throw new Error(`KID: a subset sampler returned ${idx.length} indices, expected ${m}`);
  const d = set.d;
  const out = new Float64Array(m * d);
  for (let r = 0; r < m; r++) {
    const i = idx[r]!;
    if (!Number.isInteger(i) || i < 0 || i >= set.n) throw new Error(`KID: subset index ${i} is outside 0..${set.n - 1}`);
    for (let k = 0; k < d; k++) out[r * d + k] = set.data[i * d + k]!;
  }
  return out;
}
