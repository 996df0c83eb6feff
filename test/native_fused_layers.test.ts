import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { FUSED_KERNELS, hasFusedKernel } from '../src/backend/fused.js';
import { Conv2d } from '../src/nn/conv.js';
import type { ConvActivation } from '../src/nn/conv_list.js';
import { FiLM } from '../src/nn/film.js';
import { Linear } from '../src/nn/linear.js';
import { LoraLinear } from '../src/lora/lora_linear.js';
import { GroupNorm, LayerNorm } from '../src/nn/norm.js';
import { gatedResidual, normModulate, type NormModulateSpec } from '../src/nn/norm_modulate.js';
import { DenseBlock, AttentionBlock } from '../src/models/nsp/blocks.js';
import { DiTBlock, FinalLayer } from '../src/models/dit/blocks.js';
import { Rng } from '../src/util/rng.js';

// The fused conv-over-a-list (+ bias + activation) and norm + FiLM modulation (+ SiLU) kernels of
// the native backend against the unfused tfjs composition on the cpu backend, value and every
// gradient, on odd shapes; and against central finite differences of the fused ops themselves.

const skip = loadNativeAddon().addon === undefined;
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const randn = (rng: Rng, shape: number[], s = 1) => rng.fillNormal(new Float32Array(size(shape))).map((v) => v * s);

function maxRelErr(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let ref = 0;
  let err = 0;
  for (let i = 0; i < a.length; i++) ref = Math.max(ref, Math.abs(b[i]!)), (err = Math.max(err, Math.abs(a[i]! - b[i]!)));
  expect(ref).toBeGreaterThan(0);
  return err / Math.max(1, ref);
}

/** y = forward(), then the gradients of Σ y·r w.r.t. vars, as host arrays: [y, ...grads]. */
function valueAndGradsOfWeightedSum(forward: () => tf.Tensor, r: tf.Tensor, vars: tf.Variable[]): Float32Array[] {
  const y = forward();
  const { grads } = tf.variableGrads(() => forward().mul(r).sum() as tf.Scalar, vars);
  return [y, ...vars.map((v) => grads[v.name]!)].map((t) => t.dataSync().slice() as Float32Array);
}

/**
 * Central finite differences of loss(data) = Σ y·data[weightSlot] against the analytic gradients:
 * grads[i] is the gradient w.r.t. data[slots[i]].
 */
function expectFiniteDifferences(value: (d: Float32Array[]) => Float32Array, data: Float32Array[], weightSlot: number, grads: Float32Array[], slots: number[]) {
  const loss = (d: Float32Array[]) => {
    const y = value(d);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i]! * d[weightSlot]![i]!;
    return s;
  };
  const eps = 1e-2;
  grads.forEach((g, which) => {
    for (let i = 0; i < g.length; i++) {
      const plus = data.map((a) => a.slice());
      const minus = data.map((a) => a.slice());
      plus[slots[which]!]![i]! += eps;
      minus[slots[which]!]![i]! -= eps;
      const fd = (loss(plus) - loss(minus)) / (2 * eps);
      expect(Math.abs(fd - g[i]!), `input ${which} element ${i}: fd ${fd} vs ${g[i]}`).toBeLessThan(3e-3 * Math.max(1, Math.abs(fd)));
    }
  });
}

