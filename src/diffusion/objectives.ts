import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { DiffusionSchedule, shiftFlowTime } from './schedule.js';

/**
 * Training objectives, model-agnostic: each takes the network's output for (x_t, t) and returns a
 * per-sample loss. Images are NHWC; "mean_flat" means the mean over every axis but the batch.
 */

/** A float64 table gathered at host-side timestep indices → [N, 1, 1, 1] float32. */
export function extract(table: Float64Array, t: ArrayLike<number>): tf.Tensor4D {
  return tf.tensor4d(Float32Array.from(t as ArrayLike<number>, (i) => table[i]!), [t.length, 1, 1, 1]);
}

/** Identity forward, zero gradient backward (torch's `.detach()` inside a differentiated graph). */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  return detach(x) as T;
}
const detach = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  return { value: x.clone(), gradFunc: (dy: tf.Tensor | tf.Tensor[]) => tf.zerosLike(dy as tf.Tensor) };
});

/** Mean over every axis but the first: [N, …] → [N]. */
export function meanFlat(x: tf.Tensor): tf.Tensor1D {
  return tf.tidy(() => x.reshape([x.shape[0]!, -1]).mean(1) as tf.Tensor1D);
}

/** Uniform integer timesteps in 0…T−1, one per sample. */
export function sampleTimesteps(n: number, numTimesteps: number, rng: Rng): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(numTimesteps));
}

/** q(x_t | x_0): √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε. */
export function qSample(s: DiffusionSchedule, x0: tf.Tensor4D, t: ArrayLike<number>, noise: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const ab = s.alphasCumprod;
    const a = extract(ab.map(Math.sqrt), t);
    const b = extract(ab.map((v) => Math.sqrt(1 - v)), t);
    return x0.mul(a).add(noise.mul(b)) as tf.Tensor4D;
  });
}

/** x̂_0 = √(1/ᾱ)·x_t − √(1/ᾱ − 1)·ε̂. */
export function predictX0FromEps(s: DiffusionSchedule, xt: tf.Tensor4D, t: ArrayLike<number>, eps: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const ab = s.alphasCumprod;
    return xt.mul(extract(ab.map((v) => Math.sqrt(1 / v)), t)).sub(eps.mul(extract(ab.map((v) => Math.sqrt(1 / v - 1)), t))) as tf.Tensor4D;
  });
}

/** Mean of the posterior q(x_{t−1} | x_t, x_0). */
export function posteriorMean(s: DiffusionSchedule, x0: tf.Tensor4D, xt: tf.Tensor4D, t: ArrayLike<number>): tf.Tensor4D {
  return tf.tidy(() => x0.mul(extract(s.posteriorMeanCoef1, t)).add(xt.mul(extract(s.posteriorMeanCoef2, t))) as tf.Tensor4D);
}

export interface ModelPosterior {
  mean: tf.Tensor4D;
  logVariance: tf.Tensor4D;
  predX0: tf.Tensor4D;
  eps: tf.Tensor4D;
}

/**
 * p(x_{t−1} | x_t) from the network output (improved-diffusion's p_mean_variance). With a learned
 * σ the output is [ε̂ | v] and log σ² = f·log β_t + (1 − f)·log β̃_t with f = (v + 1)/2
 * (LEARNED_RANGE); otherwise the variance is the fixed β̃_t (FIXED_SMALL, as DiT without learn_sigma).
 */
export function modelPosterior(s: DiffusionSchedule, output: tf.Tensor4D, xt: tf.Tensor4D, t: ArrayLike<number>, learnSigma: boolean): ModelPosterior {
  return tf.tidy(() => {
    const c = xt.shape[3];
    let eps: tf.Tensor4D;
    let logVariance: tf.Tensor4D;
    if (learnSigma) {
      if (output.shape[3] !== 2 * c) throw new Error(`learned σ needs ${2 * c} output channels (ε | v), got ${output.shape[3]}`);
      const [e, v] = tf.split(output, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
      eps = e;
      const minLog = extract(s.posteriorLogVarianceClipped, t);
      const maxLog = extract(s.betas.map(Math.log), t);
      const frac = v.add(1).div(2);
      logVariance = frac.mul(maxLog).add(tf.scalar(1).sub(frac).mul(minLog)) as tf.Tensor4D;
    } else {
      eps = output.shape[3] === c ? output : (output.slice([0, 0, 0, 0], [-1, -1, -1, c]) as tf.Tensor4D);
      logVariance = extract(s.posteriorLogVarianceClipped, t).tile([1, xt.shape[1], xt.shape[2], c]) as tf.Tensor4D;
    }
    const predX0 = predictX0FromEps(s, xt, t, eps);
    return { mean: posteriorMean(s, predX0, xt, t), logVariance, predX0, eps };
  });
}

/** KL(N(m1, e^{lv1}) ‖ N(m2, e^{lv2})) elementwise, in nats. */
export function normalKl(m1: tf.Tensor, lv1: tf.Tensor, m2: tf.Tensor, lv2: tf.Tensor): tf.Tensor {
  return tf.tidy(() => lv2.sub(lv1).add(tf.exp(lv1.sub(lv2))).add(m1.sub(m2).square().mul(tf.exp(lv2.neg()))).sub(1).mul(0.5));
}

/** improved-diffusion's tanh approximation of the standard normal CDF. */
export function approxStandardNormalCdf(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.tanh(x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI))).add(1).mul(0.5));
}

