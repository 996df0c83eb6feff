/**
 * Deterministic pseudo-random values that the Python fixture scripts compute identically
 * (scripts/fixtures/hash_values.py): element i of a stream named `name` is
 * fmix32(fnv1a(name) ^ (i + 1)·0x9E3779B1) / 2³², a uniform in [0, 1). Tests regenerate large inputs and
 * weights from a name instead of committing them.
 */

export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** n uniforms in [0, 1) (float64). */
export function hashUniform(name: string, n: number): Float64Array {
  const seed = fnv1a(name);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = fmix32((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0) / 4294967296;
  return out;
}

/** n uniforms in [lo, hi), rounded to float32. */
export function hashUniformF32(name: string, n: number, lo = 0, hi = 1): Float32Array {
  const u = hashUniform(name, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * u[i]!;
  return out;
}