type ConvCase = { label: string; n: number; h: number; w: number; channels: number[]; out: number; k: number; stride: number; padding: number | 'same' | 'valid'; bias: boolean; act: ConvActivation };
const CONV_CASES: ConvCase[] = [
  { label: 'one input, 3×3 same, leaky relu', n: 2, h: 5, w: 7, channels: [3], out: 4, k: 3, stride: 1, padding: 1, bias: true, act: { kind: 'leaky_relu', alpha: 0.2 } },
  { label: 'three inputs (dense block), odd channels, leaky relu', n: 3, h: 6, w: 5, channels: [5, 3, 2], out: 3, k: 3, stride: 1, padding: 'same', bias: true, act: { kind: 'leaky_relu', alpha: 0.2 } },
  { label: 'four inputs, 1×1 local fusion, linear', n: 2, h: 4, w: 3, channels: [6, 2, 2, 2], out: 6, k: 1, stride: 1, padding: 0, bias: true, act: { kind: 'linear' } },
  { label: 'stride 2, padding 1, relu, no bias', n: 2, h: 7, w: 6, channels: [4, 1], out: 5, k: 3, stride: 2, padding: 1, bias: false, act: { kind: 'relu' } },
  { label: 'valid 5×5, linear', n: 1, h: 9, w: 8, channels: [2, 3], out: 2, k: 5, stride: 1, padding: 'valid', bias: true, act: { kind: 'linear' } },
  { label: 'large enough to split across threads', n: 4, h: 24, w: 24, channels: [16, 8, 8], out: 8, k: 3, stride: 1, padding: 1, bias: true, act: { kind: 'leaky_relu', alpha: 0.2 } },
  // Stride = kernel, no padding: a patch embedding, run as a matmul over gathered patches.
  { label: 'patch embedding 4×4 stride 4 (DiT x_embedder)', n: 2, h: 8, w: 12, channels: [3], out: 5, k: 4, stride: 4, padding: 0, bias: true, act: { kind: 'linear' } },
  { label: 'patches 3×3 stride 3 not covering the image (the remainder gets no gradient), two inputs, leaky relu', n: 2, h: 10, w: 11, channels: [2, 3], out: 4, k: 3, stride: 3, padding: 'valid', bias: false, act: { kind: 'leaky_relu', alpha: 0.1 } },
  { label: 'patch embedding 2×2 stride 2, threaded', n: 4, h: 32, w: 32, channels: [4], out: 64, k: 2, stride: 2, padding: 0, bias: true, act: { kind: 'linear' } },
];

/** y and the gradients of Σ y·r w.r.t. every input, the weight and the bias, on the current backend. */
function convValueAndGrads(c: ConvCase, data: Float32Array[], params: { weight: Float32Array; bias: Float32Array }): Float32Array[] {
  return tf.tidy(() => {
    const conv = new Conv2d(c.channels.reduce((a, b) => a + b, 0), c.out, c.k, { stride: c.stride, padding: c.padding, bias: c.bias });
    conv.weight.assign(tf.tensor(params.weight, conv.weight.shape));
    if (conv.bias) conv.bias.assign(tf.tensor(params.bias, conv.bias.shape));
    const xs = c.channels.map((ch, i) => tf.variable(tf.tensor4d(data[i]!, [c.n, c.h, c.w, ch])));
    const y = conv.forwardList(xs, c.act);
    const r = tf.tensor(data[c.channels.length]!.subarray(0, y.size), y.shape);
    const vars = [...xs, conv.weight, ...(conv.bias ? [conv.bias] : [])];
    const { grads } = tf.variableGrads(() => (conv.forwardList(xs, c.act).mul(r).sum() as tf.Scalar), vars);
    const out = [y, ...vars.map((v) => grads[v.name]!)].map((t) => t.dataSync().slice() as Float32Array);
    xs.forEach((x) => x.dispose());
    conv.dispose();
    return out;
  });
}

