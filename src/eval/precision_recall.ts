import type { FeatureMatrix } from './kid.js';
import { matmul } from './linalg.js';
import { UsageError } from '../util/errors.js';

/**
 * Improved precision and recall (Kynkäänniemi et al. 2019), as torch-fidelity's PRC: each set's manifold is
 * the union of balls around its samples with radius the distance to the sample's k-th nearest neighbour in
 * the same set (k = 3; the sample itself does not count). Precision = the share of generated samples inside
 * the real manifold; recall = the share of real samples inside the generated one. Distances are Euclidean,
 * computed in float64 as ‖a‖² + ‖b‖² − 2aᵀb in row blocks (bounded memory).
 */

export interface PrecisionRecallOptions {
  /** Neighbourhood size k (default 3). */
  k?: number;
  /** Rows per distance block (default 1024). */
  blockRows?: number;
}

export interface PrecisionRecallResult {
  precision: number;
  recall: number;
  k: number;
}

export function precisionRecall(real: FeatureMatrix, fake: FeatureMatrix, opts: PrecisionRecallOptions = {}): PrecisionRecallResult {
  const k = opts.k ?? 3;
  const block = opts.blockRows ?? 1024;
  if (real.d !== fake.d) throw new UsageError(`precisionRecall: feature dimensions differ (${real.d} and ${fake.d})`);
  if (!Number.isInteger(k) || k < 1) throw new UsageError(`precisionRecall: k must be a positive integer, got ${k}`);
  for (const [name, s] of [['real', real], ['generated', fake]] as const) {
    if (s.n <= k) throw new UsageError(`precisionRecall: the ${name} set has ${s.n} samples; k = ${k} needs more than ${k}`);
  }
  const r = toF64(real);
  const f = toF64(fake);
  const radiiReal = kthNeighbourRadii(r, real.n, real.d, k, block);
  const radiiFake = kthNeighbourRadii(f, fake.n, fake.d, k, block);
  return {
    precision: coveredShare(f, fake.n, r, real.n, radiiReal, real.d, block),
    recall: coveredShare(r, real.n, f, fake.n, radiiFake, real.d, block),
    k,
  };
}

function toF64(s: FeatureMatrix): Float64Array {
  return s.data instanceof Float64Array ? s.data : Float64Array.from(s.data.subarray(0, s.n * s.d));
}

function squaredNorms(x: Float64Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[i * d + j]! ** 2;
    out[i] = s;
  }
  return out;
}

/** Squared distances of rows lo..hi of a to every row of b: [(hi − lo) × nb]. */
function distanceBlock(a: Float64Array, an: Float64Array, lo: number, hi: number, b: Float64Array, bn: Float64Array, nb: number, d: number): Float64Array {
  const rows = hi - lo;
  const dots = matmul(a.subarray(lo * d, hi * d), b, rows, nb, d, false, true);
  for (let i = 0; i < rows; i++) for (let j = 0; j < nb; j++) dots[i * nb + j] = Math.max(0, an[lo + i]! + bn[j]! - 2 * dots[i * nb + j]!);
  return dots;
}

/** Distance from each sample to its k-th nearest other sample of the same set. */
export function kthNeighbourRadii(x: Float64Array, n: number, d: number, k: number, block = 1024): Float64Array {
  const norms = squaredNorms(x, n, d);
  const radii = new Float64Array(n);
  const row = new Float64Array(n);
  for (let lo = 0; lo < n; lo += block) {
    const hi = Math.min(n, lo + block);
    const dist = distanceBlock(x, norms, lo, hi, x, norms, n, d);
    for (let i = lo; i < hi; i++) {
      row.set(dist.subarray((i - lo) * n, (i - lo + 1) * n));
      row[i] = 0; // the sample itself, exactly
      // The (k+1)-th smallest counts the sample itself as the first, as torch-fidelity's kthvalue(k + 1).
      radii[i] = Math.sqrt(selectKth(row, k));
    }
  }
  return radii;
}

/** Share of the query rows within radius[j] of some reference row j. */
function coveredShare(q: Float64Array, nq: number, ref: Float64Array, nr: number, radii: Float64Array, d: number, block: number): number {
  const qn = squaredNorms(q, nq, d);
  const rn = squaredNorms(ref, nr, d);
  const r2 = Float64Array.from(radii, (v) => v * v);
  let covered = 0;
  for (let lo = 0; lo < nq; lo += block) {
    const hi = Math.min(nq, lo + block);
    const dist = distanceBlock(q, qn, lo, hi, ref, rn, nr, d);
    for (let i = 0; i < hi - lo; i++) {
      for (let j = 0; j < nr; j++) {
        if (dist[i * nr + j]! <= r2[j]!) {
          covered++;
          break;
        }
      }
    }
  }
  return covered / nq;
}

/** The value of rank `k` (0-based) in ascending order; reorders `a`. */
function selectKth(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}
