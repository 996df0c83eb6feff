import { tf } from '../backend/tf.js';

/**
 * Axial 2-D rotary position embedding for image tokens (the "RoPE-Axial" variant of Heo et al. 2024,
 * also the layout of FiT / Lumina-Next with two axes).
 *
 * Convention, for a head dimension d (d % 4 == 0) and a token at grid position (row, col):
 *  - channels [0, d/2) are rotated by the row index, channels [d/2, d) by the column index;
 *  - inside each half, consecutive pairs (2j, 2j+1) form one complex number x_{2j} + i·x_{2j+1}
 *    (the interleaved RoFormer / `torch.view_as_complex` form, not GPT-NeoX's rotate-half);
 *  - pair j of a half turns by angle pos·ω_j with ω_j = base^(−j/(d/4)), j = 0 … d/4−1, base 10000.
 * So q·k after rotation depends on the positions only through (row_q − row_k, col_q − col_k).
 * Tokens on an h×w grid are ordered row-major (token n sits at row ⌊n/w⌋, column n mod w), which is
 * the order DiT's patchify produces.
 */
export interface RopeTables {
  /** [N, d]: cos of each channel's angle (both members of a pair share it). */
  cos: tf.Tensor2D;
  /** [N, d]: sin of each channel's angle. */
  sin: tf.Tensor2D;
}

export function gridPositions(h: number, w: number): { rows: Float32Array; cols: Float32Array } {
  const rows = new Float32Array(h * w);
  const cols = new Float32Array(h * w);
  for (let r = 0; r < h; r++)
    for (let c = 0; c < w; c++) {
      rows[r * w + c] = r;
      cols[r * w + c] = c;
    }
  return { rows, cols };
}

/** cos/sin tables for tokens at (rows[n], cols[n]); positions may be fractional (resolution scaling). */
export function rope2dTables(rows: ArrayLike<number>, cols: ArrayLike<number>, headDim: number, base = 10000): RopeTables {
  if (headDim % 4 !== 0) throw new Error(`2-D RoPE needs a head dimension divisible by 4, got ${headDim}`);
  if (rows.length !== cols.length) throw new Error(`2-D RoPE: ${rows.length} row positions but ${cols.length} column positions`);
  const n = rows.length;
  const quarter = headDim / 4;
  const cos = new Float32Array(n * headDim);
  const sin = new Float32Array(n * headDim);
  for (let t = 0; t < n; t++) {
    for (let axis = 0; axis < 2; axis++) {
      const pos = axis === 0 ? rows[t]! : cols[t]!;
      for (let j = 0; j < quarter; j++) {
        // Angles in float64, rounded once: matches a float64 reference and keeps large positions exact.
        const angle = pos * Math.pow(base, -j / quarter);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const ch = t * headDim + axis * (headDim / 2) + 2 * j;
        cos[ch] = c;
        cos[ch + 1] = c;
        sin[ch] = s;
        sin[ch + 1] = s;
      }
    }
  }
  return { cos: tf.tensor2d(cos, [n, headDim]), sin: tf.tensor2d(sin, [n, headDim]) };
}

/**
 * The pair swap (a, b) → (−b, a) as a fixed [d, d] matrix: one small matmul (whose gradient is a
 * matmul too) instead of split + concat, which the wasm backend runs two orders of magnitude slower.
 */
function pairSwapMatrix(d: number): tf.Tensor2D {
  const m = new Float32Array(d * d);
  for (let j = 0; j < d; j += 2) {
    m[(j + 1) * d + j] = -1; // out[j] = −x[j+1]
    m[j * d + j + 1] = 1; // out[j+1] = x[j]
  }
  return tf.tensor2d(m, [d, d]);
}

/** Rotate x [..., N, d] by the tables: each pair (a, b) becomes (a·cos − b·sin, b·cos + a·sin). */
export function applyRope(x: tf.Tensor, tables: { cos: tf.Tensor; sin: tf.Tensor }): tf.Tensor {
  return tf.tidy(() => {
    const d = x.shape[x.shape.length - 1]!;
    const swapped = tf.matMul(x.reshape([-1, d]) as tf.Tensor2D, pairSwapMatrix(d)).reshape(x.shape);
    return x.mul(tables.cos).add(swapped.mul(tables.sin));
  });
}

/** Caches the tables per grid size so a training loop at a fixed resolution builds them once. */
export class Rope2d {
  private readonly cache = new Map<string, RopeTables>();

  constructor(readonly headDim: number, readonly base = 10000) {
    if (headDim % 4 !== 0) throw new Error(`2-D RoPE needs a head dimension divisible by 4, got ${headDim}`);
  }

  tables(h: number, w: number): RopeTables {
    const key = `${h}x${w}`;
    let t = this.cache.get(key);
    if (!t) {
      const { rows, cols } = gridPositions(h, w);
      const fresh = rope2dTables(rows, cols, this.headDim, this.base);
      t = { cos: tf.keep(fresh.cos), sin: tf.keep(fresh.sin) };
      this.cache.set(key, t);
    }
    return t;
  }

  dispose(): void {
    for (const t of this.cache.values()) {
      t.cos.dispose();
      t.sin.dispose();
    }
    this.cache.clear();
  }
}