describe.skipIf(skip)('fused conv over a list (native) vs concat → conv → bias → activation on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of CONV_CASES) {
    it(`${c.label}: value and every gradient`, async () => {
      const rng = new Rng(11);
      const cin = c.channels.reduce((a, b) => a + b, 0);
      const data = [...c.channels.map((ch) => randn(rng, [c.n, c.h, c.w, ch])), randn(rng, [c.n, c.h, c.w, c.out])];
      const params = { weight: randn(rng, [c.out, cin, c.k, c.k], 0.3), bias: randn(rng, [c.out], 0.5) };
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.convList)).toBe(true);
      const before = tf.memory().numTensors;
      const fused = convValueAndGrads(c, data, params);
      expect(tf.memory().numTensors).toBe(before);
      await tf.setBackend('cpu');
      expect(hasFusedKernel(FUSED_KERNELS.convList)).toBe(false);
      const composite = convValueAndGrads(c, data, params);
      const names = ['y', ...c.channels.map((_, i) => `dx${i}`), 'dweight', ...(c.bias ? ['dbias'] : [])];
      expect(fused.length).toBe(names.length);
      names.forEach((name, i) => expect(maxRelErr(fused[i]!, composite[i]!), `${c.label} ${name}`).toBeLessThan(2e-5));
    });
  }

  it('gradients match central finite differences of the fused op', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const c: ConvCase = { label: 'fd', n: 1, h: 4, w: 3, channels: [2, 1], out: 2, k: 3, stride: 1, padding: 1, bias: true, act: { kind: 'leaky_relu', alpha: 0.3 } };
    const rng = new Rng(5);
    const data = [randn(rng, [1, 4, 3, 2]), randn(rng, [1, 4, 3, 1]), randn(rng, [1, 4, 3, 2])];
    const params = { weight: randn(rng, [2, 3, 3, 3], 0.5), bias: randn(rng, [2], 0.5) };
    const grads = convValueAndGrads(c, data, params).slice(1);
    const loss = (d: Float32Array[], p: typeof params) => {
      const [y] = convValueAndGrads(c, d, p);
      let s = 0;
      for (let i = 0; i < y!.length; i++) s += y![i]! * d[2]![i]!;
      return s;
    };
    const eps = 1e-2;
    const check = (which: number, perturb: (delta: number, i: number) => [Float32Array[], typeof params], count: number) => {
      for (let i = 0; i < count; i++) {
        const fd = (loss(...perturb(eps, i)) - loss(...perturb(-eps, i))) / (2 * eps);
        expect(Math.abs(fd - grads[which]![i]!), `grad ${which} element ${i}: fd ${fd} vs ${grads[which]![i]}`).toBeLessThan(3e-3 * Math.max(1, Math.abs(fd)));
      }
    };
    const bumpData = (k: number) => (delta: number, i: number): [Float32Array[], typeof params] => {
      const d = data.map((a) => a.slice());
      d[k]![i]! += delta;
      return [d, params];
    };
    check(0, bumpData(0), data[0]!.length);
    check(1, bumpData(1), data[1]!.length);
    check(2, (delta, i) => {
      const weight = params.weight.slice();
      weight[i]! += delta;
      return [data, { ...params, weight }];
    }, params.weight.length);
    check(3, (delta, i) => {
      const bias = params.bias.slice();
      bias[i]! += delta;
      return [data, { ...params, bias }];
    }, 2);
  });

  it('rejects inputs whose channels do not add up to the weight', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const conv = new Conv2d(5, 2, 3, { padding: 1 });
    const xs = [tf.zeros([1, 3, 3, 2]), tf.zeros([1, 3, 3, 2])] as tf.Tensor4D[];
    expect(() => conv.forwardList(xs)).toThrow(/4 channels in all, the weight \[2,5,3,3\] expects 5/);
    tf.dispose(xs);
    conv.dispose();
  });
});

type NormCase = { label: string; shape: number[]; width: number; spec: NormModulateSpec };
const NORM_CASES: NormCase[] = [
  { label: 'GroupNorm 3 groups, odd spatial, scale|shift, none', shape: [2, 5, 3, 6], width: 12, spec: { groups: 3, perPosition: false, eps: 1e-5, scaleOffset: 0, shiftOffset: 6, activation: 'none' } },
  { label: 'GroupNorm 2 groups, shift|scale, SiLU', shape: [3, 4, 7, 4], width: 8, spec: { groups: 2, perPosition: false, eps: 1e-5, scaleOffset: 4, shiftOffset: 0, activation: 'silu' } },
  { label: 'LayerNorm per position, tokens', shape: [2, 9, 5], width: 10, spec: { groups: 1, perPosition: true, eps: 1e-6, scaleOffset: 0, shiftOffset: 5, activation: 'none' } },
  { label: 'LayerNorm, adaLN columns inside a 6·C projection', shape: [2, 7, 3], width: 18, spec: { groups: 1, perPosition: true, eps: 1e-6, scaleOffset: 3, shiftOffset: 0, activation: 'silu' } },
  { label: 'GroupNorm, threaded', shape: [8, 16, 16, 32], width: 64, spec: { groups: 8, perPosition: false, eps: 1e-5, scaleOffset: 0, shiftOffset: 32, activation: 'silu' } },
  // One sample of many tokens (a DiT LayerNorm at batch 1): split across threads by token, the
  // modulation gradient summed per sample afterwards.
  { label: 'LayerNorm, one sample of 300 tokens, threaded', shape: [1, 300, 128], width: 768, spec: { groups: 1, perPosition: true, eps: 1e-6, scaleOffset: 128, shiftOffset: 0, activation: 'none' } },
  // One-row tiles with several groups of an odd size (the row path's per-group sums and their tails).
  { label: 'GroupNorm of 1×1 maps, 4 groups of 5, SiLU', shape: [3, 1, 1, 20], width: 40, spec: { groups: 4, perPosition: false, eps: 1e-5, scaleOffset: 20, shiftOffset: 0, activation: 'silu' } },
  { label: 'LayerNorm per token, 8 samples of 128 tokens × 37 channels, SiLU, threaded', shape: [8, 128, 37], width: 111, spec: { groups: 1, perPosition: true, eps: 1e-6, scaleOffset: 37, shiftOffset: 74, activation: 'silu' } },
];

