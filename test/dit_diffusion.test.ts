import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import {
  classifierFreeGuidance,
  ddimSampler,
  ddpmLoss,
  ddpmSampler,
  DiffusionSchedule,
  eulerSampler,
  flowInterpolate,
  flowLoss,
  linearBetas,
  minSnrEpsWeights,
  minSnrFlowWeights,
  type ModelFn,
  type NoiseSource,
  qSample,
  sampleFlowTimes,
  type Sampler,
  shiftFlowTime,
  spacedTimesteps,
  stopGradient,
} from '../src/diffusion/index.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import type { HostTensor } from '../src/nn/module.js';
import { Rng } from '../src/util/rng.js';
import { expectClose } from './nn_fixture_util.js';

// Written by scripts/fixtures/dit_diffusion_ref.py: improved-diffusion's formulas in numpy float64.
const DIR = fileURLToPath(new URL('./fixtures/dit_diffusion/', import.meta.url));
const ref = loadSafetensors(`${DIR}reference.safetensors`);
const meta = JSON.parse(readFileSync(`${DIR}meta.json`, 'utf8')) as {
  spaced: Record<string, number[]>;
  gamma: number;
  toy: { mu: number; s: number; shape: [number, number, number, number] };
  timesteps10: number[];
  float64: Record<string, number[]>;
};

function get(name: string): HostTensor {
  const t = ref.get(name);
  if (!t) throw new Error(`fixture has no '${name}'`);
  return t;
}
const tensor = (name: string) => {
  const h = get(name);
  return tf.tensor(Float32Array.from(h.data), h.shape, 'float32');
};
const ints = (name: string) => Array.from(get(name).data);

function expectArrayClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (err > rtol * Math.abs(want[i]!) + 1e-300) throw new Error(`${what}[${i}]: got ${got[i]}, want ${want[i]} (rel ${err / Math.abs(want[i]!)})`);
  }
}

describe('diffusion schedule (DiT linear betas, improved-diffusion tables)', () => {
  const s = DiffusionSchedule.linear(1000);
  const probe = ints('schedule.probe');
  it('betas, ᾱ and posterior tables match numpy float64 to 1e-12', () => {
    const tables: [string, Float64Array][] = [
      ['betas', s.betas],
      ['alphas_cumprod', s.alphasCumprod],
      ['posterior_variance', s.posteriorVariance],
      ['posterior_log_variance_clipped', s.posteriorLogVarianceClipped],
      ['posterior_mean_coef1', s.posteriorMeanCoef1],
      ['posterior_mean_coef2', s.posteriorMeanCoef2],
    ];
    for (const [name, table] of tables) {
      expectArrayClose(probe.map((i) => table[i]!), meta.float64[`schedule.${name}`]!, 1e-12, name);
    }
    expectArrayClose(linearBetas(50), meta.float64['betas50']!, 1e-14, 'betas for T = 50 (scaled by 1000/T)');
  });

  it('spaced timesteps follow space_timesteps (Python rounding), respacing keeps ᾱ at the kept steps', () => {
    for (const [count, want] of Object.entries(meta.spaced)) expect(spacedTimesteps(1000, Number(count)), `count ${count}`).toEqual(want);
    const r = s.respace(spacedTimesteps(1000, 25));
    expectArrayClose(r.betas, meta.float64['respaced25.betas']!, 1e-10, 'respaced betas');
    expectArrayClose(r.alphasCumprod, meta.float64['respaced25.alphas_cumprod']!, 1e-10, 'respaced ᾱ');
    expect(Array.from(r.timestepMap)).toEqual(meta.spaced['25']);
    expect(() => spacedTimesteps(1000, 0)).toThrow(/sampling steps/);
  });
});

