import { NumpyRandomState } from './numpy_random.js';
import { UsageError } from '../util/errors.js';

/**
 * Inception Score (Salimans et al. 2016) as torch-fidelity computes it (and, up to its seeded shuffle, the
 * original improved-gan code): class probabilities are the softmax over the 1008 outputs of the 2015-12-05
 * graph's classifier applied WITHOUT its bias ("logits_unbiased": the original reads softmax/logits/MatMul,
 * before the bias add), in float64; the samples are shuffled with numpy RandomState(seed).permutation(N)
 * (torch-fidelity's default, seed 2020; `shuffle: false` keeps the given order, as improved-gan does), cut
 * into `splits` contiguous chunks [⌊iN/s⌋, ⌊(i+1)N/s⌋), and per chunk IS = exp(mean_x KL(p(y|x) ‖ p̄(y)))
 * with p̄ the chunk's mean. Reported: mean and population std (ddof 0) over chunks. torchmetrics differs in
 * its unseeded shuffle and its ddof-1 std.
 */

export interface InceptionScoreOptions {
  /** Default 10. */
  splits?: number;
  /** Default true (torch-fidelity's samples_shuffle). */
  shuffle?: boolean;
  /** Default 2020 (torch-fidelity's rng_seed). */
  seed?: number;
}

export interface InceptionScoreResult {
  mean: number;
  std: number;
  /** The score of each split. */
  scores: Float64Array;
  splits: number;
  shuffled: boolean;
  seed: number;
}

/** logits: row-major [n × classes] (the Inception network's unbiased logits). */
export function inceptionScore(logits: Float32Array | Float64Array, n: number, classes: number, opts: InceptionScoreOptions = {}): InceptionScoreResult {
  const splits = opts.splits ?? 10;
  const shuffle = opts.shuffle ?? true;
  const seed = opts.seed ?? 2020;
  if (logits.length !== n * classes) throw new Error(`inceptionScore: ${logits.length} logits do not form ${n} rows of ${classes} classes`);
  if (!Number.isInteger(splits) || splits < 1) throw new UsageError(`inceptionScore: splits must be a positive integer, got ${splits}`);
  if (n < splits) throw new UsageError(`inceptionScore: ${n} samples cannot fill ${splits} splits`);
  const order = shuffle ? new NumpyRandomState(seed).permutation(n) : Int32Array.from({ length: n }, (_, i) => i);
  // log-softmax per row in float64.
  const logP = new Float64Array(n * classes);
  for (let r = 0; r < n; r++) {
    const src = order[r]! * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) {
      const v = logits[src + c]!;
      if (!Number.isFinite(v)) throw new Error(`inceptionScore: logit ${c} of sample ${order[r]} is ${v}`);
      if (v > max) max = v;
    }
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[src + c]! - max);
    const lse = max + Math.log(sum);
    for (let c = 0; c < classes; c++) logP[r * classes + c] = logits[src + c]! - lse;
  }
  const scores = new Float64Array(splits);
  const mean = new Float64Array(classes);
  for (let s = 0; s < splits; s++) {
    const lo = Math.floor((s * n) / splits);
    const hi = Math.floor(((s + 1) * n) / splits);
    mean.fill(0);
    for (let r = lo; r < hi; r++) for (let c = 0; c < classes; c++) mean[c]! += Math.exp(logP[r * classes + c]!);
    for (let c = 0; c < classes; c++) mean[c] = Math.log(mean[c]! / (hi - lo));
    let kl = 0;
    for (let r = lo; r < hi; r++) {
      for (let c = 0; c < classes; c++) {
        const lp = logP[r * classes + c]!;
        kl += Math.exp(lp) * (lp - mean[c]!);
      }
    }
    scores[s] = Math.exp(kl / (hi - lo));
  }
  let m = 0;
  for (const v of scores) m += v;
  m /= splits;
  let variance = 0;
  for (const v of scores) variance += (v - m) ** 2;
  return { mean: m, std: Math.sqrt(variance / splits), scores, splits, shuffled: shuffle, seed };
}
