import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { modelPosterior, predictX0FromEps } from './objectives.js';
import { DiffusionSchedule, shiftFlowTime, spacedTimesteps } from './schedule.js';

/**
 * Samplers: reverse-time updates that only see a model function x_t, t ↦ output. Each sample draws
 * its noise from its own stream (seed + i), so a sample is the same whatever else is in the batch
 * and a seed reproduces it exactly.
 */

/** The network (with its conditioning and guidance already bound): x [N, H, W, C], model time [N] → output. */
export type ModelFn = (x: tf.Tensor4D, t: tf.Tensor1D) => tf.Tensor4D;

/** Where a sampler's Gaussian draws come from: the initial x_T first, then one tensor per stochastic step. */
export interface NoiseSource {
  next(): tf.Tensor4D;
}

/** Per-sample Gaussian noise streams: sample i reads Rng(seeds[i]), one draw after another. */
export class NoiseStreams implements NoiseSource {
  private readonly rngs: Rng[];
  constructor(seeds: readonly number[], readonly shape: readonly [number, number, number]) {
    this.rngs = seeds.map((s) => new Rng(s));
  }
  get count(): number {
    return this.rngs.length;
  }
  next(): tf.Tensor4D {
    const per = this.shape[0] * this.shape[1] * this.shape[2];
    const data = new Float32Array(this.rngs.length * per);
    this.rngs.forEach((r, i) => r.fillNormal(data.subarray(i * per, (i + 1) * per)));
    return tf.tensor4d(data, [this.rngs.length, ...this.shape]);
  }
}

/**
 * Classifier-free guidance: `both` evaluates the model on [x; x] with the conditional inputs in the
 * first half and the null ones in the second; the first `guidedChannels` output channels become
 * uncond + s·(cond − uncond) and the rest (a learned variance) are the conditional half's. s = 1 is
 * the conditional model.
 */
export function classifierFreeGuidance(both: ModelFn, scale: number, guidedChannels?: number): ModelFn {
  return (x, t) =>
    tf.tidy(() => {
      const out = both(tf.concat([x, x], 0) as tf.Tensor4D, tf.concat([t, t], 0) as tf.Tensor1D);
      const [cond, uncond] = tf.split(out, 2, 0) as [tf.Tensor4D, tf.Tensor4D];
      const c = out.shape[3];
      const g = Math.min(guidedChannels ?? c, c);
      const guide = (a: tf.Tensor4D, b: tf.Tensor4D) => b.add(a.sub(b).mul(scale)) as tf.Tensor4D;
      if (g === c) return guide(cond, uncond);
      const [cg, crest] = tf.split(cond, [g, c - g], 3) as [tf.Tensor4D, tf.Tensor4D];
      const [ug] = tf.split(uncond, [g, c - g], 3) as [tf.Tensor4D, tf.Tensor4D];
      return tf.concat([guide(cg, ug), crest], 3) as tf.Tensor4D;
    });
}

export interface SamplerOptions {
  steps: number;
  /** Seed of sample i is seeds[i]; the initial noise is the first draw of that stream. */
  seeds: readonly number[];
  /** [H, W, C] of one sample. */
  shape: readonly [number, number, number];
  /** DDIM's η (0 = deterministic). */
  eta?: number;
  /** DDPM/DDIM: the model also outputs the variance interpolation v (learn_sigma). */
  learnSigma?: boolean;
  /** Euler: SD3 time shift of the sampling grid. */
  shift?: number;
  /** Flow models see t·timeScale (the same 0…1000 range as DDPM steps). */
  timeScale?: number;
  /** Replaces the seeded streams (tests feed recorded draws; the batch size is then the draws'). */
  noise?: NoiseSource;
  /** Called after every step with the step index (progress). */
  onStep?: (i: number, total: number) => void;
}

export interface Sampler {
  name: string;
  /** What the model must predict: ε (DDPM objective) or velocity (rectified flow). */
  prediction: 'eps' | 'velocity';
  describe: string;
  run(model: ModelFn, opts: SamplerOptions, schedule?: DiffusionSchedule): tf.Tensor4D;
}

function requireSchedule(name: string, s?: DiffusionSchedule): DiffusionSchedule {
  if (!s) throw new Error(`${name} sampler needs the diffusion schedule`);
  return s;
}

function timesTensor(value: number, n: number): tf.Tensor1D {
  return tf.fill([n], value, 'float32') as tf.Tensor1D;
}

/** Swap in the next x, disposing the old one. */
function advance(old: tf.Tensor4D, next: tf.Tensor4D): tf.Tensor4D {
  const kept = tf.keep(next);
  old.dispose();
  return kept;
}

/**
 * Ancestral sampling (improved-diffusion's p_sample_loop) on `steps` evenly respaced timesteps:
 * x_{t−1} = μ_θ(x_t, t) + σ_t·z, no noise at the last step, no clipping of x̂_0 (as DiT samples latents).
 */