describe('objectives', () => {
  const s = DiffusionSchedule.linear(1000);
  const t = ints('loss.t');
  it('q_sample and the DiT loss (ε-MSE + vlb with learned range) match improved-diffusion', () => {
    const x0 = tensor('loss.x0') as tf.Tensor4D;
    const noise = tensor('loss.noise') as tf.Tensor4D;
    const out = tensor('loss.output') as tf.Tensor4D;
    const xt = qSample(s, x0, t, noise);
    expectClose(xt, get('loss.xt'), 'x_t', 1e-6, 1e-5);
    const l = ddpmLoss(s, out, { x0, xt, noise, t }, { learnSigma: true });
    expectClose(l.mse, get('loss.mse'), 'mse', 1e-6, 1e-5);
    // The t = 0 entry is the discretised decoder NLL, the others the KL in bits. At t = 0 the bin
    // (±1/255) spans ~0.3σ, and float32 CDF differences carry ~1e-3 relative error; the KLs are tight.
    const vb = get('loss.vb');
    expectClose(l.vb.slice(1), { shape: [4], data: vb.data.subarray(1) }, 'vb (KL, t > 0)', 1e-5, 1e-4);
    expectClose(l.vb.slice(0, 1), { shape: [1], data: vb.data.subarray(0, 1) }, 'vb (decoder NLL, t = 0)', 1e-5, 2e-3);
    const fixed = ddpmLoss(s, out.slice([0, 0, 0, 0], [-1, -1, -1, 3]) as tf.Tensor4D, { x0, xt, noise, t }, { learnSigma: false });
    expectClose(fixed.loss, get('loss.mse_fixed'), 'fixed-variance loss', 1e-6, 1e-5);
    expect(Array.from(fixed.vb.dataSync())).toEqual([0, 0, 0, 0, 0]);
  });

  it('the vlb term trains the variance only: no gradient reaches the ε channels through it', () => {
    const x0 = tensor('loss.x0') as tf.Tensor4D;
    const noise = tensor('loss.noise') as tf.Tensor4D;
    const out = tf.variable(tensor('loss.output') as tf.Tensor4D);
    const xt = qSample(s, x0, t, noise);
    const g = tf.variableGrads(() => ddpmLoss(s, out, { x0, xt, noise, t }, { learnSigma: true }).vb.sum() as tf.Scalar, [out]);
    const grad = g.grads[out.name]!;
    const [eps, v] = tf.split(grad, 2, 3);
    expect(eps!.abs().max().dataSync()[0]).toBe(0);
    expect(v!.abs().max().dataSync()[0]).toBeGreaterThan(0);
    expect(Array.from(stopGradient(tf.tensor1d([1, 2])).dataSync())).toEqual([1, 2]);
  });

  it('min-SNR-γ weights for ε and for velocity', () => {
    expectClose(tf.tensor1d(minSnrEpsWeights(s, t, meta.gamma)), get('loss.min_snr_weights'), 'ε weights', 1e-7, 1e-5);
    expectClose(tf.tensor1d(minSnrFlowWeights(get('flow.t').data, meta.gamma)), get('flow.min_snr_weights'), 'flow weights', 1e-7, 1e-5);
  });

  it('rectified flow: x_t, velocity target, loss and SD3 shift', () => {
    const x0 = tensor('loss.x0') as tf.Tensor4D;
    const noise = tensor('loss.noise') as tf.Tensor4D;
    const ft = get('flow.t').data;
    const f = flowInterpolate(x0, noise, ft);
    expectClose(f.xt, get('flow.xt'), 'flow x_t', 1e-6, 1e-5);
    expectClose(f.target, get('flow.target'), 'flow target', 1e-6, 1e-5);
    const out = tensor('loss.output') as tf.Tensor4D;
    // Extra (variance) channels are ignored by the flow loss.
    expectClose(flowLoss(out, f.target, ft).loss, get('flow.mse'), 'flow loss', 1e-6, 1e-5);
    const u = Array.from({ length: 11 }, (_, i) => i / 10);
    expectClose(tf.tensor1d(u.map((x) => shiftFlowTime(x, 3))), get('flow.shift3'), 'shift 3', 1e-7, 1e-6);
  });

  it('flow training times: uniform and logit-normal draws have the right moments and are seed-determined', () => {
    const n = 20000;
    const uni = sampleFlowTimes(n, new Rng(3), { distribution: 'uniform', mean: 0, std: 1, shift: 1 });
    const mean = uni.reduce((a, b) => a + b, 0) / n;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(Math.min(...uni)).toBeGreaterThan(0);
    const ln = sampleFlowTimes(n, new Rng(3), { distribution: 'logit_normal', mean: 0, std: 1, shift: 1 });
    const logits = Array.from(ln, (x) => Math.log(x / (1 - x)));
    const lm = logits.reduce((a, b) => a + b, 0) / n;
    const lv = logits.reduce((a, b) => a + (b - lm) ** 2, 0) / n;
    expect(Math.abs(lm)).toBeLessThan(0.03);
    expect(Math.abs(Math.sqrt(lv) - 1)).toBeLessThan(0.03);
    expect(Array.from(sampleFlowTimes(5, new Rng(9)))).toEqual(Array.from(sampleFlowTimes(5, new Rng(9))));
    // Shift 3 moves the median from 0.5 to 0.75.
    const shifted = Array.from(sampleFlowTimes(n, new Rng(4), { distribution: 'logit_normal', mean: 0, std: 1, shift: 3 })).sort((a, b) => a - b);
    expect(Math.abs(shifted[n / 2]! - 0.75)).toBeLessThan(0.02);
  });
});