/** y, dx and dmod of Σ y·r on the current backend. */
function normValueAndGrads(c: NormCase, data: Float32Array[]): Float32Array[] {
  return tf.tidy(() => {
    const x = tf.tensor(data[0]!, c.shape);
    const mod = tf.tensor2d(data[1]!, [c.shape[0]!, c.width]);
    const r = tf.tensor(data[2]!, c.shape);
    const f = (a: tf.Tensor, m: tf.Tensor) => normModulate(a, m as tf.Tensor2D, c.spec);
    const y = f(x, mod);
    const [dx, dmod] = tf.grads((a: tf.Tensor, m: tf.Tensor) => f(a, m).mul(r).sum())([x, mod]);
    return [y, dx!, dmod!].map((t) => t.dataSync().slice() as Float32Array);
  });
}

describe.skipIf(skip)('fused norm + FiLM modulation + activation (native) vs the composite on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of NORM_CASES) {
    it(`${c.label}: value, dx and dmod`, async () => {
      const rng = new Rng(21);
      // An offset and a spread per channel, so the normalisation has something to remove.
      const x = randn(rng, c.shape).map((v, i) => 1.5 * v + 0.3 * (i % c.shape.at(-1)!) - 0.4);
      const data = [x, randn(rng, [c.shape[0]!, c.width], 0.5), randn(rng, c.shape)];
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.normModulate)).toBe(true);
      const fused = normValueAndGrads(c, data);
      await tf.setBackend('cpu');
      const composite = normValueAndGrads(c, data);
      ['y', 'dx', 'dmod'].forEach((name, i) => expect(maxRelErr(fused[i]!, composite[i]!), `${c.label} ${name}`).toBeLessThan(5e-5));
      // Columns of mod that are neither scale nor shift get no gradient.
      const [n, cc] = [c.shape[0]!, c.shape.at(-1)!];
      for (let b = 0; b < n; b++) {
        for (let j = 0; j < c.width; j++) {
          const used = (j >= c.spec.scaleOffset && j < c.spec.scaleOffset + cc) || (j >= c.spec.shiftOffset && j < c.spec.shiftOffset + cc);
          if (!used) expect(fused[2]![b * c.width + j]).toBe(0);
        }
      }
    });
  }

  it('gradients match central finite differences of the fused op', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const c: NormCase = { label: 'fd', shape: [2, 3, 2, 4], width: 8, spec: { groups: 2, perPosition: false, eps: 1e-5, scaleOffset: 0, shiftOffset: 4, activation: 'silu' } };
    const rng = new Rng(8);
    const data = [randn(rng, c.shape), randn(rng, [2, 8], 0.5), randn(rng, c.shape)];
    const [, dx, dmod] = normValueAndGrads(c, data);
    const loss = (d: Float32Array[]) => {
      const [y] = normValueAndGrads(c, d);
      let s = 0;
      for (let i = 0; i < y!.length; i++) s += y![i]! * d[2]![i]!;
      return s;
    };
    const eps = 1e-2;
    [dx, dmod].forEach((g, which) => {
      for (let i = 0; i < g!.length; i++) {
        const plus = data.map((a) => a.slice());
        const minus = data.map((a) => a.slice());
        plus[which]![i]! += eps;
        minus[which]![i]! -= eps;
        const fd = (loss(plus) - loss(minus)) / (2 * eps);
        expect(Math.abs(fd - g![i]!), `input ${which} element ${i}: fd ${fd} vs ${g![i]}`).toBeLessThan(3e-3 * Math.max(1, Math.abs(fd)));
      }
    });
  });

  it('FiLM.forwardNormalized keeps affine norms on the separate layers and equals them', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const film = new FiLM(6, 8, { zeroInit: false, rng: new Rng(2) });
    const x = tf.tensor4d(randn(new Rng(3), [2, 3, 3, 8]), [2, 3, 3, 8]);
    const cond = tf.tensor2d(randn(new Rng(4), [2, 6]), [2, 6]);
    const affine = new GroupNorm(4, 8);
    affine.weight!.assign(tf.tensor1d(randn(new Rng(5), [8])));
    const plain = new GroupNorm(4, 8, 1e-5, false);
    const a = film.forwardNormalized(affine, x, cond, 'silu');
    const b = tf.tidy(() => tf.sigmoid(film.forward(affine.forward(x), cond)).mul(film.forward(affine.forward(x), cond)));
    expect(maxRelErr(a.dataSync() as Float32Array, b.dataSync() as Float32Array)).toBeLessThan(1e-5);
    const c = film.forwardNormalized(plain, x, cond);
    const d = film.forward(plain.forward(x), cond);
    expect(maxRelErr(c.dataSync() as Float32Array, d.dataSync() as Float32Array)).toBeLessThan(1e-5);
    tf.dispose([x, cond, a, b, c, d]);
    [film, affine, plain].forEach((m) => m.dispose());
  });

  it('NSP dense and attention blocks: native fused = cpu composite, output and every parameter gradient', async () => {
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const rng = new Rng(9);
      const dense = new DenseBlock(8, 6, 2, 4, 3, 0.2, rng);
      const attn = new AttentionBlock(8, 6, 2, 1, rng);
      // Non-zero FiLM projections so scale and shift take part.
      for (const film of [dense.film, attn.film]) film.linear.weight.assign(tf.tensor(randn(rng, film.linear.weight.shape, 0.3), film.linear.weight.shape));
      const x = tf.tensor4d(randn(new Rng(10), [2, 5, 5, 8]), [2, 5, 5, 8]);
      const cond = tf.tensor2d(randn(new Rng(12), [2, 6]), [2, 6]);
      const vars = [...dense.namedParameters(), ...attn.namedParameters()].map(([, v]) => v);
      const { value, grads } = tf.variableGrads(() => attn.forward(dense.forward(x, cond), cond).square().mean() as tf.Scalar, vars);
      const out = [value.dataSync()[0]!, ...vars.map((v) => grads[v.name]!.dataSync().slice() as Float32Array)] as const;
      tf.dispose([value, ...Object.values(grads), x, cond]);
      dense.dispose();
      attn.dispose();
      return out;
    };
    const [nv, ...ng] = await run(NATIVE_BACKEND);
    const [cv, ...cg] = await run('cpu');
    expect(Math.abs(nv - cv) / Math.abs(cv)).toBeLessThan(1e-5);
    ng.forEach((g, i) => expect(maxRelErr(g as Float32Array, cg[i] as Float32Array), `param ${i}`).toBeLessThan(5e-5));
  });
});

