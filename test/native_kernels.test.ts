import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { fallbackCounts, sizeOf } from '../src/backend/native/storage.js';
import { resizeBilinearGradValues } from '../src/backend/resize_bilinear_grad.js';
import { Rng } from '../src/util/rng.js';
import { FUSED_KERNELS, hasFusedKernel } from '../src/backend/fused.js';
import { nativeBuffers } from '../src/backend/native/buffer_pool.js';
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
  if (expected.values.length > 0) expect(maxRef, `${label}: reference is all zeros`).toBeGreaterThan(0);
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
    // Recycled outputs come back full of NaN, so a kernel that leaves part of its output unwritten fails here.
    nativeBuffers.poison = true;
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

describe.skipIf(skip)('native elementwise maps, comparisons and Select vs cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true);
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  type Values = Float32Array | Uint8Array | Int32Array;
  interface Input {
    values: Float32Array | Uint8Array;
    shape: number[];
    dtype?: 'float32' | 'bool';
  }
  interface Output {
    values: Values;
    shape: number[];
    dtype: tf.DataType;
  }

  /** The values where tfjs's semantics have cases: NaN, ±Inf, ±0, half-way roundings, exp's range ends. */
  const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 0.5, -0.5, 1.5, -2.5, 6, 7, 100, -100, -90, 1e-30, -1e-30, 1e30, 3e-3];

  /** Normal(0, 2) data of `shape` with SPECIAL spliced in at spread-out positions. */
  function withSpecials(shape: number[]): Input {
    const values = rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), 0, 2);
    const stride = Math.max(1, Math.floor(values.length / SPECIAL.length));
    SPECIAL.forEach((v, i) => {
      if (i * stride + 1 < values.length) values[i * stride + 1] = v;
    });
    return { values, shape };
  }

  async function runOn(backend: string, inputs: Input[], fn: (...xs: tf.Tensor[]) => tf.Tensor): Promise<Output> {
    await tf.setBackend(backend);
    const xs = inputs.map((d) => tf.tensor(d.values, d.shape, d.dtype ?? 'float32'));
    const y = tf.tidy(() => fn(...xs));
    const out = { values: y.dataSync() as Values, shape: y.shape, dtype: y.dtype };
    tf.dispose([...xs, y]);
    return out;
  }

  /**
   * Element by element: NaN where the reference has NaN, the same infinities, and finite values
   * equal (bit for bit, sign of zero included, when `tolerance` is 0) or within tolerance·(|ref| + 0.1).
   */
  function expectSameValues(actual: Output, expected: Output, label: string, tolerance: number) {
    expect(actual.shape, label).toEqual(expected.shape);
    expect(actual.dtype, label).toBe(expected.dtype);
    expect(actual.values.constructor, label).toBe(expected.values.constructor);
    for (let i = 0; i < expected.values.length; i++) {
      const [a, e] = [actual.values[i]!, expected.values[i]!];
      const where = `${label} at ${i}: got ${a}, want ${e}`;
      if (Number.isNaN(e)) expect(Number.isNaN(a), where).toBe(true);
      else if (tolerance === 0 || !Number.isFinite(e)) expect(Object.is(a, e), where).toBe(true);
      else expect(Math.abs(a - e), where).toBeLessThanOrEqual(tolerance * (Math.abs(e) + 0.1));
    }
  }

  /** Runs on native (asserting no fallback to the cpu kernel) and on cpu, and compares. */
  async function compareValues(label: string, inputs: Input[], fn: (...xs: tf.Tensor[]) => tf.Tensor, kernel: string, tolerance: number) {
    const before = fallbackCounts[kernel] ?? 0;
    const nat = await runOn(NATIVE_BACKEND, inputs, fn);
    expect(fallbackCounts[kernel] ?? 0, `${label}: ${kernel} fell back to cpu`).toBe(before);
    const ref = await runOn('cpu', inputs, fn);
    expectSameValues(nat, ref, label, tolerance);
    return nat;
  }

  // Exact: one correctly rounded operation (or done in double, as tfjs does). Approximate: the
  // vectorized exp family (≤ 4.3 ulp) and float32 libm against tfjs's float64 Math functions.
  const exactMaps: [string, (x: tf.Tensor) => tf.Tensor][] = [
    ['Relu', (x) => tf.relu(x)],
    ['Relu6', (x) => tf.relu6(x)],
    ['LeakyRelu', (x) => tf.leakyRelu(x, 0.2)],
    ['Sqrt', (x) => tf.sqrt(x)],
    ['Rsqrt', (x) => tf.rsqrt(x)],
    ['Square', (x) => tf.square(x)],
    ['Neg', (x) => tf.neg(x)],
    ['Abs', (x) => tf.abs(x)],
    ['Step', (x) => tf.step(x, 0.3)],
    ['Reciprocal', (x) => tf.reciprocal(x)],
    ['Sign', (x) => tf.sign(x)],
    ['Floor', (x) => tf.floor(x)],
    ['Ceil', (x) => tf.ceil(x)],
    ['Round', (x) => tf.round(x)],
    ['ClipByValue', (x) => tf.clipByValue(x, -0.75, 1.25)],
  ];
  const approximateMaps: [string, (x: tf.Tensor) => tf.Tensor][] = [
    ['Elu', (x) => tf.elu(x)],
    ['Selu', (x) => tf.selu(x)],
    ['Sigmoid', (x) => tf.sigmoid(x)],
    ['Tanh', (x) => tf.tanh(x)],
    ['Exp', (x) => tf.exp(x)],
    ['Expm1', (x) => tf.expm1(x)],
    ['Log', (x) => tf.log(x)],
    ['Log1p', (x) => tf.log1p(x)],
    ['Softplus', (x) => tf.softplus(x)],
    ['Sin', (x) => tf.sin(x)],
    ['Cos', (x) => tf.cos(x)],
    ['Erf', (x) => tf.erf(x)],
  ];
  // Both evaluate Abramowitz–Stegun 7.1.26 (itself only 1.5e-7 from erf); near 0 its 1 − p·e^(−x²)
  // turns the float32 exp's last-bit error into an absolute one, up to ~2e-7.
  const mapTolerance = (kernel: string) => (kernel === 'Erf' ? 4e-6 : 2e-6);
  for (const [kernel, f] of exactMaps) {
    it(`${kernel} equals the cpu kernel bit for bit, NaN/±Inf/±0 included`, async () => {
      await compareValues(kernel, [withSpecials([3, 7, 11])], (x) => f(x!), kernel, 0);
      await compareValues(`${kernel} large`, [withSpecials([5, 97, 71])], (x) => f(x!), kernel, 0); // parallel path
    });
  }
  for (const [kernel, f] of approximateMaps) {
    it(`${kernel} matches the cpu kernel within ${mapTolerance(kernel)}, NaN/±Inf/±0 included`, async () => {
      await compareValues(kernel, [withSpecials([3, 7, 11])], (x) => f(x!), kernel, mapTolerance(kernel));
      await compareValues(`${kernel} large`, [withSpecials([5, 97, 71])], (x) => f(x!), kernel, mapTolerance(kernel));
    });
  }

  it('activations keep their exact values at the edges (plain JS reference)', async () => {
    const values = new Float32Array([-0, 0, NaN, -Infinity, Infinity, -1e-20, 1e-20, -200, 200, 0.25]);
    const x = [{ values: new Float32Array(64).fill(1).map((_, i) => values[i % values.length]!), shape: [64] }];
    const relu = await runOn(NATIVE_BACKEND, x, (t) => tf.relu(t!));
    expect(Object.is(relu.values[0], 0), 'relu(-0) is +0').toBe(true);
    expect(Number.isNaN(relu.values[2]!), 'relu(NaN) is NaN').toBe(true);
    const sig = await runOn(NATIVE_BACKEND, x, (t) => tf.sigmoid(t!));
    expect([sig.values[3], sig.values[4], sig.values[7], sig.values[8]]).toEqual([0, 1, 0, 1]);
    expect(sig.values[5]).toBe(0.5);
    const tanh = await runOn(NATIVE_BACKEND, x, (t) => tf.tanh(t!));
    expect(Object.is(tanh.values[0], -0)).toBe(true);
    expect([tanh.values[3], tanh.values[4], tanh.values[5], tanh.values[6]]).toEqual([-1, 1, Math.fround(-1e-20), Math.fround(1e-20)]);
    const step = await runOn(NATIVE_BACKEND, x, (t) => tf.step(t!, -2));
    expect([step.values[0], step.values[1], step.values[3], step.values[4], step.values[6]]).toEqual([-2, -2, -2, 1, 1]);
    expect(Number.isNaN(step.values[2]!)).toBe(true);
    const exp = await runOn(NATIVE_BACKEND, x, (t) => tf.exp(t!));
    expect([exp.values[3], exp.values[4], exp.values[7], exp.values[8]]).toEqual([0, Infinity, 0, Infinity]);
  });

  it('unary maps on int32 tensors and tiny tensors fall back to the cpu kernel and stay correct', async () => {
    const before = fallbackCounts.Abs ?? 0;
    await tf.setBackend(NATIVE_BACKEND);
    const y = tf.abs(tf.tensor1d([-3, 4, -5], 'int32'));
    expect(y.dtype).toBe('int32');
    expect(Array.from(y.dataSync())).toEqual([3, 4, 5]);
    y.dispose();
    expect(fallbackCounts.Abs).toBe(before + 1);
    const small = tf.sigmoid(tf.tensor1d([0, 2]));
    expect(Array.from(small.dataSync())).toEqual([0.5, Math.fround(1 / (1 + Math.exp(-2)))]);
    small.dispose();
  });

  const binaryShapes: [string, number[], number[]][] = [
    ['same shape', [3, 5, 7], [3, 5, 7]],
    ['scalar operand', [4, 6, 9], []],
    ['row vector', [4, 6, 9], [9]],
    ['mutual broadcast', [3, 1, 5], [1, 6, 1]],
    ['left operand broadcast', [1, 11], [8, 11]],
  ];
  const arithmetic: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, number][] = [
    ['Maximum', (a, b) => tf.maximum(a, b), 0],
    ['Minimum', (a, b) => tf.minimum(a, b), 0],
    ['SquaredDifference', (a, b) => tf.squaredDifference(a, b), 0],
    ['Pow', (a, b) => tf.pow(a, b), 1e-6],
  ];
  const comparisons: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor][] = [
    ['Greater', (a, b) => tf.greater(a, b)],
    ['GreaterEqual', (a, b) => tf.greaterEqual(a, b)],
    ['Less', (a, b) => tf.less(a, b)],
    ['LessEqual', (a, b) => tf.lessEqual(a, b)],
    ['Equal', (a, b) => tf.equal(a, b)],
    ['NotEqual', (a, b) => tf.notEqual(a, b)],
  ];
  /** Operands sharing values often (so ==, >= and ±0 ties occur) with SPECIAL values mixed in. */
  function binaryInputs(as: number[], bs: number[]): Input[] {
    const tie = (d: Input) => {
      d.values.forEach((v, i) => {
        if (i % 3 === 0) d.values[i] = Math.round(v);
      });
      return d;
    };
    return [tie(withSpecials(as)), tie(withSpecials(bs.length ? bs : [1]))].map((d, i) => (i === 1 && bs.length === 0 ? { ...d, shape: [] } : d));
  }
  for (const [kernel, f, tolerance] of [...arithmetic, ...comparisons.map(([k, g]) => [k, g, 0] as const)]) {
    for (const [label, as, bs] of binaryShapes) {
      it(`${kernel} ${label}`, () => compareValues(`${kernel} ${label}`, binaryInputs(as, bs), (a, b) => f(a!, b!), kernel, tolerance));
    }
  }

  it('comparisons produce bool tensors stored as 0/1 bytes and handle NaN like JS', async () => {
    const a = { values: new Float32Array(64).fill(1).map((_, i) => [NaN, 0, -0, 1, Infinity][i % 5]!), shape: [64] };
    const b = { values: new Float32Array(64).fill(1).map((_, i) => [NaN, -0, 0, NaN, Infinity][i % 5]!), shape: [64] };
    const eq = await compareValues('== edges', [a, b], (x, y) => tf.equal(x!, y!), 'Equal', 0);
    expect(eq.dtype).toBe('bool');
    expect(eq.values).toBeInstanceOf(Uint8Array);
    expect(Array.from(eq.values.slice(0, 5))).toEqual([0, 1, 1, 0, 1]);
    const ne = await compareValues('!= edges', [a, b], (x, y) => tf.notEqual(x!, y!), 'NotEqual', 0);
    expect(Array.from(ne.values.slice(0, 5))).toEqual([1, 0, 0, 1, 0]);
    const max = await compareValues('max edges', [a, b], (x, y) => tf.maximum(x!, y!), 'Maximum', 0);
    expect(Object.is(max.values[1], 0) && Object.is(max.values[2], 0), 'max(0, -0) is +0 either way round').toBe(true);
    const min = await compareValues('min edges', [a, b], (x, y) => tf.minimum(x!, y!), 'Minimum', 0);
    expect(Object.is(min.values[1], -0) && Object.is(min.values[2], -0), 'min(0, -0) is -0 either way round').toBe(true);
  });

  it('Pow follows Math.pow where C pow differs (1^NaN, (±1)^±Inf)', async () => {
    const pairs = [[1, NaN], [1, Infinity], [-1, -Infinity], [NaN, 0], [-8, 1 / 3], [0, -1], [-0, -3], [2, 0.5]];
    const a = { values: new Float32Array(64).map((_, i) => pairs[i % pairs.length]![0]!), shape: [64] };
    const b = { values: new Float32Array(64).map((_, i) => pairs[i % pairs.length]![1]!), shape: [64] };
    const p = await compareValues('pow edges', [a, b], (x, y) => tf.pow(x!, y!), 'Pow', 1e-6);
    expect(Array.from(p.values.slice(0, 8))).toEqual([NaN, NaN, NaN, 1, NaN, Infinity, -Infinity, Math.fround(Math.SQRT2)]);
  });

  it('Pow by a scalar 2 or 3 (the products fast path) equals Math.pow bit for bit', async () => {
    for (const exponent of [2, 3]) {
      const x = withSpecials([5, 9, 13]);
      const e = { values: new Float32Array([exponent]), shape: [] };
      await compareValues(`pow ${exponent}`, [x, e], (a, b) => tf.pow(a!, b!), 'Pow', 0);
    }
  });

  it('Select (tf.where) with a same-shape bool condition, and its gradient', async () => {
    const cond = (shape: number[]): Input => ({ values: Uint8Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => (rng.uniform() < 0.5 ? 1 : 0)), shape, dtype: 'bool' });
    const shape = [2, 9, 5, 3];
    await compareValues('where', [cond(shape), withSpecials(shape), withSpecials(shape)], (c, t, e) => tf.where(c!, t!, e!), 'Select', 0);
    await compareValues('where large', [cond([4, 130, 70]), withSpecials([4, 130, 70]), withSpecials([4, 130, 70])], (c, t, e) => tf.where(c!, t!, e!), 'Select', 0);
    await compareValues('where grad', [cond(shape), withSpecials(shape), withSpecials(shape)], (c, t, e) => tf.grad((u: tf.Tensor) => tf.where(c!, u, e!).mul(t!).sum())(t!), 'Select', 0);
  });

  it('Select with a rank-1 condition picks whole rows (TensorFlow semantics; plain JS reference)', async () => {
    const [rows, inner] = [6, 35];
    const c = Uint8Array.from([1, 0, 0, 1, 1, 0]);
    const t = randn([rows, 5, 7]);
    const e = randn([rows, 5, 7]);
    const before = fallbackCounts.Select ?? 0;
    const out = await runOn(
      NATIVE_BACKEND,
      [{ values: c, shape: [rows], dtype: 'bool' }, { values: t, shape: [rows, 5, 7] }, { values: e, shape: [rows, 5, 7] }],
      (cc, tt, ee) => tf.engine().runKernel('Select', { condition: cc!, t: tt!, e: ee! }) as tf.Tensor,
    );
    expect(fallbackCounts.Select ?? 0).toBe(before);
    const want = new Float32Array(rows * inner).map((_, i) => (c[Math.floor(i / inner)] ? t[i]! : e[i]!));
    expect(out.shape).toEqual([rows, 5, 7]);
    expect(Array.from(out.values)).toEqual(Array.from(want));
  });

  it('the addon rejects a float condition, unknown op codes and short buffers', () => {
    const f = new Float32Array(8);
    expect(() => addon!.select(f as unknown as Uint8Array, f, f, f)).toThrow(/condition: expected a Uint8Array/);
    expect(() => addon!.select(new Uint8Array(3), f, f, f)).toThrow(/condition length must divide/);
    expect(() => addon!.unary(99, f, f, 0, 0)).toThrow(/unknown op/);
    expect(() => addon!.unary(0, f, new Float32Array(4), 0, 0)).toThrow(/y: buffer holds 4/);
    const s = Int32Array.from([8]);
    expect(() => addon!.binary(8, f, s, f, s, new Float32Array(8), s)).toThrow(/out: expected a Uint8Array/);
    expect(() => addon!.binary(14, f, s, f, s, f, s)).toThrow(/unknown op/);
  });

  const activationGrads: [string, (x: tf.Tensor) => tf.Tensor, string][] = [
    ['leakyRelu', (x) => tf.leakyRelu(x, 0.2), 'Greater'],
    ['relu', (x) => tf.relu(x), 'Step'],
    ['sigmoid', (x) => tf.sigmoid(x), 'Sigmoid'],
    ['tanh', (x) => tf.tanh(x), 'Tanh'],
    ['elu', (x) => tf.elu(x), 'Elu'],
  ];
  // 1 − y² (tanh) and y(1 − y) (sigmoid) near saturation magnify a last-bit difference in y tenfold and more.
  for (const [name, f, kernel] of activationGrads) {
    it(`gradient of ${name} through tf.grad matches cpu`, () =>
      compareValues(
        `${name} grad`,
        [withSpecials([4, 9, 9, 8]).values.map((v) => (Number.isFinite(v) ? v : 0)), randn([4, 9, 9, 8])].map((values) => ({ values, shape: [4, 9, 9, 8] })),
        (x, w) => tf.grad((u: tf.Tensor) => f(u).mul(w!).sum())(x!),
        kernel,
        1e-5,
      ));
  }
});