/**
 * log-likelihood of 8-bit data x ∈ [−1, 1] under a Gaussian discretised into 256 bins of width 2/255
 * (the decoder term L_0); the outermost bins take the tails.
 */
export function discretizedGaussianLogLikelihood(x: tf.Tensor, means: tf.Tensor, logScales: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const centered = x.sub(means);
    const invStd = tf.exp(logScales.neg());
    const cdfPlus = approxStandardNormalCdf(invStd.mul(centered.add(1 / 255)));
    const cdfMin = approxStandardNormalCdf(invStd.mul(centered.sub(1 / 255)));
    const logCdfPlus = tf.log(tf.maximum(cdfPlus, 1e-12));
    const logOneMinusCdfMin = tf.log(tf.maximum(tf.scalar(1).sub(cdfMin), 1e-12));
    const logDelta = tf.log(tf.maximum(cdfPlus.sub(cdfMin), 1e-12));
    return tf.where(x.less(-0.999), logCdfPlus, tf.where(x.greater(0.999), logOneMinusCdfMin, logDelta));
  });
}

export interface DdpmLossInputs {
  x0: tf.Tensor4D;
  xt: tf.Tensor4D;
  noise: tf.Tensor4D;
  t: ArrayLike<number>;
}

export interface DdpmLossOptions {
  learnSigma: boolean;
  /** Min-SNR-γ (Hang et al.): the ε-MSE of sample i is weighted by min(SNR_t, γ)/SNR_t. */
  minSnrGamma?: number | null;
}

export interface PerSampleLoss {
  /** [N]: what is averaged into the training loss. */
  loss: tf.Tensor1D;
  /** [N]: the (weighted) regression term alone. */
  mse: tf.Tensor1D;
  /** [N]: the variational-bound term in bits per dimension (zeros without a learned σ). */
  vb: tf.Tensor1D;
}

/** Per-sample min-SNR-γ weights for ε-prediction. */
export function minSnrEpsWeights(s: DiffusionSchedule, t: ArrayLike<number>, gamma: number): Float32Array {
  return Float32Array.from(t as ArrayLike<number>, (i) => {
    const snr = s.snr(i);
    return Math.min(snr, gamma) / snr;
  });
}

/**
 * DiT's training loss (improved-diffusion `training_losses`, LossType.MSE): mean_flat((ε − ε̂)²), plus
 * with a learned σ the variational-bound term L_vb whose mean comes from a stop-gradient ε̂, so the
 * bound trains the variance alone: KL(q(x_{t−1}|x_t,x_0) ‖ p) in bits for t > 0, the discretised
 * decoder NLL for t = 0.
 */
export function ddpmLoss(s: DiffusionSchedule, output: tf.Tensor4D, inp: DdpmLossInputs, opts: DdpmLossOptions): PerSampleLoss {
  return tf.tidy(() => {
    const c = inp.x0.shape[3];
    const eps = opts.learnSigma ? (output.slice([0, 0, 0, 0], [-1, -1, -1, c]) as tf.Tensor4D) : output;
    let mse = meanFlat(inp.noise.sub(eps).square());
    if (opts.minSnrGamma) mse = mse.mul(tf.tensor1d(minSnrEpsWeights(s, inp.t, opts.minSnrGamma)));
    let vb: tf.Tensor1D = tf.zerosLike(mse);
    if (opts.learnSigma) {
      const v = output.slice([0, 0, 0, c], [-1, -1, -1, c]) as tf.Tensor4D;
      const frozen = tf.concat([stopGradient(eps), v], 3) as tf.Tensor4D;
      vb = vbTerm(s, frozen, inp);
    }
    return { loss: mse.add(vb) as tf.Tensor1D, mse, vb };
  });
}

