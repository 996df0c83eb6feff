import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { fallbackCounts } from '../src/backend/native/storage.js';
import { Rng } from '../src/util/rng.js';
import { FUSED_KERNELS, hasFusedKernel } from '../src/backend/fused.js';
import { GroupNorm, LayerNorm } from '../src/nn/norm.js';
import { geluErf, geluTanh, quickGelu, silu, type Activation } from '../src/nn/activations.js';

// Every native kernel against the cpu backend (or, where tfjs itself is wrong, a plain JS loop)
// on random data with odd sizes, strides, paddings, broadcasting and transposes.

const addon = loadNativeAddon().addon;
const skip = addon === undefined;

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

const rng = new Rng(2024);
const randn = (shape: number[]): Float32Array => rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)));

/** Runs `fn` on a backend with fresh tensors made from the same host data; returns values and shape. */
async function on(backend: string, data: { values: Float32Array; shape: number[] }[], fn: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[]) {
  await tf.setBackend(backend);
  const xs = data.map((d) => tf.tensor(d.values, d.shape));
  const out = tf.tidy(() => fn(...xs));
  const list = Array.isArray(out) ? out : [out];
  const res = list.map((t) => ({ values: t.dataSync().slice() as Float32Array, shape: t.shape }));
  tf.dispose([...xs, ...list]);
  return res;
}

function expectClose(actual: { values: Float32Array; shape: number[] }, expected: { values: ArrayLike<number>; shape: number[] }, label: string) {
  expect(actual.shape, label).toEqual(expected.shape);
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < expected.values.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected.values[i]!));
    maxErr = Math.max(maxErr, Math.abs(actual.values[i]! - expected.values[i]!));
  }
  expect(maxRef, `${label}: reference is all zeros`).toBeGreaterThan(0);
  expect(maxErr, label).toBeLessThanOrEqual(2e-5 * Math.max(1, maxRef));
}

/** Compares one computation on native and cpu, and checks native did not fall back. */
async function compare(label: string, shapes: number[][], fn: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[], kernel?: string) {
  const data = shapes.map((shape) => ({ values: randn(shape), shape }));
  const before = kernel ? (fallbackCounts[kernel] ?? 0) : 0;
  const nat = await on(NATIVE_BACKEND, data, fn);
  if (kernel) expect(fallbackCounts[kernel] ?? 0, `${label}: ${kernel} fell back to cpu`).toBe(before);
  const ref = await on('cpu', data, fn);
  nat.forEach((n, i) => expectClose(n, ref[i]!, `${label} [${i}]`));
}