describe('composites on backends without the fused kernels', () => {
  it('LayerNorm + FiLM through forwardNormalized equals FiLM(LayerNorm(x)) on cpu', () => {
    expect(hasFusedKernel(FUSED_KERNELS.normModulate)).toBe(false);
    const film = new FiLM(4, 5, { zeroInit: false, order: 'shift_scale', rng: new Rng(1) });
    const norm = new LayerNorm(5, 1e-6, false);
    const x = tf.tensor3d(randn(new Rng(2), [2, 3, 5]), [2, 3, 5]);
    const cond = tf.tensor2d(randn(new Rng(3), [2, 4]), [2, 4]);
    const a = film.forwardNormalized(norm, x, cond);
    const b = film.forward(norm.forward(x), cond);
    expect(maxRelErr(a.dataSync() as Float32Array, b.dataSync() as Float32Array)).toBeLessThan(1e-6);
    tf.dispose([x, cond, a, b]);
    film.dispose();
    norm.dispose();
  });
});

type LinearCase = { label: string; shape: number[]; out: number; bias: boolean; frozenWeight?: boolean };
const LINEAR_CASES: LinearCase[] = [
  { label: 'rank 2, bias', shape: [5, 7], out: 3, bias: true },
  { label: 'rank 3 tokens, no bias', shape: [2, 9, 6], out: 5, bias: false },
  { label: 'rank 4 (a map), bias', shape: [2, 3, 5, 4], out: 6, bias: true },
  { label: 'frozen weight (LoRA base): dx and dbias only', shape: [3, 4, 8], out: 7, bias: true, frozenWeight: true },
  { label: 'large enough for oneDNN', shape: [4, 64, 96], out: 80, bias: true },
];

/** y, dx and the gradients of the trainable parameters of Σ y·r, on the current backend. */
function linearValueAndGrads(c: LinearCase, data: Float32Array[]): Float32Array[] {
  return tf.tidy(() => {
    const lin = new Linear(c.shape.at(-1)!, c.out, { bias: c.bias });
    lin.weight.assign(tf.tensor(data[1]!, lin.weight.shape));
    if (lin.bias) lin.bias.assign(tf.tensor(data[2]!.subarray(0, c.out), [c.out]));
    if (c.frozenWeight) lin.weight.trainable = false;
    const x = tf.variable(tf.tensor(data[0]!, c.shape));
    const r = tf.tensor(data[3]!, [...c.shape.slice(0, -1), c.out]);
    const out = valueAndGradsOfWeightedSum(() => lin.forward(x), r, [x, ...lin.trainableParameters().values()]);
    x.dispose();
    lin.dispose();
    return out;
  });
}