/** improved-diffusion's `_vb_terms_bpd` with clip_denoised=False: [N] bits per dimension. */
export function vbTerm(s: DiffusionSchedule, output: tf.Tensor4D, inp: DdpmLossInputs): tf.Tensor1D {
  return tf.tidy(() => {
    const trueMean = posteriorMean(s, inp.x0, inp.xt, inp.t);
    const trueLogVar = extract(s.posteriorLogVarianceClipped, inp.t);
    const p = modelPosterior(s, output, inp.xt, inp.t, true);
    const kl = meanFlat(normalKl(trueMean, trueLogVar, p.mean, p.logVariance)).div(Math.LN2);
    const nll = meanFlat(discretizedGaussianLogLikelihood(inp.x0, p.mean, p.logVariance.mul(0.5)).neg()).div(Math.LN2);
    const first = tf.tensor1d(Int32Array.from(inp.t as ArrayLike<number>, (i) => (i === 0 ? 1 : 0)), 'int32').equal(1);
    return tf.where(first, nll, kl) as tf.Tensor1D;
  });
}

// ----------------------------------------------------------------------------- rectified flow

export interface FlowTimeSampling {
  /** 'uniform' on (0, 1), or 'logit_normal': sigmoid(N(mean, std²)) (SD3's default). */
  distribution: 'uniform' | 'logit_normal';
  mean: number;
  std: number;
  /** SD3 time shift s (1 = none). */
  shift: number;
}

export const DEFAULT_FLOW_TIMES: FlowTimeSampling = { distribution: 'logit_normal', mean: 0, std: 1, shift: 1 };

/** One training time per sample in (0, 1), t = 1 being pure noise. */
export function sampleFlowTimes(n: number, rng: Rng, opts: FlowTimeSampling = DEFAULT_FLOW_TIMES): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let t: number;
    if (opts.distribution === 'uniform') {
      t = rng.uniform();
      // (0, 1) open: t = 0 has no noise to predict from; the next draw is as uniform as this one.
      while (t === 0) t = rng.uniform();
    } else t = 1 / (1 + Math.exp(-(opts.mean + opts.std * rng.normal())));
    out[i] = shiftFlowTime(t, opts.shift);
  }
  return out;
}

/** x_t = (1 − t)·x_0 + t·ε and the velocity target v = ε − x_0 (rectified flow). */
export function flowInterpolate(x0: tf.Tensor4D, noise: tf.Tensor4D, t: ArrayLike<number>): { xt: tf.Tensor4D; target: tf.Tensor4D } {
  return tf.tidy(() => {
    const tt = tf.tensor4d(Float32Array.from(t as ArrayLike<number>), [t.length, 1, 1, 1]);
    return { xt: x0.mul(tf.scalar(1).sub(tt)).add(noise.mul(tt)) as tf.Tensor4D, target: noise.sub(x0) as tf.Tensor4D };
  });
}

/**
 * Min-SNR-γ for velocity: ‖v̂ − v‖² = ‖x̂_0 − x_0‖²/t², and min-SNR weights the x_0 error by
 * min(SNR, γ) with SNR = ((1 − t)/t)², so the velocity error gets min(SNR, γ)·t².
 */
export function minSnrFlowWeights(t: ArrayLike<number>, gamma: number): Float32Array {
  return Float32Array.from(t as ArrayLike<number>, (ti) => Math.min(((1 - ti) / ti) ** 2, gamma) * ti * ti);
}

/** mean_flat((v̂ − v)²) per sample, optionally min-SNR weighted; extra output channels are ignored. */
export function flowLoss(output: tf.Tensor4D, target: tf.Tensor4D, t: ArrayLike<number>, opts: { minSnrGamma?: number | null } = {}): PerSampleLoss {
  return tf.tidy(() => {
    const c = target.shape[3];
    const v = output.shape[3] === c ? output : (output.slice([0, 0, 0, 0], [-1, -1, -1, c]) as tf.Tensor4D);
    let mse = meanFlat(v.sub(target).square());
    if (opts.minSnrGamma) mse = mse.mul(tf.tensor1d(minSnrFlowWeights(t, opts.minSnrGamma)));
    return { loss: mse, mse, vb: tf.zerosLike(mse) as tf.Tensor1D };
  });
}