describe.skipIf(skip)('native backend kernels vs cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true); // the engine then throws on kernels that leak tensors
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  it('sgemm from both libraries matches a JS product, all transposes, offsets honoured', () => {
    const [m, n, k] = [37, 29, 41];
    for (const library of [0, 1] as const) {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const a = randn([m * k + 3]);
        const b = randn([k * n + 5]);
        const c = new Float32Array(m * n + 2).fill(7);
        addon!.sgemm(library, ta, tb, m, n, k, a, 3, b, 5, c, 2);
        const ref = new Float64Array(m * n);
        for (let i = 0; i < m; i++)
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) s += a[3 + (ta ? p * m + i : i * k + p)]! * b[5 + (tb ? j * k + p : p * n + j)]!;
            ref[i * n + j] = s;
          }
        expect(c.slice(0, 2)).toEqual(new Float32Array([7, 7]));
        expectClose({ values: c.subarray(2), shape: [m, n] }, { values: ref, shape: [m, n] }, `lib ${library} ${ta}${tb}`);
      }
    }
  });

  it('rejects buffers smaller than the shape instead of reading past them', () => {
    expect(() => addon!.sgemm(0, false, false, 4, 4, 4, new Float32Array(15), 0, new Float32Array(16), 0, new Float32Array(16), 0)).toThrow(
      /a: buffer holds 15 floats, the shape needs 16/,
    );
    expect(() => addon!.conv(0, new Int32Array(19).fill(1), 0, new Float32Array(0), new Float32Array(1), null, new Float32Array(1))).toThrow(/x: buffer/);
  });

  const matmuls: [string, number[], number[], boolean, boolean][] = [
    ['2-D odd', [37, 41], [41, 29], false, false],
    ['2-D tA', [41, 37], [41, 29], true, false],
    ['2-D tB', [37, 41], [29, 41], false, true],
    ['2-D tA tB', [41, 37], [29, 41], true, true],
    ['2-D large (oneDNN sgemm)', [130, 70], [70, 90], false, false],
    ['batched × shared 2-D weight', [3, 5, 7], [7, 4], false, false],
    ['batched tA × shared weight', [3, 7, 5], [7, 4], true, false],
    ['2-D × batched', [5, 7], [3, 7, 4], false, false],
    ['batched both, tB', [2, 3, 6, 8], [2, 3, 5, 8], false, true],
    ['attention-like 4-D', [2, 4, 33, 8], [2, 4, 17, 8], false, true],
    ['rank 3 × rank 4 suffix broadcast', [4, 5, 6], [2, 4, 6, 3], false, false],
  ];
  for (const [label, as, bs, ta, tb] of matmuls) {
    it(`BatchMatMul ${label}`, () => compare(label, [as, bs], (a, b) => tf.matMul(a!, b!, ta, tb), 'BatchMatMul'));
  }

  it('BatchMatMul with mutually broadcast batch dims matches a JS loop (tfjs cpu gets this wrong)', async () => {
    const [aS, bS] = [[2, 1, 3, 5], [1, 4, 5, 2]];
    const a = randn(aS);
    const b = randn(bS);
    const [nat] = await on(NATIVE_BACKEND, [{ values: a, shape: aS }, { values: b, shape: bS }], (x, y) => tf.matMul(x!, y!));
    const ref = new Float64Array(2 * 4 * 3 * 2);
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < 4; j++)
        for (let r = 0; r < 3; r++)
          for (let c = 0; c < 2; c++) {
            let s = 0;
            for (let p = 0; p < 5; p++) s += a[(i * 3 + r) * 5 + p]! * b[(j * 5 + p) * 2 + c]!;
            ref[((i * 4 + j) * 3 + r) * 2 + c] = s;
          }
    expectClose(nat!, { values: ref, shape: [2, 4, 3, 2] }, 'mutual broadcast');
  });

  for (const activation of ['linear', 'relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu'] as const) {
    it(`_FusedMatMul bias + ${activation} (batched, transposed B)`, () =>
      compare(
        activation,
        [[2, 9, 11], [2, 7, 11], [7]],
        (a, b, bias) => tf.fused.matMul({ a: a!, b: b!, transposeB: true, bias, activation, leakyreluAlpha: 0.3 }),
        '_FusedMatMul',
      ));
  }

  it('_FusedMatMul with a bias per row and with prelu fall back to cpu and stay correct', async () => {
    await compare('row bias', [[9, 11], [11, 7], [9, 1]], (a, b, bias) => tf.fused.matMul({ a: a!, b: b!, bias, activation: 'relu' }));
    await compare('prelu', [[9, 11], [11, 7], [7]], (a, b, w) => tf.fused.matMul({ a: a!, b: b!, activation: 'prelu', preluActivationWeights: w }));
  });

  interface ConvCase {
    label: string;
    x: number[];
    w: number[];
    strides: number | [number, number];
    pad: Pad;
    dilations?: number | [number, number];
    rounding?: 'floor' | 'round' | 'ceil';
  }
  const convs: ConvCase[] = [
    { label: '3×3 s1 same', x: [2, 9, 7, 5], w: [3, 3, 5, 6], strides: 1, pad: 'same' },
    { label: '3×3 s2 same even', x: [2, 8, 10, 3], w: [3, 3, 3, 4], strides: 2, pad: 'same' },
    { label: '3×3 s2 valid even (leftover row)', x: [1, 8, 8, 3], w: [3, 3, 3, 2], strides: 2, pad: 'valid' },
    { label: '3×3 s2 valid odd', x: [2, 7, 9, 2], w: [3, 3, 2, 3], strides: 2, pad: 'valid' },
    { label: '4×3 strides [2,3] explicit', x: [1, 9, 8, 2], w: [4, 3, 2, 3], strides: [2, 3], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
    { label: 'numeric pad 1', x: [2, 6, 5, 3], w: [3, 3, 3, 4], strides: 1, pad: 1 },
    { label: 'numeric pad 1, s2, ceil', x: [1, 6, 6, 2], w: [3, 3, 2, 2], strides: 2, pad: 1, rounding: 'ceil' },
    { label: '1×1 s2', x: [1, 5, 5, 3], w: [1, 1, 3, 2], strides: 2, pad: 'valid' },
    { label: '5×5 same, 16→24 channels', x: [2, 12, 12, 16], w: [5, 5, 16, 24], strides: 1, pad: 'same' },
  ];
  for (const c of convs) {
    it(`Conv2D forward + dx + dW: ${c.label}`, async () => {
      await compare(c.label, [c.x, c.w], (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad, 'NHWC', 1, c.rounding), 'Conv2D');
      const loss = (x: tf.Tensor, w: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad, 'NHWC', 1, c.rounding).square().sum();
      if (c.rounding) return; // the conv2d gradient does not forward dimRoundingMode (tfjs), so dx/dW are not defined here
      await compare(`${c.label} grads`, [c.x, c.w], (x, w) => tf.grads(loss)([x!, w!]), 'Conv2DBackpropFilter');
    });
  }

  it('Conv2D dilation 2 (forward only: tfjs has no dilated gradient)', () =>
    compare('dilated', [[2, 11, 9, 3], [3, 3, 3, 4]], (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same', 'NHWC', 2), 'Conv2D'));

  it('Conv2D NCHW forward and backprops through runKernel', async () => {
    const attrs = { strides: [2, 1], pad: 'same', dataFormat: 'NCHW', dilations: 1 };
    await compare('nchw fwd', [[2, 3, 9, 8], [3, 3, 3, 5]], (x, w) => tf.engine().runKernel('Conv2D', { x: x!, filter: w! }, attrs) as tf.Tensor, 'Conv2D');
    await compare(
      'nchw dx',
      [[2, 5, 5, 8], [3, 3, 3, 5]],
      (dy, w) => tf.engine().runKernel('Conv2DBackpropInput', { dy: dy!, filter: w! }, { ...attrs, inputShape: [2, 3, 9, 8] }) as tf.Tensor,
      'Conv2DBackpropInput',
    );
    await compare(
      'nchw dW',
      [[2, 3, 9, 8], [2, 5, 5, 8]],
      (x, dy) => tf.engine().runKernel('Conv2DBackpropFilter', { x: x!, dy: dy! }, { ...attrs, filterShape: [3, 3, 3, 5] }) as tf.Tensor,
      'Conv2DBackpropFilter',
    );
  });

  it('conv2dTranspose (Conv2DBackpropInput) with stride 2', () =>
    compare('transpose', [[2, 5, 4, 6], [3, 3, 3, 6]], (x, w) => tf.conv2dTranspose(x as tf.Tensor4D, w as tf.Tensor4D, [2, 10, 8, 3], 2, 'same'), 'Conv2DBackpropInput'));

  for (const activation of ['linear', 'relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu'] as const) {
    it(`FusedConv2D bias + ${activation}`, () =>
      compare(
        activation,
        [[2, 7, 6, 4], [3, 3, 4, 5], [5]],
        (x, w, bias) => tf.fused.conv2d({ x: x as tf.Tensor4D, filter: w as tf.Tensor4D, strides: 1, pad: 'same', bias, activation, leakyreluAlpha: 0.1 }),
        'FusedConv2D',
      ));
  }

  it('ResizeBilinearGrad carries the corrected kernel (half-pixel, non-square)', async () => {
    const f = (x: tf.Tensor) => tf.grad((y: tf.Tensor) => tf.image.resizeBilinear(y as tf.Tensor4D, [6, 10], false, true).square().sum())(x);
    const data = [{ values: randn([2, 3, 5, 2]), shape: [2, 3, 5, 2] }];
    const [nat] = await on(NATIVE_BACKEND, data, (x) => f(x!));
    const [ref] = await on('cpu', data, (x) => f(x!));
    expectClose(nat!, ref!, 'resize grad');
  });
});

describe.skipIf(skip)('native memory-bound kernels vs cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true);
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  const binaries: [string, number[], number[]][] = [
    ['same shape', [3, 5, 7], [3, 5, 7]],
    ['row vector', [4, 6, 9], [9]],
    ['per-batch scalar [B,1,1,C]', [2, 5, 3, 8], [2, 1, 1, 8]],
    ['mutual broadcast', [3, 1, 5], [1, 6, 1]],
    ['left operand broadcast', [1, 11], [8, 11]],
  ];
  const ops: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor][] = [
    ['Add', (a, b) => tf.add(a, b)],
    ['Sub', (a, b) => tf.sub(a, b)],
    ['Multiply', (a, b) => tf.mul(a, b)],
    ['RealDiv', (a, b) => tf.div(a, b)],
  ];
  for (const [opName, f] of ops) {
    for (const [label, as, bs] of binaries) {
      it(`${opName} ${label}`, () => compare(`${opName} ${label}`, [as, bs], (a, b) => f(a!, b!), opName));
    }
  }

  it('Softmax over the last axis (attention scores)', () => compare('softmax', [[2, 3, 17, 33]], (x) => tf.softmax(x!.mul(4)), 'Softmax'));

  it('Slice of an inner box and SplitV along the channel axis', async () => {
    await compare('slice', [[3, 7, 6, 5]], (x) => tf.slice(x!, [1, 2, 0, 1], [2, 4, 6, 3]), 'Slice');
    await compare('split', [[2, 4, 5, 12]], (x) => tf.split(x!, [5, 4, 3], 3), 'SplitV');
    await compare('split middle axis', [[3, 8, 7]], (x) => tf.split(x!, 2, 1), 'SplitV');
  });
});