describe.skipIf(skip)('fused Linear (native) vs matmul → bias on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of LINEAR_CASES) {
    it(`${c.label}: value and gradients`, async () => {
      const rng = new Rng(31);
      const inF = c.shape.at(-1)!;
      const outShape = [...c.shape.slice(0, -1), c.out];
      const data = [randn(rng, c.shape), randn(rng, [c.out, inF], 0.4), randn(rng, [c.out]), randn(rng, outShape)];
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.linear)).toBe(true);
      const before = tf.memory().numTensors;
      const fused = linearValueAndGrads(c, data);
      expect(tf.memory().numTensors).toBe(before);
      await tf.setBackend('cpu');
      const composite = linearValueAndGrads(c, data);
      expect(fused.length).toBe(2 + (c.frozenWeight ? 0 : 1) + (c.bias ? 1 : 0));
      fused.forEach((v, i) => expect(maxRelErr(v, composite[i]!), `${c.label} output ${i}`).toBeLessThan(2e-5));
    });
  }

  it('gradients match central finite differences of the fused op', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const c: LinearCase = { label: 'fd', shape: [2, 3, 4], out: 3, bias: true };
    const rng = new Rng(6);
    const data = [randn(rng, c.shape), randn(rng, [3, 4]), randn(rng, [3]), randn(rng, [2, 3, 3])];
    const grads = linearValueAndGrads(c, data).slice(1);
    // x, weight, bias: data slots 0, 1, 2; Σ y·data[3].
    expectFiniteDifferences((d) => linearValueAndGrads(c, d)[0]!, data, 3, grads, [0, 1, 2]);
  });

  it('a frozen conv weight gets no gradient and the input gradients are unchanged', async () => {
    const c = CONV_CASES[1]!;
    const rng = new Rng(13);
    const cin = c.channels.reduce((a, b) => a + b, 0);
    const data = [...c.channels.map((ch) => randn(rng, [c.n, c.h, c.w, ch])), randn(rng, [c.n, c.h, c.w, c.out])];
    const params = { weight: randn(rng, [c.out, cin, c.k, c.k], 0.3), bias: randn(rng, [c.out], 0.5) };
    await tf.setBackend(NATIVE_BACKEND);
    const full = convValueAndGrads(c, data, params);
    const frozen = tf.tidy(() => {
      const conv = new Conv2d(cin, c.out, c.k, { stride: c.stride, padding: c.padding });
      conv.weight.assign(tf.tensor(params.weight, conv.weight.shape));
      conv.bias!.assign(tf.tensor(params.bias, conv.bias!.shape));
      conv.freeze();
      const xs = c.channels.map((ch, i) => tf.variable(tf.tensor4d(data[i]!, [c.n, c.h, c.w, ch])));
      const r = tf.tensor4d(data[c.channels.length]!, [c.n, c.h, c.w, c.out]);
      const { grads } = tf.variableGrads(() => conv.forwardList(xs, c.act).mul(r).sum() as tf.Scalar, xs);
      const out = xs.map((x) => grads[x.name]!.dataSync().slice() as Float32Array);
      xs.forEach((x) => x.dispose());
      conv.dispose();
      return out;
    });
    frozen.forEach((g, i) => expect(maxRelErr(g, full[1 + i]!)).toBe(0));
  });
});

type LoraCase = { label: string; shape: number[]; out: number; r: number; alpha: number; bias: boolean; trainBase: boolean };
const LORA_CASES: LoraCase[] = [
  { label: 'rank 4 on [2, 5, 7] → 6, frozen base with bias, scale 2', shape: [2, 5, 7], out: 6, r: 4, alpha: 8, bias: true, trainBase: false },
  { label: 'rank 3 on [9, 5] → 11, no bias, scale 1', shape: [9, 5], out: 11, r: 3, alpha: 3, bias: false, trainBase: false },
  { label: 'rank 2, base weight and bias trained too', shape: [3, 4, 6], out: 5, r: 2, alpha: 1, bias: true, trainBase: true },
  { label: 'rank 16 on a DiT-S/2 token block (threaded)', shape: [1, 256, 384], out: 384, r: 16, alpha: 16, bias: true, trainBase: false },
];

