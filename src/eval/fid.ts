import { choleskyLower, congruenceLower, linalgBackend, matmul, symmetricEigen, symmetrise, type LinalgBackend } from './linalg.js';
import { UsageError } from '../util/errors.js';

/**
 * Fréchet distance between two Gaussians N(μ1, Σ1), N(μ2, Σ2):
 *   ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½.
 *
 * pytorch-fid and clean-fid take scipy's general sqrtm of Σ1Σ2; torch-fidelity and torchmetrics sum
 * √eig(Σ1Σ2) of the non-symmetric product. Both equal Σ √λ(Σ1^½ Σ2 Σ1^½): Σ1Σ2 is similar to that
 * symmetric positive semidefinite matrix. So the trace term is computed with symmetric eigensolvers only:
 * Σ1 = V Λ Vᵀ, B = V Λ^½ (the columns with λ > 0), M = Bᵀ Σ2 B, tr(Σ1Σ2)^½ = Σ √max(μ(M), 0). This stays
 * real and exact when Σ1 or Σ2 is singular (fewer samples than dimensions), where sqrtm's Schur route
 * returns complex parts or NaN; Σ1's eigenvalues below d·ε·λmax count as zero. Both backends first try the
 * cheaper congruence with Σ1's Cholesky factor, Σ1 = LLᵀ, M = Lᵀ Σ2 L (one eigenvalue-only problem, about
 * 4× less work than eigenvectors), and take the eigenvector route when Σ1 is not safely positive definite. Eigenvalues that rounding pushes below zero are clamped, as in the
 * symmetric workaround of pytorch-fid#117.
 *
 * As pytorch-fid, a trace term that fails (an eigensolver that does not converge, a non-finite result) is
 * retried once with eps·I added to both covariances, and the offset is reported.
 */

export interface GaussianStats {
  mu: Float64Array;
  /** Row-major d×d. */
  sigma: Float64Array;
  /** Samples the statistics came from, when known (for the rank warning). */
  n?: number;
}

/** 'auto': Cholesky congruence when Σ1 is positive definite, else the eigenvector route; 'eigen': always the latter. */
export type FrechetRoute = 'auto' | 'eigen';

export interface FrechetOptions {
  route?: FrechetRoute;
  /** The offset added to both diagonals when the first attempt is not finite (pytorch-fid: 1e-6). */
  eps?: number;
  /** Add eps·I to both covariances up front (to reproduce a pytorch-fid number that took its retry). */
  alwaysOffset?: boolean;
}

export interface FrechetResult {
  fid: number;
  /** ‖μ1 − μ2‖². */
  meanTerm: number;
  /** tr Σ1 + tr Σ2 − 2 tr (Σ1Σ2)^½. */
  covTerm: number;
  traceSqrtProduct: number;
  /** The diagonal offset that was applied (0 when none). */
  offset: number;
  /** Rank of Σ1 seen by its eigenvalues (those above d·ε·λmax). */
  rank1: number;
  backend: LinalgBackend;
  warnings: string[];
}

export function frechetDistance(a: GaussianStats, b: GaussianStats, opts: FrechetOptions = {}): FrechetResult {
  const d = a.mu.length;
  if (b.mu.length !== d) throw new UsageError(`frechetDistance: feature dimensions differ (${d} and ${b.mu.length})`);
  for (const [name, s] of [['first', a], ['second', b]] as const) {
    if (s.sigma.length !== d * d) throw new Error(`frechetDistance: the ${name} covariance has ${s.sigma.length} values, expected ${d}×${d}`);
    for (let i = 0; i < s.mu.length; i++) if (!Number.isFinite(s.mu[i]!)) throw new Error(`frechetDistance: the ${name} mean has ${s.mu[i]} at ${i}`);
    for (let i = 0; i < s.sigma.length; i++) {
      if (!Number.isFinite(s.sigma[i]!)) throw new Error(`frechetDistance: the ${name} covariance has ${s.sigma[i]} at (${Math.floor(i / d)}, ${i % d})`);
    }
  }
  const eps = opts.eps ?? 1e-6;
  const warnings: string[] = [];
  for (const [name, s] of [['first', a], ['second', b]] as const) {
    if (s.n !== undefined && s.n < d) {
      warnings.push(
        `the ${name} set has ${s.n} samples, fewer than the ${d} feature dimensions: its covariance is rank-deficient and FID is biased (use ≥ ${d}, ideally 10k–50k)`,
      );
    }
  }
  let meanTerm = 0;
  for (let i = 0; i < d; i++) meanTerm += (a.mu[i]! - b.mu[i]!) ** 2;
  let offset = opts.alwaysOffset ? eps : 0;
  let attempt: { trace: number; rank1: number };
  try {
    attempt = traceTerm(a.sigma, b.sigma, d, offset, opts.route);
    if (!Number.isFinite(attempt.trace)) throw new Error(`the trace of (Σ1Σ2)^½ came out ${attempt.trace}`);
  } catch (e) {
    if (offset !== 0) throw e;
    warnings.push(`${(e as Error).message}; retried with ${eps} added to the diagonals of both covariances (as pytorch-fid)`);
    offset = eps;
    attempt = traceTerm(a.sigma, b.sigma, d, offset, opts.route);
  }
  let tr1 = 0;
  let tr2 = 0;
  for (let i = 0; i < d; i++) {
    tr1 += a.sigma[i * d + i]! + offset;
    tr2 += b.sigma[i * d + i]! + offset;
  }
  const covTerm = tr1 + tr2 - 2 * attempt.trace;
  return {
    fid: meanTerm + covTerm,
    meanTerm,
    covTerm,
    traceSqrtProduct: attempt.trace,
    offset,
    rank1: attempt.rank1,
    backend: linalgBackend(),
    warnings,
  };
}