describe.skipIf(skip)('native reductions vs cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true);
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  // Axis sets of a training step (bias and FiLM gradients, GroupNorm statistics, losses) plus
  // size-1 dims, negative axes and inputs big enough for the multi-threaded path.
  const cases: [string, number[], number | number[] | undefined, boolean][] = [
    ['bias grad [N,H,W] of NHWC', [16, 9, 9, 5], [0, 1, 2], false],
    ['alternating axes, keepDims', [3, 4, 5, 6], [1, 3], true],
    ['GroupNorm statistics', [2, 6, 6, 4, 3], [1, 2, 4], true],
    ['last axis', [7, 33], -1, false],
    ['first axis', [7, 33], 0, false],
    ['every axis', [5, 7, 9], undefined, false],
    ['size-1 dims around the axis', [1, 5, 1, 7], [1, 2], false],
    ['threaded, inner kept', [4, 64, 64, 16], [0, 1, 2], false],
    ['threaded, inner reduced', [64, 4096], 1, true],
    ['threaded, FiLM grad [H,W]', [16, 32, 32, 24], [1, 2], false],
  ];
  const ops: [string, (x: tf.Tensor, axis: number | number[] | undefined, keep: boolean) => tf.Tensor][] = [
    ['Sum', (x, a, k) => tf.sum(x, a, k)],
    ['Mean', (x, a, k) => tf.mean(x, a, k)],
    ['Max', (x, a, k) => tf.max(x, a, k)],
    ['Min', (x, a, k) => tf.min(x, a, k)],
    // Values near 1 keep products of thousands of factors finite.
    ['Prod', (x, a, k) => tf.prod(x.mul(0.01).add(1), a, k)],
  ];
  for (const [opName, f] of ops) {
    for (const [label, shape, axis, keep] of cases) {
      it(`${opName} ${label}`, () => compare(`${opName} ${label}`, [shape], (x) => f(x!, axis, keep), opName));
    }
  }

  it('Max/Min let NaN win and keep ±Infinity, as tfjs does', () => {
    const x = new Float32Array([1, NaN, 3, -Infinity, 2, 5, Infinity, 0]);
    const shape = Int32Array.from([2, 4]);
    const out = new Float32Array(2);
    addon!.reduce(2, x, shape, Int32Array.from([0, 1]), out);
    expect([...out]).toEqual([NaN, Infinity]);
    addon!.reduce(3, x, shape, Int32Array.from([0, 1]), out);
    expect([...out]).toEqual([NaN, 0]);
    const cols = new Float32Array(4);
    addon!.reduce(3, x, shape, Int32Array.from([1, 0]), cols);
    expect([...cols]).toEqual([1, NaN, 3, -Infinity]);
  });

  it('int32 and bool reductions keep tfjs dtypes (cpu fallback)', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const i = tf.tensor([[1, 2], [3, 4]], [2, 2], 'int32');
    const b = tf.tensor([[1, 0], [1, 1]], [2, 2], 'bool');
    const [si, sb] = [tf.sum(i, 0), tf.sum(b, 1)];
    expect(si.dtype).toBe('int32');
    expect(sb.dtype).toBe('int32');
    expect([...si.dataSync()]).toEqual([4, 6]);
    expect([...sb.dataSync()]).toEqual([1, 2]);
    tf.dispose([i, b, si, sb]);
  });

  it('rejects a mask that does not match the rank', () => {
    expect(() => addon!.reduce(0, new Float32Array(6), Int32Array.from([2, 3]), Int32Array.from([1]), new Float32Array(3))).toThrow(/one entry per dim/);
  });
});

