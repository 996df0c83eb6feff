import { loadNativeAddon, type NativeAddon } from '../backend/native/addon.js';

/**
 * Float64 dense linear algebra for the evaluation metrics: symmetric eigendecomposition, matrix
 * products and the rank-k update Σ xxᵀ. LAPACK/BLAS from OpenBLAS through the native addon where it is
 * built (dsyevd, dgemm, dsyrk: seconds at d = 2048), otherwise plain JavaScript in float64 (Householder
 * tridiagonalisation + implicit QL for the eigenproblem: correct, about a minute at d = 2048).
 *
 * Matrices are row-major Float64Arrays. Eigenvectors come back one per row (vectors[i·n + k] = v_i[k]),
 * eigenvalues ascending, as numpy.linalg.eigh returns them (there as columns).
 */

export type LinalgBackend = 'lapack' | 'js';

/** The native functions this module uses (native/src/lapack.cc). */
type LapackAddon = Pick<NativeAddon, 'dsyevd' | 'dgemm' | 'dsyrk' | 'dpotrf' | 'dtrmm'>;

let forced: LinalgBackend | undefined;

/** Tests and the bench pin a backend; undefined = LAPACK where the addon has it. */
export function setLinalgBackend(backend: LinalgBackend | undefined): void {
  if (backend === 'lapack' && !lapack()) throw new Error(`linalg: LAPACK is not available (${loadNativeAddon().reason ?? 'addon without dsyevd'})`);
  forced = backend;
}

function lapack(): LapackAddon | undefined {
  const { addon } = loadNativeAddon();
  return addon && typeof addon.dsyevd === 'function' && typeof addon.dpotrf === 'function' ? addon : undefined;
}

function native(): LapackAddon | undefined {
  return forced === 'js' ? undefined : lapack();
}

/** Which implementation the next call will use. */
export function linalgBackend(): LinalgBackend {
  return native() ? 'lapack' : 'js';
}

export interface SymmetricEigen {
  /** Ascending. */
  values: Float64Array;
  /** Eigenvector i in row i (n×n), or null when not asked for. */
  vectors: Float64Array | null;
}

/**
 * Eigenvalues (and optionally eigenvectors) of a symmetric n×n matrix. Only the lower triangle (row-major)
 * is read, as LAPACK's 'U' on the column-major view; the input is not modified.
 */
export function symmetricEigen(a: Float64Array, n: number, opts: { vectors: boolean }): SymmetricEigen {
  if (a.length !== n * n) throw new Error(`symmetricEigen: matrix has ${a.length} values, expected ${n}×${n}`);
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) throw new Error(`symmetricEigen: entry (${Math.floor(i / n)}, ${i % n}) is ${a[i]}`);
  const work = a.slice();
  const values = new Float64Array(n);
  const lib = native();
  if (lib) {
    // Row-major lower triangle = column-major upper triangle; eigenvectors come back as columns of the
    // column-major result, i.e. rows of our row-major buffer.
    lib.dsyevd(opts.vectors, n, work, values);
    return { values, vectors: opts.vectors ? work : null };
  }
  return jsSymmetricEigen(work, n, values, opts.vectors);
}

/** Row-major C[m×n] = op(A)·op(B), op(X) = Xᵀ when its flag is set (A is k×m then, B n×k). */
export function matmul(a: Float64Array, b: Float64Array, m: number, n: number, k: number, transA = false, transB = false): Float64Array {
  if (a.length < m * k || b.length < k * n) throw new Error(`matmul: buffers too small for ${m}×${k} · ${k}×${n}`);
  const c = new Float64Array(m * n);
  const lib = native();
  if (lib) {
    lib.dgemm(transA, transB, m, n, k, 1, a, b, 0, c);
    return c;
  }
  // Bring both operands to the i-k-j friendly layout (A row-major m×k, B row-major k×n) once.
  const ar = transA ? transpose(a, k, m) : a;
  const br = transB ? transpose(b, n, k) : b;
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const aip = ar[i * k + p]!;
      if (aip === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j]! += aip * br[bp + j]!;
    }
  }
  return c;
}

export function transpose(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  const block = 64;
  for (let i0 = 0; i0 < rows; i0 += block) {
    for (let j0 = 0; j0 < cols; j0 += block) {
      const i1 = Math.min(rows, i0 + block);
      const j1 = Math.min(cols, j0 + block);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) t[j * rows + i] = a[i * cols + j]!;
    }
  }
  return t;
}

/**
 * c += xᵀx for x row-major [rows × n] (a batch of samples): the upper triangle of the row-major n×n c
 * (entries i ≤ j) is updated, the lower one is left as it is.
 */
