import { Rng } from '../util/rng.js';

/**
 * Small dense linear algebra in float64 for LoRA resizing and extraction. Matrices are row-major
 * Float64Arrays with explicit sizes.
 */
export interface Svd {
  /** m × k, orthonormal columns. */
  u: Float64Array;
  /** k singular values, descending, ≥ 0. */
  s: Float64Array;
  /** n × k, orthonormal columns. */
  v: Float64Array;
  m: number;
  n: number;
  k: number;
}

export function transpose(a: Float64Array, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j]!;
  return t;
}

/** (m × p) · (p × n). */
export function matmul(a: Float64Array, b: Float64Array, m: number, p: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < p; k++) {
      const aik = a[i * p + k]!;
      if (aik === 0) continue;
      const bo = k * n;
      const co = i * n;
      for (let j = 0; j < n; j++) c[co + j]! += aik * b[bo + j]!;
    }
  }
  return c;
}

/**
 * Thin SVD by one-sided Jacobi (Hestenes) rotations on the columns, float64: accurate to rounding
 * for any matrix (no squaring of the condition number). A = U·diag(s)·Vᵀ with k = min(m, n).
 */
export function svd(a: ArrayLike<number>, m: number, n: number): Svd {
  if (a.length !== m * n) throw new Error(`svd: ${a.length} values for a ${m}×${n} matrix`);
  if (m < n) {
    const t = svd(transpose(Float64Array.from(a), m, n), n, m);
    return { u: t.v, s: t.s, v: t.u, m, n, k: t.k };
  }
  // Columns stored contiguously: col j of the working matrix at w[j*m …].
  const w = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j]!;
  const v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  const eps = 1e-15;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        const po = p * m;
        const qo = q * m;
        for (let i = 0; i < m; i++) {
          const x = w[po + i]!;
          const y = w[qo + i]!;
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= eps * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const x = w[po + i]!;
          const y = w[qo + i]!;
          w[po + i] = c * x - s * y;
          w[qo + i] = s * x + c * y;
        }
        for (let i = 0; i < n; i++) {
          const x = v[i * n + p]!;
          const y = v[i * n + q]!;
          v[i * n + p] = c * x - s * y;
          v[i * n + q] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < m; i++) s += w[j * m + i]! ** 2;
    return Math.sqrt(s);
  });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const u = new Float64Array(m * n);
  const vs = new Float64Array(n * n);
  const s = new Float64Array(n);
  order.forEach((j, col) => {
    const sigma = norms[j]!;
    s[col] = sigma;
    for (let i = 0; i < m; i++) u[i * n + col] = sigma > 0 ? w[j * m + i]! / sigma : 0;
    for (let i = 0; i < n; i++) vs[i * n + col] = v[i * n + j]!;
  });
  completeBasis(u, m, n, s);
  return { u, s, v: vs, m, n, k: n };
}

/** Columns of U for zero singular values get orthonormal completions (Gram–Schmidt against the rest). */
function completeBasis(u: Float64Array, m: number, k: number, s: Float64Array): void {
  for (let col = 0; col < k; col++) {
    if (s[col]! > 0) continue;
    for (let e = 0; e < m; e++) {
      const x = new Float64Array(m);
      x[e] = 1;
      for (let c = 0; c < k; c++) {
        if (c === col || (s[c]! === 0 && c > col)) continue;
        let d = 0;
        for (let i = 0; i < m; i++) d += u[i * k + c]! * x[i]!;
        for (let i = 0; i < m; i++) x[i]! -= d * u[i * k + c]!;
      }
      const norm = Math.sqrt(x.reduce((acc, y) => acc + y * y, 0));
      if (norm > 1e-8) {
        for (let i = 0; i < m; i++) u[i * k + col] = x[i]! / norm;
        break;
      }
    }
  }
}

/** Householder-free thin QR by modified Gram–Schmidt (twice, for orthogonality): a (m × k) = Q R. */
export function qr(a: Float64Array, m: number, k: number): { q: Float64Array; r: Float64Array } {
  const q = Float64Array.from(a);
  const r = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let c = 0; c < j; c++) {
        let d = 0;
        for (let i = 0; i < m; i++) d += q[i * k + c]! * q[i * k + j]!;
        r[c * k + j]! += d;
        for (let i = 0; i < m; i++) q[i * k + j]! -= d * q[i * k + c]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += q[i * k + j]! ** 2;
    norm = Math.sqrt(norm);
    r[j * k + j] = norm;
    for (let i = 0; i < m; i++) q[i * k + j] = norm > 0 ? q[i * k + j]! / norm : 0;
  }
  return { q, r };
}

/**
 * SVD of a product B·A (B m × r, A r × n) without forming it: B = Q_B R_B, Aᵀ = Q_A R_A, then the
 * r × r core R_B R_Aᵀ is decomposed exactly. k = r.
 */
export function svdOfProduct(b: Float64Array, a: Float64Array, m: number, r: number, n: number): Svd {
  const qb = qr(b, m, r);
  const qa = qr(transpose(a, r, n), n, r);
  const core = matmul(qb.r, transpose(qa.r, r, r), r, r, r);
  const small = svd(core, r, r);
  return { u: matmul(qb.q, small.u, m, r, r), s: small.s, v: matmul(qa.q, small.v, n, r, r), m, n, k: r };
}

/**
 * The leading k singular triplets. Exact (Jacobi on the whole matrix) when the smaller side is at
 * most `exactUpTo`; otherwise randomized subspace iteration (Halko, Martinsson & Tropp) with
 * oversampling and power iterations, the top triplets then exact on the projected matrix.
 */
export function truncatedSvd(
  a: Float64Array,
  m: number,
  n: number,
  k: number,
  opts: { exactUpTo?: number; oversample?: number; powerIterations?: number; rng?: Rng } = {},
): Svd {
  const kk = Math.min(k, m, n);
  if (Math.min(m, n) <= (opts.exactUpTo ?? 384)) return truncate(svd(a, m, n), kk);
  const l = Math.min(Math.min(m, n), kk + (opts.oversample ?? 10));
  const rng = opts.rng ?? new Rng(0);
  const at = transpose(a, m, n);
  // Range of A: Y = A Ω, re-orthonormalised between power steps (Aᵀ then A).
  const omega = new Float64Array(n * l);
  for (let i = 0; i < omega.length; i++) omega[i] = rng.normal();
  let q = qr(matmul(a, omega, m, n, l), m, l).q;
  for (let it = 0; it < (opts.powerIterations ?? 6); it++) {
    const z = qr(matmul(at, q, n, m, l), n, l).q;
    q = qr(matmul(a, z, m, n, l), m, l).q;
  }
  // B = Qᵀ A (l × n) = Ũ Σ Vᵀ, U = Q Ũ.
  const small = svd(matmul(transpose(q, m, l), a, l, m, n), l, n);
  return truncate({ u: matmul(q, small.u, m, l, small.k), s: small.s, v: small.v, m, n, k: small.k }, kk);
}

export function truncate(d: Svd, k: number): Svd {
  if (k >= d.k) return d;
  const u = new Float64Array(d.m * k);
  const v = new Float64Array(d.n * k);
  for (let i = 0; i < d.m; i++) for (let j = 0; j < k; j++) u[i * k + j] = d.u[i * d.k + j]!;
  for (let i = 0; i < d.n; i++) for (let j = 0; j < k; j++) v[i * k + j] = d.v[i * d.k + j]!;
  return { u, s: d.s.slice(0, k), v, m: d.m, n: d.n, k };
}