describe.skipIf(skip)('native fused GroupNorm/LayerNorm vs the tfjs composite on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  // Forward values and the gradient of Σ y·w (w random, so dy is not uniform) w.r.t. x.
  const normAndGrad = (norm: (x: tf.Tensor) => tf.Tensor) => (x: tf.Tensor, w: tf.Tensor) => {
    const y = norm(x);
    const dx = tf.grad((xi: tf.Tensor) => norm(xi).mul(w).sum())(x);
    return [y, dx];
  };
  const cases: [string, number[], (x: tf.Tensor) => tf.Tensor][] = [
    ['GroupNorm 4 groups NHWC', [3, 5, 7, 12], (x) => new GroupNorm(4, 12, 1e-5, false).forward(x)],
    ['GroupNorm 8 groups, threaded', [16, 32, 32, 32], (x) => new GroupNorm(8, 32, 1e-5, false).forward(x)],
    ['GroupNorm one channel per group', [2, 3, 3, 6], (x) => new GroupNorm(6, 6, 1e-5, false).forward(x)],
    ['LayerNorm tokens', [2, 9, 20], (x) => new LayerNorm(20, 1e-6, false).forward(x)],
    ['LayerNorm many rows, threaded', [64, 33, 24], (x) => new LayerNorm(24, 1e-6, false).forward(x)],
    ['GroupNorm affine', [2, 4, 4, 8], (x) => {
      const gn = new GroupNorm(2, 8);
      gn.weight!.assign(tf.linspace(0.5, 2, 8));
      gn.bias!.assign(tf.linspace(-1, 1, 8));
      return gn.forward(x);
    }],
  ];
  for (const [label, shape, norm] of cases) {
    it(label, async () => {
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.groupNorm)).toBe(true);
      await compare(label, [shape, shape], normAndGrad(norm));
    });
  }

  it('the fused path leaks no tensors through forward and backward', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const gn = new GroupNorm(2, 8, 1e-5, false);
    const x = tf.randomNormal([2, 4, 4, 8]);
    const probe = tf.variable(tf.scalar(1.5));
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => gn.forward(x.mul(probe)).square().mean() as tf.Scalar, [probe]);
    expect(grads[probe.name]!.dataSync()[0]).toBeCloseTo(0, 4); // normalised output is scale-invariant
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, probe]);
  });

  it('the composite is used where the backend has no fused kernel', async () => {
    await tf.setBackend('cpu');
    expect(hasFusedKernel(FUSED_KERNELS.groupNorm)).toBe(false);
  });
});

describe.skipIf(skip)('native fused activations vs the tfjs composites on cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });
  const fns: [string, Activation][] = [
    ['silu', silu],
    ['gelu_tanh', geluTanh],
    ['gelu_erf', geluErf],
    ['quick_gelu', quickGelu],
  ];
  for (const [name, f] of fns) {
    for (const shape of [[3, 17, 19], [16, 32, 32, 8]]) {
      it(`${name} value and gradient, [${shape}]`, async () => {
        await tf.setBackend(NATIVE_BACKEND);
        expect(hasFusedKernel(FUSED_KERNELS.activation)).toBe(true);
        // ×3 spreads the inputs into both tails; Σ f(x)·w gives a non-uniform dy.
        await compare(name, [shape, shape], (x, w) => {
          const xs = x!.mul(3);
          return [f(xs), tf.grad((xi: tf.Tensor) => f(xi).mul(w!).sum())(xs)];
        });
      });
    }
  }
});