export function addGramUpper(c: Float64Array, x: Float64Array, rows: number, n: number): void {
  if (c.length !== n * n || x.length < rows * n) throw new Error(`addGramUpper: expected c ${n}×${n} and x ${rows}×${n}`);
  if (rows === 0) return;
  const lib = native();
  if (lib) {
    lib.dsyrk(n, rows, 1, x, 1, c);
    return;
  }
  // Blocks of rows, transposed so each c[i][j] gets one dot product over the block's samples: c is swept
  // once per block instead of once per sample (rank-1 updates are bound by memory traffic).
  const block = 128;
  const xt = new Float64Array(n * block);
  for (let r0 = 0; r0 < rows; r0 += block) {
    const m = Math.min(block, rows - r0);
    for (let r = 0; r < m; r++) for (let i = 0; i < n; i++) xt[i * m + r] = x[(r0 + r) * n + i]!;
    for (let i = 0; i < n; i++) {
      const ci = i * n;
      const ti = i * m;
      for (let j = i; j < n; j++) {
        const tj = j * m;
        let dot = 0;
        for (let r = 0; r < m; r++) dot += xt[ti + r]! * xt[tj + r]!;
        c[ci + j]! += dot;
      }
    }
  }
}

/**
 * Lower Cholesky factor L (row-major, zeros above the diagonal) of a symmetric positive definite n×n, or null
 * when a pivot is not above `minPivot` (singular, numerically singular or indefinite).
 */
export function choleskyLower(a: Float64Array, n: number, minPivot = 0): Float64Array | null {
  const lib = native();
  if (lib) {
    const l = a.slice();
    if (lib.dpotrf(n, l) !== 0) return null;
    for (let i = 0; i < n; i++) {
      if (!(l[i * n + i]! ** 2 > minPivot)) return null;
      for (let j = i + 1; j < n; j++) l[i * n + j] = 0;
    }
    return l;
  }
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let s = a[rj + j]!;
    for (let k = 0; k < j; k++) s -= l[rj + k]! ** 2;
    if (!(s > minPivot)) return null;
    const d = Math.sqrt(s);
    l[rj + j] = d;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let t = a[ri + j]!;
      for (let k = 0; k < j; k++) t -= l[ri + k]! * l[rj + k]!;
      l[ri + j] = t / d;
    }
  }
  return l;
}

/** Lᵀ S L for a lower-triangular L and a symmetric S (row-major n×n), using L's zeros. */
export function congruenceLower(s: Float64Array, l: Float64Array, n: number): Float64Array {
  const lib = native();
  if (lib) {
    const m = s.slice();
    lib.dtrmm(true, true, false, n, n, 1, l, m); // S·L
    lib.dtrmm(false, true, true, n, n, 1, l, m); // Lᵀ·(S·L)
    return m;
  }
  // T = S L: row i of T accumulates S[i][p] · (row p of L, whose entries j ≤ p are the only non-zeros).
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let p = 0; p < n; p++) {
      const sip = s[ri + p]!;
      if (sip === 0) continue;
      const rp = p * n;
      for (let j = 0; j <= p; j++) t[ri + j]! += sip * l[rp + j]!;
    }
  }
  // M = Lᵀ T: row i of M accumulates L[p][i] · (row p of T) over p ≥ i.
  const m = new Float64Array(n * n);
  for (let p = 0; p < n; p++) {
    const rp = p * n;
    for (let i = 0; i <= p; i++) {
      const lpi = l[rp + i]!;
      if (lpi === 0) continue;
      const ri = i * n;
      for (let j = 0; j < n; j++) m[ri + j]! += lpi * t[rp + j]!;
    }
  }
  return m;
}

/** Copy the upper triangle onto the lower one (row-major n×n), in place. */
export function mirrorUpper(c: Float64Array, n: number): Float64Array {
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) c[j * n + i] = c[i * n + j]!;
  return c;
}

/** (a + aᵀ)/2 in place: products like VᵀSV are symmetric only up to rounding. */
export function symmetrise(a: Float64Array, n: number): Float64Array {
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a[i * n + j]! + a[j * n + i]!);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return a;
}

// ---------------------------------------------------------------------------------------------------
// JS fallback: Householder reduction to tridiagonal form, then the implicit QL algorithm with Wilkinson
// shifts (the EISPACK tred2/tql2 pair). The working matrix is addressed column-major, m(r, c) = w[c·n + r],
// so that every inner loop walks contiguous memory; at the end eigenvector j is w[j·n … j·n + n).