function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  return permutations(n - 1).flatMap((p) => Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)]));
}

describe.skipIf(skip)('native data movement kernels vs cpu', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true);
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  for (const shape of [[3, 5, 7], [2, 3, 5, 4], [2, 3, 1, 4, 5], [3, 2, 4, 5, 3]]) {
    it(`Transpose: every permutation of rank ${shape.length} ${JSON.stringify(shape)}`, async () => {
      const perms = permutations(shape.length);
      expect(perms.length).toBe([1, 1, 2, 6, 24, 120][shape.length]);
      for (const perm of perms) await compare(`perm ${perm}`, [shape], (x) => tf.transpose(x!, perm), 'Transpose');
    });
  }

  it('Transpose: attention head split/merge, blocked tiles past 32, NHWC↔NCHW, parallel sizes', async () => {
    await compare('heads', [[2, 33, 4, 16]], (x) => tf.transpose(x!, [0, 2, 1, 3]), 'Transpose');
    await compare('2-D tiles', [[70, 45]], (x) => tf.transpose(x!), 'Transpose');
    await compare('batched tiles', [[3, 67, 41]], (x) => tf.transpose(x!, [0, 2, 1]), 'Transpose');
    await compare('NHWC→NCHW', [[2, 9, 11, 3]], (x) => tf.transpose(x!, [0, 3, 1, 2]), 'Transpose');
    await compare('big heads', [[16, 256, 4, 32]], (x) => tf.transpose(x!, [0, 2, 1, 3]), 'Transpose');
    await compare('big swap', [[16, 64, 300]], (x) => tf.transpose(x!, [0, 2, 1]), 'Transpose');
  });

  const concatSizes = [3, 0, 2, 5, 1];
  for (const axis of [0, 1, 2, -1]) {
    for (let n = 1; n <= 5; n++) {
      it(`Concat of ${n} pieces along axis ${axis} (sizes ${concatSizes.slice(0, n)})`, () => {
        const base = [4, 3, 5];
        const a = axis < 0 ? base.length + axis : axis;
        const shapes = concatSizes.slice(0, n).map((s) => base.map((d, i) => (i === a ? s : d)));
        return compare(`concat ${n} @${axis}`, shapes, (...xs) => tf.concat(xs, axis), 'Concat');
      });
    }
  }

  it('Concat of dense-block features (channels, parallel) and along the batch axis', async () => {
    const maps = [[16, 32, 32, 8], [16, 32, 32, 16], [16, 32, 32, 5]];
    await compare('channels', maps, (...xs) => tf.concat(xs, 3), 'Concat');
    await compare('batch', [[7, 64, 65], [9, 64, 65]], (a, b) => tf.concat([a!, b!], 0), 'Concat');
    await compare('one non-empty of three', [[2, 0, 3], [2, 4, 3], [2, 0, 3]], (...xs) => tf.concat(xs, 1), 'Concat');
  });

  const splits: [string, number[], number | number[], number][] = [
    ['uneven, last axis', [2, 4, 5, 12], [5, 4, 3], 3],
    ['uneven with an empty piece, axis 0', [9, 4, 3], [3, 0, 5, 1], 0],
    ['equal, middle axis', [3, 8, 7], 2, 1],
    ['-1 size, negative axis', [4, 3, 10], [2, -1, 3], -1],
    ['one piece', [3, 5], [5], 1],
    ['dense-block gradient (parallel)', [16, 32, 32, 40], [8, 16, 16], 3],
  ];
  for (const [label, shape, sizes, axis] of splits) {
    it(`SplitV ${label}`, () => compare(label, [shape], (x) => tf.split(x!, sizes, axis), 'SplitV'));
  }

  const tiles: [number[], number[]][] = [
    [[5], [3]],
    [[2, 3], [1, 4]],
    [[3, 1, 4], [2, 3, 1]],
    [[2, 1, 3, 2], [1, 2, 2, 3]],
    [[1, 4], [6, 1]],
    [[1, 64, 64, 2], [16, 1, 1, 1]],
  ];
  for (const [shape, reps] of tiles) {
    it(`Tile ${JSON.stringify(shape)} × ${JSON.stringify(reps)}`, () => compare('tile', [shape], (x) => tf.tile(x!, reps), 'Tile'));
  }

  const pads: [string, number[], [number, number][], number][] = [
    ['conv border', [2, 7, 6, 3], [[0, 0], [2, 2], [2, 2], [0, 0]], 0],
    ['VAE downsample (bottom/right)', [2, 8, 8, 4], [[0, 0], [0, 1], [0, 1], [0, 0]], 0],
    ['every dim, constant 1.5', [2, 3, 4], [[1, 2], [0, 3], [2, 1]], 1.5],
    ['rank 1', [7], [[3, 4]], -2],
    ['channels only', [3, 4, 5], [[0, 0], [0, 0], [2, 1]], 0],
    ['large (parallel)', [16, 32, 32, 16], [[0, 0], [1, 1], [1, 1], [0, 0]], 0],
  ];
  for (const [label, shape, paddings, value] of pads) {
    it(`PadV2 ${label}`, () => compare(label, [shape], (x) => tf.pad(x!, paddings, value), 'PadV2'));
  }

  it('gradients through concat, transpose, split, tile and pad match cpu', async () => {
    await compare(
      'concat grad',
      [[2, 5, 3], [2, 5, 4], [2, 5, 1]],
      (a, b, c) => tf.grads((x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => tf.concat([x, y, z], 2).square().sum())([a!, b!, c!]),
      'SplitV',
    );
    await compare('transpose grad', [[2, 3, 4, 5]], (x) => tf.grad((y: tf.Tensor) => tf.transpose(y, [2, 0, 3, 1]).square().mul(tf.range(1, 4)).sum())(x!), 'Transpose');
    await compare('split grad', [[3, 10]], (x) => tf.grad((y: tf.Tensor) => tf.split(y, [4, 6], 1)[1]!.square().sum())(x!), 'Concat');
    await compare('tile grad', [[3, 4]], (x) => tf.grad((y: tf.Tensor) => tf.tile(y, [2, 3]).square().sum())(x!), 'Tile');
    await compare('pad grad', [[2, 5, 4, 3]], (x) => tf.grad((y: tf.Tensor) => tf.pad(y, [[0, 0], [1, 2], [2, 1], [0, 0]]).square().sum())(x!), 'PadV2');
  });

  it('rejects inconsistent pieces instead of reading past them', () => {
    expect(() => addon!.concat([new Float32Array(6), new Float32Array(5)], Int32Array.from([3, 3]), 2, new Float32Array(12))).toThrow(/buffer holds 5 floats/);
    expect(() => addon!.transpose(new Float32Array(6), Int32Array.from([2, 3]), Int32Array.from([0, 0]), new Float32Array(6))).toThrow(/permutation/);
    expect(() => addon!.splitV(new Float32Array(5), Int32Array.from([3, 3]), 1, [new Float32Array(3), new Float32Array(3)])).toThrow(/x: buffer/);
  });
});