/** The toy problem: x0 ~ N(μ, s²) per element, where the optimal ε and velocity are closed-form. */
const { mu, s: sd } = meta.toy;
function toyEps(schedule: DiffusionSchedule, learnSigma: boolean, vConst = 0): ModelFn {
  return (x, t) =>
    tf.tidy(() => {
      const step = t.dataSync()[0]!;
      const ab = 1 - (1 - schedule.alphasCumprod[step]!);
      const eps = x.sub(Math.sqrt(ab) * mu).mul(Math.sqrt(1 - ab) / (ab * sd * sd + 1 - ab)) as tf.Tensor4D;
      return learnSigma ? (tf.concat([eps, tf.fill(eps.shape, vConst)], 3) as tf.Tensor4D) : eps;
    });
}
const toyVelocity: ModelFn = (x, t) =>
  tf.tidy(() => {
    const u = t.dataSync()[0]! / 1000;
    const v = (1 - u) ** 2 * sd * sd + u * u;
    const centred = x.sub((1 - u) * mu);
    const ex0 = centred.mul(((1 - u) * sd * sd) / v).add(mu);
    return centred.mul(u / v).sub(ex0) as tf.Tensor4D;
  });

/** The fixture's recorded draws, in order. */
function recorded(name: string): NoiseSource {
  const all = get(name);
  const [k, ...shape] = all.shape as [number, number, number, number, number];
  const per = shape.reduce((a, b) => a * b, 1);
  let i = 0;
  return {
    next() {
      if (i >= k) throw new Error('sampler drew more noise than the reference');
      const t = tf.tensor4d(Float32Array.from(all.data.subarray(i * per, (i + 1) * per)), shape);
      i++;
      return t;
    },
  };
}