function jsSymmetricEigen(w: Float64Array, n: number, d: Float64Array, wantVectors: boolean): SymmetricEigen {
  if (n === 0) return { values: d, vectors: wantVectors ? w : null };
  // The row-major lower triangle holds the matrix; read column-major that is the upper triangle, and the
  // reduction below reads the column-major lower triangle. Mirror so both views hold the full matrix.
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) w[j * n + i] = w[i * n + j]!;
  const e = new Float64Array(n);
  tridiagonalise(w, n, d, e, wantVectors);
  implicitQl(w, n, d, e, wantVectors);
  // Sort ascending (QL leaves them nearly sorted; a stable index sort keeps it simple).
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[x]! - d[y]!);
  const values = Float64Array.from(order, (i) => d[i]!);
  if (!wantVectors) return { values, vectors: null };
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => vectors.set(w.subarray(src * n, src * n + n), dst * n));
  return { values, vectors };
}

function tridiagonalise(w: Float64Array, n: number, d: Float64Array, e: Float64Array, accumulate: boolean): void {
  // m(r, c) = w[c*n + r]
  for (let j = 0; j < n; j++) d[j] = w[j * n + (n - 1)]!;
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]!);
    if (scale === 0) {
      e[i] = d[i - 1]!;
      for (let j = 0; j < i; j++) {
        d[j] = w[j * n + (i - 1)]!;
        w[j * n + i] = 0;
        w[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k]! /= scale;
        h += d[k]! * d[k]!;
      }
      let f = d[i - 1]!;
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        const col = j * n;
        f = d[j]!;
        w[i * n + j] = f;
        g = e[j]! + w[col + j]! * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const v = w[col + k]!;
          g += v * d[k]!;
          e[k]! += v * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j]! /= h;
        f += e[j]! * d[j]!;
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j]! -= hh * d[j]!;
      for (let j = 0; j < i; j++) {
        const col = j * n;
        f = d[j]!;
        g = e[j]!;
        for (let k = j; k <= i - 1; k++) w[col + k]! -= f * e[k]! + g * d[k]!;
        d[j] = w[col + (i - 1)]!;
        w[col + i] = 0;
      }
    }
    d[i] = h;
  }
  if (accumulate) {
    for (let i = 0; i < n - 1; i++) {
      const coli = i * n;
      const colNext = (i + 1) * n;
      w[coli + (n - 1)] = w[coli + i]!;
      w[coli + i] = 1;
      const h = d[i + 1]!;
      if (h !== 0) {
        for (let k = 0; k <= i; k++) d[k] = w[colNext + k]! / h;
        for (let j = 0; j <= i; j++) {
          const colj = j * n;
          let g = 0;
          for (let k = 0; k <= i; k++) g += w[colNext + k]! * w[colj + k]!;
          for (let k = 0; k <= i; k++) w[colj + k]! -= g * d[k]!;
        }
      }
      for (let k = 0; k <= i; k++) w[colNext + k] = 0;
    }
    for (let j = 0; j < n; j++) {
      d[j] = w[j * n + (n - 1)]!;
      w[j * n + (n - 1)] = 0;
    }
    w[(n - 1) * n + (n - 1)] = 1;
  } else {
    for (let j = 0; j < n; j++) d[j] = w[j * n + j]!;
    // Without accumulation the diagonal of the reduced matrix is read where the loop above would have
    // restored it; the Householder sweep leaves it in place on the diagonal.
  }
  e[0] = 0;
}

function implicitQl(w: Float64Array, n: number, d: Float64Array, e: Float64Array, accumulate: boolean): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]!) + Math.abs(e[l]!));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]!) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) throw new Error(`symmetricEigen: the QL iteration did not converge for eigenvalue ${l}`);
        let g = d[l]!;
        let p = (d[l + 1]! - g) / (2 * e[l]!);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l]! / (p + r);
        d[l + 1] = e[l]! * (p + r);
        const dl1 = d[l + 1]!;
        let h = g - d[l]!;
        for (let i = l + 2; i < n; i++) d[i]! -= h;
        f += h;
        p = d[m]!;
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1]!;
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i]!;
          h = c * p;
          r = Math.hypot(p, e[i]!);
          e[i + 1] = s * r;
          s = e[i]! / r;
          c = p / r;
          p = c * d[i]! - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]!);
          if (accumulate) {
            const a = i * n;
            const b = (i + 1) * n;
            for (let k = 0; k < n; k++) {
              const hk = w[b + k]!;
              const wk = w[a + k]!;
              w[b + k] = s * wk + c * hk;
              w[a + k] = c * wk - s * hk;
            }
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]!) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]!) > eps * tst1);
    }
    d[l] = d[l]! + f;
    e[l] = 0;
  }
}