export const ddpmSampler: Sampler = {
  name: 'ddpm',
  prediction: 'eps',
  describe: 'DDPM ancestral sampling (learned or fixed-small variance)',
  run(model, opts, schedule) {
    const base = requireSchedule('ddpm', schedule);
    const s = base.respace(spacedTimesteps(base.numTimesteps, opts.steps));
    const noise = opts.noise ?? new NoiseStreams(opts.seeds, opts.shape);
    let x = noise.next();
    const n = x.shape[0];
    for (let i = s.numTimesteps - 1; i >= 0; i--) {
      const t = new Array<number>(n).fill(i);
      const next = tf.tidy(() => {
        const out = model(x, timesTensor(s.timestepMap[i]!, n));
        const p = modelPosterior(s, out, x, t, opts.learnSigma ?? false);
        if (i === 0) return p.mean;
        return p.mean.add(tf.exp(p.logVariance.mul(0.5)).mul(noise.next())) as tf.Tensor4D;
      });
      x = advance(x, next);
      opts.onStep?.(s.numTimesteps - 1 - i, s.numTimesteps);
    }
    return x;
  },
};

/**
 * DDIM (Song et al.; improved-diffusion's ddim_sample) on respaced timesteps:
 * x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1 − ᾱ_{t−1} − σ²)·ε̂ + σ·z, σ = η·√((1 − ᾱ_{t−1})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1}).
 */
export const ddimSampler: Sampler = {
  name: 'ddim',
  prediction: 'eps',
  describe: 'DDIM with stochasticity η (0 = deterministic)',
  run(model, opts, schedule) {
    const base = requireSchedule('ddim', schedule);
    const s = base.respace(spacedTimesteps(base.numTimesteps, opts.steps));
    const eta = opts.eta ?? 0;
    const noise = opts.noise ?? new NoiseStreams(opts.seeds, opts.shape);
    const c = opts.shape[2];
    let x = noise.next();
    const n = x.shape[0];
    for (let i = s.numTimesteps - 1; i >= 0; i--) {
      const t = new Array<number>(n).fill(i);
      const ab = s.alphasCumprod[i]!;
      const abPrev = s.alphasCumprodPrev[i]!;
      const sigma = eta * Math.sqrt((1 - abPrev) / (1 - ab)) * Math.sqrt(1 - ab / abPrev);
      const next = tf.tidy(() => {
        const out = model(x, timesTensor(s.timestepMap[i]!, n));
        const eps = out.shape[3] === c ? out : (out.slice([0, 0, 0, 0], [-1, -1, -1, c]) as tf.Tensor4D);
        const x0 = predictX0FromEps(s, x, t, eps);
        const mean = x0.mul(Math.sqrt(abPrev)).add(eps.mul(Math.sqrt(Math.max(0, 1 - abPrev - sigma * sigma)))) as tf.Tensor4D;
        return i > 0 && sigma > 0 ? (mean.add(noise.next().mul(sigma)) as tf.Tensor4D) : mean;
      });
      x = advance(x, next);
      opts.onStep?.(s.numTimesteps - 1 - i, s.numTimesteps);
    }
    return x;
  },
};

/** The Euler sampler's time grid: `steps` + 1 points from 1 to 0, evenly spaced then shifted (SD3). */
export function flowTimeGrid(steps: number, shift = 1): Float64Array {
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`sampling steps must be a positive integer, got ${steps}`);
  return Float64Array.from({ length: steps + 1 }, (_, i) => shiftFlowTime(1 - i / steps, shift));
}

/** Euler integration of the rectified-flow ODE dx/dt = v(x, t) from t = 1 (noise) to t = 0. */
export const eulerSampler: Sampler = {
  name: 'euler',
  prediction: 'velocity',
  describe: 'Euler steps of the rectified-flow ODE (deterministic)',
  run(model, opts) {
    const grid = flowTimeGrid(opts.steps, opts.shift ?? 1);
    const scale = opts.timeScale ?? 1000;
    const noise = opts.noise ?? new NoiseStreams(opts.seeds, opts.shape);
    const c = opts.shape[2];
    let x = noise.next();
    const n = x.shape[0];
    for (let i = 0; i < opts.steps; i++) {
      const t = grid[i]!;
      const dt = grid[i + 1]! - t;
      const next = tf.tidy(() => {
        const out = model(x, timesTensor(t * scale, n));
        const v = out.shape[3] === c ? out : out.slice([0, 0, 0, 0], [-1, -1, -1, c]);
        return x.add(v.mul(dt)) as tf.Tensor4D;
      });
      x = advance(x, next);
      opts.onStep?.(i, opts.steps);
    }
    return x;
  },
};

const samplers = new Map<string, Sampler>([ddpmSampler, ddimSampler, eulerSampler].map((s) => [s.name, s]));

export function registerSampler(s: Sampler): void {
  samplers.set(s.name, s);
}

export function getSampler(name: string): Sampler | undefined {
  return samplers.get(name);
}

export function samplerNames(): string[] {
  return [...samplers.keys()];
}

/** Samplers that fit a model trained to predict `prediction`. */
export function samplersFor(prediction: Sampler['prediction']): string[] {
  return [...samplers.values()].filter((s) => s.prediction === prediction).map((s) => s.name);
}

