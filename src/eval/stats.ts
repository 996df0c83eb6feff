import { addGramUpper, mirrorUpper } from './linalg.js';
import { UsageError } from '../util/errors.js';

/**
 * Sufficient statistics of a feature set, in float64: the count n, Σx and Σxxᵀ. Shards accumulate their
 * own and merge by adding (sums of sums), so `evaluate merge` reproduces the unsharded statistics up to
 * the order of float64 additions. The mean and the unbiased covariance (np.cov's, ddof = 1) follow as
 * μ = Σx / n and Σ = (Σxxᵀ − n μμᵀ) / (n − 1), as torchmetrics' FID keeps its state.
 */
export class FeatureStats {
  /** Σx, length dim. */
  readonly sum: Float64Array;
  /** Σxxᵀ, row-major dim×dim; only the upper triangle (i ≤ j) is kept up to date. */
  private readonly outer: Float64Array;
  private count: number;

  constructor(readonly dim: number, init?: { n: number; sum: Float64Array; sumOuter: Float64Array }) {
    if (!Number.isInteger(dim) || dim < 1) throw new Error(`FeatureStats: dimension must be a positive integer, got ${dim}`);
    if (init) {
      if (init.sum.length !== dim || init.sumOuter.length !== dim * dim) {
        throw new Error(`FeatureStats: sums of length ${init.sum.length} and ${init.sumOuter.length} do not fit dimension ${dim}`);
      }
      if (!Number.isInteger(init.n) || init.n < 0) throw new Error(`FeatureStats: n must be a non-negative integer, got ${init.n}`);
    }
    this.count = init?.n ?? 0;
    this.sum = init ? Float64Array.from(init.sum) : new Float64Array(dim);
    this.outer = init ? Float64Array.from(init.sumOuter) : new Float64Array(dim * dim);
  }

  get n(): number {
    return this.count;
  }

  /** Adds `rows` feature vectors stored row-major in `features` ([rows × dim]). */
  add(features: Float32Array | Float64Array, rows = features.length / this.dim): this {
    if (!Number.isInteger(rows) || features.length < rows * this.dim) {
      throw new Error(`FeatureStats.add: ${features.length} values do not hold ${rows} rows of dimension ${this.dim}`);
    }
    const d = this.dim;
    const x = features instanceof Float64Array ? features : Float64Array.from(features.subarray(0, rows * d));
    for (let i = 0; i < rows * d; i++) {
      if (!Number.isFinite(x[i]!)) throw new Error(`FeatureStats.add: feature ${i % d} of row ${Math.floor(i / d)} is ${x[i]}`);
    }
    for (let r = 0; r < rows; r++) for (let j = 0; j < d; j++) this.sum[j]! += x[r * d + j]!;
    addGramUpper(this.outer, x, rows, d);
    this.count += rows;
    return this;
  }

  /** Adds another shard's statistics into this one. */
  merge(other: FeatureStats): this {
    if (other.dim !== this.dim) throw new UsageError(`FeatureStats.merge: dimensions differ (${this.dim} and ${other.dim})`);
    for (let i = 0; i < this.dim; i++) this.sum[i]! += other.sum[i]!;
    const d = this.dim;
    for (let i = 0; i < d; i++) for (let j = i; j < d; j++) this.outer[i * d + j]! += other.outer[i * d + j]!;
    this.count += other.count;
    return this;
  }

  static mergeAll(parts: readonly FeatureStats[]): FeatureStats {
    if (parts.length === 0) throw new Error('FeatureStats.mergeAll: nothing to merge');
    const out = new FeatureStats(parts[0]!.dim);
    for (const p of parts) out.merge(p);
    return out;
  }

  /** Σxxᵀ as a full symmetric matrix (a copy). */
  sumOuter(): Float64Array {
    return mirrorUpper(this.outer.slice(), this.dim);
  }

  mean(): Float64Array {
    if (this.count < 1) throw new Error('FeatureStats.mean: no samples');
    return Float64Array.from(this.sum, (s) => s / this.count);
  }

  /** Unbiased covariance (divides by n − 1, as np.cov(rowvar=False)); row-major dim×dim. */
  covariance(): Float64Array {
    const n = this.count;
    if (n < 2) throw new UsageError(`FeatureStats.covariance: needs at least 2 samples, have ${n}`);
    const d = this.dim;
    const mu = this.mean();
    const cov = new Float64Array(d * d);
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        const v = (this.outer[i * d + j]! - n * mu[i]! * mu[j]!) / (n - 1);
        cov[i * d + j] = v;
        cov[j * d + i] = v;
      }
    }
    return cov;
  }
}