describe('samplers on a Gaussian toy problem with the analytic optimal model', () => {
  const base = DiffusionSchedule.linear(1000);
  const shape = meta.toy.shape.slice(1) as [number, number, number];
  // The original step the model sees for respaced index i.
  const timesteps = meta.timesteps10;
  const onSteps = (m: (s: DiffusionSchedule) => ModelFn): ModelFn => m(base);
  const run = (sampler: Sampler, model: ModelFn, extra: object = {}) =>
    sampler.run(model, { steps: 10, seeds: [0, 1, 2], shape, noise: recorded('toy.draws10'), ...extra }, base);

  it('DDPM ancestral (fixed and learned variance) matches the reference update rule step for step', () => {
    expect(spacedTimesteps(1000, 10)).toEqual(timesteps);
    expectClose(run(ddpmSampler, onSteps((s) => toyEps(s, false))), get('toy.ddpm10'), 'ddpm', 1e-5, 1e-4);
    expectClose(run(ddpmSampler, onSteps((s) => toyEps(s, true, 0.3)), { learnSigma: true }), get('toy.ddpm10_learned'), 'ddpm learned σ', 1e-5, 1e-4);
  });

  it('DDIM η = 0 and η = 0.5, Euler with and without shift match the reference', () => {
    expectClose(run(ddimSampler, toyEps(base, false)), get('toy.ddim10'), 'ddim', 1e-5, 1e-4);
    expectClose(run(ddimSampler, toyEps(base, false), { eta: 0.5 }), get('toy.ddim10_eta05'), 'ddim η 0.5', 1e-5, 1e-4);
    expectClose(run(eulerSampler, toyVelocity), get('toy.euler10'), 'euler', 1e-5, 1e-4);
    expectClose(run(eulerSampler, toyVelocity, { shift: 3 }), get('toy.euler10_shift3'), 'euler shift 3', 1e-5, 1e-4);
  });

  it('point-mass data: every sampler lands exactly on the point', () => {
    const point = (x: tf.Tensor4D, t: tf.Tensor1D, flow: boolean) =>
      tf.tidy(() => {
        const step = t.dataSync()[0]!;
        if (flow) return x.sub(mu).div(step / 1000) as tf.Tensor4D;
        const ab = base.alphasCumprod[step]!;
        return x.sub(Math.sqrt(ab) * mu).div(Math.sqrt(1 - ab)) as tf.Tensor4D;
      });
    for (const [sampler, flow] of [[ddpmSampler, false], [ddimSampler, false], [eulerSampler, true]] as const) {
      const x = sampler.run((x, t) => point(x, t, flow), { steps: 7, seeds: [5, 6], shape: [3, 3, 2] }, base);
      expect(x.sub(mu).abs().max().dataSync()[0], sampler.name).toBeLessThan(2e-4);
    }
  });

  it('Gaussian data: many-step DDIM and Euler samples have the data mean and spread', () => {
    const seeds = Array.from({ length: 400 }, (_, i) => i);
    for (const [sampler, model] of [[ddimSampler, toyEps(base, false)], [eulerSampler, toyVelocity]] as const) {
      const x = sampler.run(model, { steps: 100, seeds, shape: [1, 4, 1] }, base);
      const { mean, variance } = tf.moments(x);
      expect(Math.abs(mean.dataSync()[0]! - mu), `${sampler.name} mean`).toBeLessThan(0.05);
      expect(Math.abs(Math.sqrt(variance.dataSync()[0]!) - sd), `${sampler.name} std`).toBeLessThan(0.04);
    }
  });

  it('a seed reproduces a sample exactly, whatever else is in the batch', () => {
    const a = ddpmSampler.run(toyEps(base, false), { steps: 5, seeds: [11, 12], shape: [2, 2, 1] }, base);
    const b = ddpmSampler.run(toyEps(base, false), { steps: 5, seeds: [99, 12], shape: [2, 2, 1] }, base);
    expect(Array.from(a.slice([1], [1]).dataSync())).toEqual(Array.from(b.slice([1], [1]).dataSync()));
    expect(Array.from(a.slice([0], [1]).dataSync())).not.toEqual(Array.from(b.slice([0], [1]).dataSync()));
  });
});

describe('classifier-free guidance', () => {
  // Conditional half predicts x + 1 (and variance channel 7), unconditional x − 1 (variance −7).
  const both: ModelFn = (x, t) =>
    tf.tidy(() => {
      const n = x.shape[0] / 2;
      const sign = tf.concat([tf.ones([n, 1, 1, 1]), tf.ones([n, 1, 1, 1]).neg()], 0);
      return tf.concat([x.add(sign), sign.mul(7).tile([1, x.shape[1], x.shape[2], 1]).add(t.reshape([-1, 1, 1, 1]).mul(0))], 3) as tf.Tensor4D;
    });
  const x = tf.tensor4d([0.5, -2], [2, 1, 1, 1]);
  const t = tf.tensor1d([10, 10]);
  it('scale 1 is the conditional model; scale s gives uncond + s·(cond − uncond) on the guided channels only', () => {
    expect(Array.from(classifierFreeGuidance(both, 1, 1)(x, t).dataSync())).toEqual([1.5, 7, -1, 7]);
    expect(Array.from(classifierFreeGuidance(both, 4, 1)(x, t).dataSync())).toEqual([-0.5 + 4 * 2, 7, -3 + 4 * 2, 7]);
    // Guiding every channel also extrapolates the second one.
    expect(Array.from(classifierFreeGuidance(both, 2)(x, t).dataSync())).toEqual([0.5 - 1 + 4, -7 + 28, -3 + 4, -7 + 28]);
  });
});