/** y and the gradients of Σ y·r w.r.t. x, lora_A, lora_B (and the base weight and bias when trained), on the current backend. */
function loraValueAndGrads(c: LoraCase, data: Float32Array[]): Float32Array[] {
  return tf.tidy(() => {
    const inF = c.shape.at(-1)!;
    const lin = new Linear(inF, c.out, { bias: c.bias });
    lin.weight.assign(tf.tensor2d(data[1]!, [c.out, inF]));
    if (c.bias) lin.bias!.assign(tf.tensor1d(data[2]!));
    if (!c.trainBase) lin.freeze();
    const lora = new LoraLinear(lin, { r: c.r, alpha: c.alpha, rng: new Rng(3) });
    lora.loraA.weight.assign(tf.tensor2d(data[3]!, [c.r, inF]));
    lora.loraB.weight.assign(tf.tensor2d(data[4]!, [c.out, c.r]));
    const x = tf.variable(tf.tensor(data[0]!, c.shape));
    const r = tf.tensor(data[5]!, [...c.shape.slice(0, -1), c.out]);
    const vars = [x, lora.loraA.weight, lora.loraB.weight, ...(c.trainBase ? [lin.weight, ...(c.bias ? [lin.bias!] : [])] : [])];
    const out = valueAndGradsOfWeightedSum(() => lin.forward(x), r, vars);
    x.dispose();
    lin.dispose();
    return out;
  });
}

describe.skipIf(skip)('fused Linear + LoRA branch (native) vs base + B(A(x))·scale on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  const caseData = (c: LoraCase, seed: number) => {
    const rng = new Rng(seed);
    const inF = c.shape.at(-1)!;
    // lora_B non-zero (as after some training), so every gradient is exercised.
    return [randn(rng, c.shape), randn(rng, [c.out, inF], 0.3), randn(rng, [c.out]), randn(rng, [c.r, inF], 0.3), randn(rng, [c.out, c.r], 0.3), randn(rng, [...c.shape.slice(0, -1), c.out])];
  };

  for (const c of LORA_CASES) {
    it(`${c.label}: value and gradients`, async () => {
      const data = caseData(c, 41);
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.loraLinear)).toBe(true);
      const kernelsBefore = tf.memory().numTensors;
      const fused = loraValueAndGrads(c, data);
      expect(tf.memory().numTensors).toBe(kernelsBefore);
      await tf.setBackend('cpu');
      expect(hasFusedKernel(FUSED_KERNELS.loraLinear)).toBe(false);
      const composite = loraValueAndGrads(c, data);
      expect(fused.length).toBe(4 + (c.trainBase ? (c.bias ? 2 : 1) : 0));
      fused.forEach((v, i) => expect(maxRelErr(v, composite[i]!), `${c.label} output ${i}`).toBeLessThan(2e-5));
    });
  }

  it('the fused kernel runs (one SfLoraLinear each way), and a disabled adapter gives the base output', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const c = LORA_CASES[0]!;
    const data = caseData(c, 5);
    const { kernels } = await tf.profile(() => loraValueAndGrads(c, data));
    expect(kernels.filter((k) => k.name === FUSED_KERNELS.loraLinear).length).toBe(2);
    expect(kernels.filter((k) => k.name === FUSED_KERNELS.loraLinearGrad).length).toBe(1);
    const [withBranch, baseOnly] = tf.tidy(() => {
      const lin = new Linear(7, 6);
      lin.freeze();
      const lora = new LoraLinear(lin, { r: 4, alpha: 8, rng: new Rng(3) });
      lora.loraB.weight.assign(tf.tensor2d(data[4]!, [6, 4]));
      const x = tf.tensor2d(data[0]!.slice(0, 14), [2, 7]);
      const a = lin.forward(x).dataSync().slice();
      lora.enabled = false;
      const b = lin.forward(x).dataSync().slice();
      const plain = tf.matMul(x, lin.weight as tf.Tensor2D, false, true).add(lin.bias!).dataSync().slice();
      expect(maxRelErr(b as Float32Array, plain as Float32Array)).toBeLessThan(1e-6);
      lin.dispose();
      return [a, b];
    });
    expect(maxRelErr(withBranch as Float32Array, baseOnly as Float32Array)).toBeGreaterThan(1e-3);
  });

  it('gradients match central finite differences of the fused op', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const c: LoraCase = { label: 'fd', shape: [3, 4], out: 3, r: 2, alpha: 4, bias: true, trainBase: true };
    const data = caseData(c, 9);
    const grads = loraValueAndGrads(c, data).slice(1);
    // The order of vars in loraValueAndGrads (x, lora_A, lora_B, weight, bias) → their slots in data; Σ y·data[5].
    expectFiniteDifferences((d) => loraValueAndGrads(c, d)[0]!, data, 5, grads, [0, 3, 4, 1, 2]);
  });
});