/** dL/dx of tf.avgPool by scattering each output's gradient over its clipped window: the adjoint of tfjs's forward. */
function avgPoolGradReference(dy: Float32Array, xShape: number[], info: tf.backend_util.Conv2DInfo): Float64Array {
  const [batch, h, w, c] = xShape as [number, number, number, number];
  const dx = new Float64Array(batch * h * w * c);
  for (let b = 0; b < batch; b++)
    for (let oy = 0; oy < info.outHeight; oy++)
      for (let ox = 0; ox < info.outWidth; ox++) {
        const y0 = oy * info.strideHeight - info.padInfo.top;
        const x0 = ox * info.strideWidth - info.padInfo.left;
        const rows = [Math.max(0, y0), Math.min(h, y0 + info.filterHeight)] as const;
        const cols = [Math.max(0, x0), Math.min(w, x0 + info.filterWidth)] as const;
        const count = (rows[1] - rows[0]) * (cols[1] - cols[0]);
        for (let i = rows[0]; i < rows[1]; i++)
          for (let j = cols[0]; j < cols[1]; j++)
            for (let d = 0; d < c; d++) dx[((b * h + i) * w + j) * c + d]! += dy[((b * info.outHeight + oy) * info.outWidth + ox) * c + d]! / count;
      }
  return dx;
}

