import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { AutoencoderKL, DiagonalGaussianDistribution } from '../src/models/vae/autoencoder_kl.js';
import { VaeAttention } from '../src/models/vae/blocks.js';
import { vaeConfig, vaeConfigFromDiffusers, vaeDownsampleFactor, vaeParameterCount } from '../src/models/vae/config.js';
import { loadVae } from '../src/models/vae/load.js';
import { vaeLoss } from '../src/models/vae/loss.js';
import { Rng } from '../src/util/rng.js';

// Produced by scripts/fixtures/vae_ref.py: an independent plain-torch AutoencoderKL with diffusers
// names and semantics, run in float64; layout [8,16,16], 2 resnets per level, 4 norm groups.
const FIXTURE = path.join(import.meta.dirname, 'fixtures/vae/tiny');
interface Stored {
  shape: number[];
  data: number[];
}
const ref = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference.json'), 'utf8')) as {
  parameter_names: string[];
  parameter_count: number;
  input: Stored;
  posterior_mean: Stored;
  posterior_logvar: Stored;
  kl: Stored;
  decoded_mean: Stored;
};
const fixtureConfig = vaeConfigFromDiffusers(JSON.parse(fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')), 'config.json');

function maxAbsDiff(t: tf.Tensor, expected: Stored): number {
  expect(t.shape).toEqual(expected.shape);
  const got = t.dataSync();
  let m = 0;
  for (let i = 0; i < got.length; i++) m = Math.max(m, Math.abs(got[i]! - expected.data[i]!));
  return m;
}

describe('AutoencoderKL layout', () => {
  it('has exactly the parameter names and count of the diffusers-layout reference', () => {
    const m = new AutoencoderKL(fixtureConfig);
    expect([...m.namedParameters()].map(([n]) => n).sort()).toEqual([...ref.parameter_names].sort());
    expect(m.numParameters()).toBe(ref.parameter_count);
    m.dispose();
  });

  it('counts parameters analytically: the formula matches built models and the published SDXL size', () => {
    for (const c of [fixtureConfig, vaeConfig('tiny'), { ...vaeConfig('tiny'), midBlockAddAttention: false, useQuantConv: false }]) {
      const m = new AutoencoderKL(c);
      expect(vaeParameterCount(c)).toBe(m.numParameters());
      m.dispose();
    }
    // 83,653,863: the figure public docs list for the SD/SDXL VAE (f32); not allocated here (335 MB).
    expect(vaeParameterCount(vaeConfig('sdxl'))).toBe(83_653_863);
    expect(vaeParameterCount(vaeConfig('sdxl-fp16-fix'))).toBe(83_653_863);
    expect(vaeConfig('sdxl').scalingFactor).toBe(0.13025);
    expect(vaeDownsampleFactor(vaeConfig('sdxl'))).toBe(8);
  });
});

describe('AutoencoderKL numerics against the reference', () => {
  let vae: AutoencoderKL;
  let x: tf.Tensor4D;
  beforeAll(() => {
    vae = loadVae(FIXTURE).model;
    x = tf.tensor4d(ref.input.data, ref.input.shape as [number, number, number, number]);
  });
  afterAll(() => {
    vae.dispose();
    x.dispose();
  });

  it('encodes to the reference posterior and decodes its mean to the reference image', () => {
    const posterior = vae.encode(x);
    expect(maxAbsDiff(posterior.mean, ref.posterior_mean)).toBeLessThan(1e-4);
    expect(maxAbsDiff(posterior.logvar, ref.posterior_logvar)).toBeLessThan(1e-4);
    const kl = posterior.kl();
    expect(maxAbsDiff(kl, ref.kl)).toBeLessThan(1e-3);
    const decoded = vae.decode(posterior.mean);
    expect(maxAbsDiff(decoded, ref.decoded_mean)).toBeLessThan(1e-4);
    tf.dispose([kl, decoded]);
    posterior.dispose();
  });

  it('scales latents by scaling_factor for the generative model and undoes it before decoding', () => {
    const before = tf.memory().numTensors;
    const latents = vae.encodeToLatents(x);
    const scaled = { shape: ref.posterior_mean.shape, data: ref.posterior_mean.data.map((v) => v * 0.13025) };
    expect(maxAbsDiff(latents, scaled)).toBeLessThan(1e-5);
    const image = vae.decodeLatents(latents);
    expect(maxAbsDiff(image, ref.decoded_mean)).toBeLessThan(1e-4);
    tf.dispose([latents, image]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('forward() without an rng decodes the mean; with one it decodes mean + std·ε from that rng', () => {
    const det = vae.forward(x);
    expect(maxAbsDiff(det.reconstruction, ref.decoded_mean)).toBeLessThan(1e-4);
    const eps = new Rng(5).fillNormal(new Float32Array(ref.posterior_mean.data.length));
    const z = tf.tidy(() =>
      det.posterior.mean.add(det.posterior.std.mul(tf.tensor(eps, det.posterior.mean.shape))),
    ) as tf.Tensor4D;
    const expected = vae.decode(z);
    const sampled = vae.forward(x, new Rng(5));
    const diff = tf.tidy(() => sampled.reconstruction.sub(expected).abs().max().dataSync()[0]!);
    expect(diff).toBeLessThan(1e-5);
    // The sample must differ from the mean decode, or the rng was ignored.
    expect(maxAbsDiff(sampled.reconstruction, ref.decoded_mean)).toBeGreaterThan(1e-3);
    tf.dispose([det.reconstruction, sampled.reconstruction, z, expected]);
    det.posterior.dispose();
    sampled.posterior.dispose();
  });

  it('backpropagates the VAE loss into every parameter; one gradient agrees with finite differences', () => {
    const small = tf.tidy(() => x.slice([0, 0, 0, 0], [1, 8, 8, 3])) as tf.Tensor4D;
    const lossOf = (): tf.Scalar => {
      const { reconstruction, posterior } = vae.forward(small, new Rng(11));
      const loss = vaeLoss(small, reconstruction, posterior, { l1: 0, mse: 1, kl: 0.01 });
      posterior.dispose();
      return loss.total;
    };
    const { value, grads } = tf.variableGrads(lossOf);
    const names = [...vae.namedParameters()].map(([n]) => n);
    const byId = new Map([...vae.namedParameters()].map(([n, p]) => [p.name, n]));
    const got = new Set(Object.keys(grads).map((k) => byId.get(k)));
    expect(names.filter((n) => !got.has(n))).toEqual([]);
    for (const g of Object.values(grads)) expect(Number.isFinite(g.abs().max().dataSync()[0]!)).toBe(true);

    // d loss / d post_quant_conv.bias[0] by central differences. The loss is smooth (the L1 term's
    // kinks would spoil the difference quotient); f32 forces a large step and a loose tolerance.
    const bias = vae.postQuantConv!.bias!;
    const analytic = grads[bias.name]!.dataSync()[0]!;
    const original = bias.dataSync().slice();
    const at = (delta: number): number => {
      const b = original.slice();
      b[0]! += delta;
      bias.assign(tf.tensor1d(b));
      const l = lossOf();
      const v = l.dataSync()[0]!;
      l.dispose();
      return v;
    };
    const h = 3e-3;
    const numeric = (at(h) - at(-h)) / (2 * h);
    bias.assign(tf.tensor1d(original));
    expect(Math.abs(analytic)).toBeGreaterThan(1e-4);
    expect(Math.abs(numeric - analytic)).toBeLessThan(2e-2 * Math.abs(analytic) + 1e-4);
    tf.dispose([value, small, ...Object.values(grads)]);
  });
});

describe('DiagonalGaussianDistribution', () => {
  it('splits mean/logvar, clamps logvar to [−30, 20] and computes KL and NLL by the LDM formulas', () => {
    // One sample, 1×1 spatial, 2 latent channels: moments = [mean0, mean1, logvar0, logvar1].
    const moments = tf.tensor4d([[[[1, -2, 50, Math.log(2)]]]]);
    const d = new DiagonalGaussianDistribution(moments);
    expect(Array.from(d.mean.dataSync())).toEqual([1, -2]);
    const lv = d.logvar.dataSync();
    expect(lv[0]).toBe(20);
    expect(lv[1]).toBeCloseTo(Math.log(2), 6);
    expect(d.std.dataSync()[1]).toBeCloseTo(Math.SQRT2, 5);
    // 0.5·Σ(μ² + σ² − 1 − log σ²)
    const kl = 0.5 * (1 + Math.exp(20) - 1 - 20 + (4 + 2 - 1 - Math.log(2)));
    expect(d.kl().dataSync()[0]! / kl).toBeCloseTo(1, 6);
    // 0.5·Σ(log 2π + log σ² + (x − μ)²/σ²) at x = (1, 0)
    const nll = 0.5 * (Math.log(2 * Math.PI) + 20 + 0 + Math.log(2 * Math.PI) + Math.log(2) + 4 / 2);
    expect(d.nll(tf.tensor4d([[[[1, 0]]]])).dataSync()[0]).toBeCloseTo(nll, 4);
    const low = new DiagonalGaussianDistribution(tf.tensor4d([[[[0, -40]]]]));
    expect(low.logvar.dataSync()[0]).toBe(-30);
    tf.dispose(moments);
    d.dispose();
    low.dispose();
  });

  it('gives KL between two Gaussians as 0.5·Σ((μ₁−μ₂)²/σ₂² + σ₁²/σ₂² − 1 − log σ₁² + log σ₂²)', () => {
    const p = new DiagonalGaussianDistribution(tf.tensor4d([[[[0.5, 0]]]]));
    const q = new DiagonalGaussianDistribution(tf.tensor4d([[[[-1, Math.log(4)]]]]));
    const expected = 0.5 * (2.25 / 4 + 1 / 4 - 1 - 0 + Math.log(4));
    expect(p.kl(q).dataSync()[0]).toBeCloseTo(expected, 6);
    p.dispose();
    q.dispose();
  });
});

describe('VaeAttention', () => {
  it('gives the same result when queries are processed in chunks', () => {
    const whole = new VaeAttention(8, 4, new Rng(3));
    const chunked = new VaeAttention(8, 4, new Rng(3), 16 * 3);
    const x = tf.randomNormal([1, 4, 4, 8], 0, 1, 'float32', 1) as tf.Tensor4D;
    const a = whole.forward(x);
    const b = chunked.forward(x);
    expect(tf.tidy(() => a.sub(b).abs().max().dataSync()[0]!)).toBeLessThan(1e-6);
    // The residual path alone would make a and b agree trivially; the attention must change x.
    expect(tf.tidy(() => a.sub(x).abs().max().dataSync()[0]!)).toBeGreaterThan(1e-2);
    tf.dispose([x, a, b]);
    whole.dispose();
    chunked.dispose();
  });
});