describe.skipIf(skip)('fused gated residual (native) vs x + branch·gate on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  const run = (shape: number[], width: number, offset: number, data: Float32Array[]) =>
    tf.tidy(() => {
      const [x, branch, r] = [data[0]!, data[1]!, data[3]!].map((v) => tf.tensor(v, shape));
      const mod = tf.tensor2d(data[2]!, [shape[0]!, width]);
      const f = (a: tf.Tensor, b: tf.Tensor, m: tf.Tensor) => gatedResidual(a, b, m as tf.Tensor2D, offset);
      const y = f(x!, branch!, mod);
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, m: tf.Tensor) => f(a, b, m).mul(r!).sum())([x!, branch!, mod]);
      return [y, ...grads].map((t) => t.dataSync().slice() as Float32Array);
    });

  for (const [shape, width, offset] of [[[2, 7, 5], 30, 10], [[3, 2, 3, 4], 8, 4], [[1, 9, 6], 6, 0], [[3, 40, 96], 576, 192]] as [number[], number, number][]) {
    it(`x [${shape}], gate at ${offset} of ${width}: value, dx, dbranch, dmod; finite differences of dmod`, async () => {
      const rng = new Rng(41);
      const data = [randn(rng, shape), randn(rng, shape), randn(rng, [shape[0]!, width]), randn(rng, shape)];
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.gatedResidual)).toBe(true);
      const fused = run(shape, width, offset, data);
      await tf.setBackend('cpu');
      const composite = run(shape, width, offset, data);
      ['y', 'dx', 'dbranch', 'dmod'].forEach((name, i) => expect(maxRelErr(fused[i]!, composite[i]!), name).toBeLessThan(1e-6));
      await tf.setBackend(NATIVE_BACKEND);
      const eps = 1e-2;
      const loss = (d: Float32Array[]) => {
        const [y] = run(shape, width, offset, d);
        return y!.reduce((a, v, i) => a + v * d[3]![i]!, 0);
      };
      for (let i = 0; i < data[2]!.length; i += data[2]!.length > 100 ? 97 : 3) {
        const plus = data.map((a) => a.slice());
        const minus = data.map((a) => a.slice());
        plus[2]![i]! += eps;
        minus[2]![i]! -= eps;
        const fd = (loss(plus) - loss(minus)) / (2 * eps);
        expect(Math.abs(fd - fused[3]![i]!), `dmod ${i}`).toBeLessThan(3e-3 * Math.max(1, Math.abs(fd)));
      }
    });
  }
});

describe.skipIf(skip)('DiT block and final layer (adaLN + gated residuals fused on native) vs cpu', () => {
  afterAll(async () => {
    await tf.setBackend('cpu');
  });
  it('output and every parameter gradient', async () => {
    expect(registerNativeBackend()).toBe(true);
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const rng = new Rng(51);
      const block = new DiTBlock(8, 2, 16, rng);
      const final = new FinalLayer(8, 2, 3, rng);
      // adaLN-Zero starts at zero; non-zero modulation makes shift, scale and gates take part.
      for (const ada of [block.adaLNModulation, final.adaLNModulation]) ada.linear.weight.assign(tf.tensor(randn(rng, ada.linear.weight.shape, 0.3), ada.linear.weight.shape));
      const x = tf.tensor3d(randn(new Rng(52), [2, 5, 8]), [2, 5, 8]);
      const c = tf.tensor2d(randn(new Rng(53), [2, 8]), [2, 8]);
      const vars = [...block.namedParameters(), ...final.namedParameters()].map(([, v]) => v);
      const { value, grads } = tf.variableGrads(() => final.forward(block.forward(x, c), c).square().mean() as tf.Scalar, vars);
      const out = [value.dataSync()[0]!, ...vars.map((v) => grads[v.name]!.dataSync().slice() as Float32Array)] as const;
      tf.dispose([value, ...Object.values(grads), x, c]);
      block.dispose();
      final.dispose();
      return out;
    };
    const [nv, ...ng] = await run(NATIVE_BACKEND);
    const [cv, ...cg] = await run('cpu');
    expect(Math.abs(nv - cv) / Math.abs(cv)).toBeLessThan(1e-5);
    ng.forEach((g, i) => expect(maxRelErr(g as Float32Array, cg[i] as Float32Array), `param ${i}`).toBeLessThan(5e-5));
  });
});
