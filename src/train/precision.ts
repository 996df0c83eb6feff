import { tf } from '../backend/tf.js';

/**
 * Mixed-precision emulation. TF.js has no float16/bfloat16 tensor dtype (only float32 compute), so
 * 'bf16' and 'fp16' here mean: values are rounded to what that format can hold at the points where a
 * real mixed-precision run would store them (activations, weights cast for compute), while master
 * weights, optimizer state and gradient accumulation stay float32, as in Micikevicius et al. 2018.
 * The rounding is exact (round-to-nearest-even, the same results as torch's x.bfloat16().float() /
 * x.half().float()); the arithmetic between rounding points is still float32.
 *
 * tfjs has no bitcast, so rounding is done with float32 arithmetic instead of on the bit pattern:
 * Veltkamp splitting. With c = x·(2^s + 1), hi = c − (c − x) is x rounded to 24 − s significant bits,
 * round-to-nearest-even when the arithmetic itself rounds to nearest even (which float32 does, and
 * which the cpu backend reproduces: it computes in float64 and rounds each result to float32 once).
 * The scheme needs no exponent extraction; the regions where it cannot work are handled apart:
 * subnormal targets (fixed quantum), values so large that c would overflow, and ±Inf/NaN.
 * When written, checked against torch for all 2^23 float32 values of each of 13 binades (float32
 * arithmetic emulated in numpy), and the committed fixture matched bit for bit on both cpu and wasm.
 */

export type Precision = 'fp32' | 'bf16' | 'fp16';

export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16', 'fp16'];

export function isPrecision(x: unknown): x is Precision {
  return typeof x === 'string' && (PRECISIONS as readonly string[]).includes(x);
}

/** x rounded to `bits` significant bits, for normal float32 x whose x·(2^(24−bits)+1) does not overflow. */
function veltkamp(x: tf.Tensor, bits: number): tf.Tensor {
  const c = x.mul(2 ** (24 - bits) + 1);
  return c.sub(c.sub(x));
}

/**
 * x rounded to a fixed quantum 2^q for |x| < 2^(q+22): adding 1.5·2^(q+23) lands in a binade whose
 * float32 spacing is exactly 2^q, so the addition itself rounds (to nearest even); the subtraction is exact.
 */
function roundToQuantum(x: tf.Tensor, q: number): tf.Tensor {
  const magic = 1.5 * 2 ** (q + 23);
  return x.add(magic).sub(magic);
}

/** Keep ±0, ±Inf and NaN as they are; elsewhere use `rounded`, carrying x's sign onto a zero result. */
function withSpecials(x: tf.Tensor, rounded: tf.Tensor): tf.Tensor {
  const passThrough = tf.logicalOr(tf.logicalNot(tf.isFinite(x)), x.equal(0));
  return tf.where(passThrough, x, rounded);
}

function bf16Forward(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const a = x.abs();
    // bf16 keeps float32's exponent range: below 2^-126 its quantum is 2^-133 (7 stored mantissa bits).
    const subnormal = roundToQuantum(a, -133);
    // Veltkamp's c = 65537·a overflows above ~2^111: scale such values down by an exact power of two.
    const big = a.greaterEqual(2 ** 100);
    const scaled = tf.where(big, a.mul(2 ** -32), a);
    const normal = tf.where(big, veltkamp(scaled, 8).mul(2 ** 32), veltkamp(scaled, 8));
    const mag = tf.where(a.less(2 ** -126), subnormal, normal);
    return withSpecials(x, tf.where(x.less(0), mag.neg(), mag));
  });
}

/** Largest finite half is 65504; anything that rounds beyond it (|x| ≥ 65520) becomes ±Inf. */
const FP16_MAX = 65504;

function fp16Forward(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const a = x.abs();
    // fp16 subnormals: below 2^-14 the quantum is 2^-24.
    const subnormal = roundToQuantum(a, -24);
    const inRange = a.less(65536);
    const normal = veltkamp(tf.where(inRange, a, tf.zerosLike(a)), 11);
    let mag = tf.where(a.less(2 ** -14), subnormal, normal);
    mag = tf.where(tf.logicalOr(tf.logicalNot(inRange), mag.greater(FP16_MAX)), tf.fill(a.shape, Infinity), mag);
    return withSpecials(x, tf.where(x.less(0), mag.neg(), mag));
  });
}

function straightThrough(forward: (x: tf.Tensor) => tf.Tensor): (x: tf.Tensor) => tf.Tensor {
  // Rounding has zero derivative almost everywhere; like a real cast in autograd, pass dy through.
  const op = tf.customGrad((x, save) => {
    void save;
    return { value: forward(x as tf.Tensor), gradFunc: (dy: tf.Tensor) => dy };
  });
  return (x: tf.Tensor) => op(x);
}

/** Round float32 values to the nearest bfloat16 (ties to even); differentiable with identity gradient. */
export const roundToBf16 = straightThrough(bf16Forward);

/** Round float32 values to the nearest IEEE half (ties to even, subnormals, ±Inf past 65504); identity gradient. */
export const roundToFp16 = straightThrough(fp16Forward);

/** The cast a model applies at a storage point under `precision` (identity for fp32). */
export function castTo(precision: Precision, x: tf.Tensor): tf.Tensor {
  switch (precision) {
    case 'fp32':
      return x;
    case 'bf16':
      return roundToBf16(x);
    case 'fp16':
      return roundToFp16(x);
  }
}

/** Whether training under `precision` needs dynamic loss scaling (fp16's range is too narrow for small gradients). */
export function needsLossScaling(precision: Precision): boolean {
  return precision === 'fp16';
}