describe.skipIf(skip)('native pooling and resize kernels', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
    tf.env().set('IS_TEST', true);
  });
  afterAll(async () => {
    tf.env().set('IS_TEST', false);
    await tf.setBackend('cpu');
  });

  interface PoolCase {
    label: string;
    x: number[];
    f: number | [number, number];
    s: number | [number, number];
    pad: Pad;
    rounding?: 'floor' | 'round' | 'ceil';
    /** Some window is clipped by padding: there tfjs's cpu gradient is not the forward's adjoint. */
    clipped: boolean;
  }
  const pools: PoolCase[] = [
    { label: 'token grid 2×2 s2 valid', x: [2, 8, 8, 5], f: 2, s: 2, pad: 'valid', clipped: false },
    { label: '2×2 s2 valid, odd input (leftover row/col)', x: [2, 9, 7, 3], f: 2, s: 2, pad: 'valid', clipped: false },
    { label: '3×3 s1 valid', x: [1, 7, 6, 4], f: 3, s: 1, pad: 'valid', clipped: false },
    { label: '2×2 s2 same, even input (no padding)', x: [2, 8, 6, 3], f: 2, s: 2, pad: 'same', clipped: false },
    { label: '3×3 s1 same', x: [1, 9, 8, 4], f: 3, s: 1, pad: 'same', clipped: true },
    { label: '[3,2] strides [2,1] same', x: [2, 7, 9, 3], f: [3, 2], s: [2, 1], pad: 'same', clipped: true },
    { label: '3×3 s2 numeric pad 1', x: [1, 7, 7, 2], f: 3, s: 2, pad: 1, clipped: true },
    { label: '3×3 s2 explicit pad', x: [1, 8, 9, 2], f: 3, s: 2, pad: [[0, 0], [1, 0], [0, 2], [0, 0]], clipped: true },
    { label: '4×4 s4 valid, large (parallel)', x: [16, 32, 32, 16], f: 4, s: 4, pad: 'valid', clipped: false },
  ];
  for (const c of pools) {
    it(`AvgPool forward and gradient: ${c.label}`, async () => {
      const pool = (x: tf.Tensor) => tf.avgPool(x as tf.Tensor4D, c.f, c.s, c.pad as 'same', c.rounding);
      await compare(c.label, [c.x], pool, 'AvgPool');
      if (!c.clipped) {
        await compare(`${c.label} grad`, [c.x], (x) => tf.grad((y: tf.Tensor) => pool(y).square().sum())(x!), 'AvgPoolGrad');
        return;
      }
      const info = tf.backend_util.computePool2DInfo(c.x as [number, number, number, number], c.f, c.s, 1, c.pad as 'same');
      const dy = randn([...info.outShape]);
      const before = fallbackCounts.AvgPoolGrad ?? 0;
      const [nat] = await on(NATIVE_BACKEND, [{ values: randn(c.x), shape: c.x }, { values: dy, shape: [...info.outShape] }], (x, g) =>
        tf.engine().runKernel('AvgPoolGrad', { dy: g!, input: x! }, { filterSize: c.f, strides: c.s, pad: c.pad }) as tf.Tensor,
      );
      expect(fallbackCounts.AvgPoolGrad ?? 0).toBe(before);
      expectClose(nat!, { values: avgPoolGradReference(dy, c.x, info), shape: c.x }, `${c.label} adjoint`);
    });
  }

  interface ResizeCase {
    label: string;
    x: number[];
    size: [number, number];
  }
  const resizes: ResizeCase[] = [
    { label: 'up, non-square', x: [2, 5, 7, 3], size: [9, 12] },
    { label: 'down', x: [2, 9, 11, 2], size: [4, 5] },
    { label: 'mixed up/down', x: [1, 6, 4, 2], size: [3, 10] },
    { label: 'to one row', x: [1, 5, 6, 2], size: [1, 3] },
    { label: 'same size', x: [1, 4, 5, 3], size: [4, 5] },
    { label: '2× stage upsample, large (parallel)', x: [16, 16, 16, 32], size: [32, 32] },
  ];
  const modes: [boolean, boolean][] = [
    [false, false],
    [true, false],
    [false, true],
  ];
  for (const r of resizes) {
    for (const [alignCorners, halfPixel] of modes) {
      const label = `${r.label} ${JSON.stringify(r.x)}→${r.size} alignCorners=${alignCorners} halfPixelCenters=${halfPixel}`;
      const outShape = [r.x[0]!, ...r.size, r.x[3]!];

      it(`ResizeBilinear forward, and its gradient vs the corrected JS kernel: ${label}`, async () => {
        const resize = (x: tf.Tensor) => tf.image.resizeBilinear(x as tf.Tensor4D, r.size, alignCorners, halfPixel);
        await compare(label, [r.x], resize, 'ResizeBilinear');
        const dy = randn(outShape);
        const before = fallbackCounts.ResizeBilinearGrad ?? 0;
        const [nat] = await on(NATIVE_BACKEND, [{ values: randn(r.x), shape: r.x }, { values: dy, shape: outShape }], (x, g) =>
          tf.engine().runKernel('ResizeBilinearGrad', { images: x!, dy: g! }, { alignCorners, halfPixelCenters: halfPixel }) as tf.Tensor,
        );
        expect(fallbackCounts.ResizeBilinearGrad ?? 0).toBe(before);
        const ref = resizeBilinearGradValues(dy, r.x, outShape, alignCorners, halfPixel, new Float32Array(sizeOf(r.x)));
        expectClose(nat!, { values: ref, shape: r.x }, `${label} grad`);
        await compare(`${label} tf.grad`, [r.x], (x) => tf.grad((y: tf.Tensor) => resize(y).square().sum())(x!), 'ResizeBilinearGrad');
      });

      it(`ResizeNearestNeighbor forward and its gradient (the forward's adjoint): ${label}`, async () => {
        const resize = (x: tf.Tensor) => tf.image.resizeNearestNeighbor(x as tf.Tensor4D, r.size, alignCorners, halfPixel);
        await compare(label, [r.x], resize, 'ResizeNearestNeighbor');
        // The adjoint from the cpu forward pass: resize an image of pixel indices to learn where each output reads.
        const [n, h, w, c] = r.x as [number, number, number, number];
        await tf.setBackend('cpu');
        const pixelIds = tf.tensor4d(Float32Array.from({ length: n * h * w }, (_, i) => i), [n, h, w, 1]);
        const source = tf.image.resizeNearestNeighbor(pixelIds, r.size, alignCorners, halfPixel).dataSync();
        pixelIds.dispose();
        const dy = randn(outShape);
        const ref = new Float64Array(sizeOf(r.x));
        source.forEach((p, o) => {
          for (let d = 0; d < c; d++) ref[p * c + d]! += dy[o * c + d]!;
        });
        const before = fallbackCounts.ResizeNearestNeighborGrad ?? 0;
        const [nat] = await on(NATIVE_BACKEND, [{ values: randn(r.x), shape: r.x }, { values: dy, shape: outShape }], (x, g) =>
          tf.engine().runKernel('ResizeNearestNeighborGrad', { images: x!, dy: g! }, { alignCorners, halfPixelCenters: halfPixel }) as tf.Tensor,
        );
        expect(fallbackCounts.ResizeNearestNeighborGrad ?? 0).toBe(before);
        expectClose(nat!, { values: ref, shape: r.x }, `${label} grad`);
      });
    }
  }

  it('rejects resize and pool buffers smaller than their shapes', () => {
    expect(() => addon!.resize(0, Int32Array.from([1, 4, 4, 2, 8, 8]), false, true, new Float32Array(31), new Float32Array(128))).toThrow(/x: buffer/);
    expect(() => addon!.pool(1, Int32Array.from([1, 4, 4, 2, 2, 2, 2, 2, 2, 2, 0, 0]), new Float32Array(8), new Float32Array(31))).toThrow(/dx: buffer/);
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
    ['threaded, inner kept, 40 channels (two 16-column blocks and a tail)', [8, 32, 32, 40], [0, 1, 2], false],
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

  it('sums are the same additions in the same order on every path: rows (8 double lanes, a fixed tree), columns (row order)', () => {
    const rng = new Rng(404);
    for (const n of [16, 32, 40, 48]) {
      // The AVX-512 row kernel takes widths that are multiples of 16, the plain loop the others.
      const rows = 300;
      const x = Float32Array.from({ length: rows * n }, () => rng.normal() * Math.exp(8 * rng.uniform()));
      const byRow = new Float32Array(rows);
      addon!.reduce(0, x, Int32Array.of(rows, n), Int32Array.of(0, 1), byRow);
      const byColumn = new Float32Array(n);
      addon!.reduce(0, x, Int32Array.of(rows, n), Int32Array.of(1, 0), byColumn);
      for (let r = 0; r < rows; r++) {
        const s = new Float64Array(8);
        let j = 0;
        for (; j + 8 <= n; j += 8) for (let k = 0; k < 8; k++) s[k] += x[r * n + j + k]!;
        let total = ((s[0]! + s[1]!) + (s[2]! + s[3]!)) + ((s[4]! + s[5]!) + (s[6]! + s[7]!));
        for (; j < n; j++) total += x[r * n + j]!;
        expect(byRow[r], `width ${n}, row ${r}`).toBe(Math.fround(total));
      }
      for (let c = 0; c < n; c++) {
        let total = 0;
        for (let r = 0; r < rows; r++) total += x[r * n + c]!;
        expect(byColumn[c], `width ${n}, column ${c}`).toBe(Math.fround(total));
      }
    }
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
    // One position per sample takes the row-blocked path (rows·groups = 52: six blocks of 8 and a short one).
    ['GroupNorm on 1×1 maps, 4 groups', [13, 1, 1, 12], (x) => new GroupNorm(4, 12, 1e-5, false).forward(x)],
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