/** tr (Σ1Σ2)^½ through Σ1 = VΛVᵀ and the eigenvalues of Λ^½ Vᵀ Σ2 V Λ^½ (offset·I added to both when non-zero). */
export function traceSqrtProduct(sigma1: Float64Array, sigma2: Float64Array, d: number, offset = 0, route: FrechetRoute = 'auto'): number {
  return traceTerm(sigma1, sigma2, d, offset, route).trace;
}

/** Σ √λ(Lᵀ Σ2 L) with Σ1 = LLᵀ, or null when Σ1 is not safely positive definite. */
function traceByCholesky(s1: Float64Array, s2: Float64Array, d: number): number | null {
  // A pivot at rounding level means Σ1 is numerically singular: the eigen route treats that exactly.
  let maxDiag = 0;
  for (let i = 0; i < d; i++) maxDiag = Math.max(maxDiag, s1[i * d + i]!);
  const l = choleskyLower(s1, d, d * 2 ** -52 * maxDiag);
  if (!l) return null;
  return sumSqrt(symmetricEigen(symmetrise(congruenceLower(s2, l, d), d), d, { vectors: false }).values);
}

function traceTerm(sigma1: Float64Array, sigma2: Float64Array, d: number, offset: number, route: FrechetRoute = 'auto'): { trace: number; rank1: number } {
  const s1 = withOffset(sigma1, d, offset);
  const s2 = withOffset(sigma2, d, offset);
  if (route === 'auto') {
    const viaCholesky = traceByCholesky(s1, s2, d);
    if (viaCholesky !== null) return { trace: viaCholesky, rank1: d };
  }
  const e1 = symmetricEigen(s1, d, { vectors: true });
  const lmax = Math.max(0, e1.values[d - 1] ?? 0);
  const tol = d * 2 ** -52 * lmax;
  // Eigenvalues below the rounding floor d·ε·λmax are zeros of a singular Σ1 (N < d) that came out as
  // ±1e-17 noise; kept, each would add √noise ≈ 1e-9 to the trace. Dropping them is exact in exact
  // arithmetic (they add nothing to Λ^½ Vᵀ Σ2 V Λ^½) and shrinks the second eigenproblem to the rank.
  const keep: number[] = [];
  for (let i = 0; i < d; i++) if (e1.values[i]! > tol) keep.push(i);
  const rank1 = keep.length;
  const r = keep.length;
  if (r === 0) return { trace: 0, rank1 };
  const vectors = e1.vectors!;
  // Rows of bt are √λ_i v_iᵀ: bt = (V Λ^½)ᵀ restricted to the kept eigenpairs.
  const bt = new Float64Array(r * d);
  keep.forEach((src, row) => {
    const s = Math.sqrt(e1.values[src]!);
    for (let k = 0; k < d; k++) bt[row * d + k] = s * vectors[src * d + k]!;
  });
  const p = matmul(bt, s2, r, d, d); // r×d
  const m = symmetrise(matmul(p, bt, r, r, d, false, true), r); // r×r
  return { trace: sumSqrt(symmetricEigen(m, r, { vectors: false }).values), rank1 };
}

/** Σ √max(μ, 0): eigenvalues that rounding pushed below zero count as zero. */
function sumSqrt(mu: Float64Array): number {
  let trace = 0;
  for (const v of mu) trace += Math.sqrt(Math.max(v, 0));
  return trace;
}

function withOffset(sigma: Float64Array, d: number, offset: number): Float64Array {
  if (offset === 0) return sigma;
  const out = sigma.slice();
  for (let i = 0; i < d; i++) out[i * d + i]! += offset;
  return out;
}
