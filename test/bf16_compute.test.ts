import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { bf16Hardware, nativeBf16Active, setNativeBf16 } from '../src/backend/native/bf16.js';
import { hasBf16Copy, rescanFrozenWeights } from '../src/backend/native/bf16_operands.js';
import { fallbackCounts } from '../src/backend/native/storage.js';
import { chooseComputeMode, installComputePrecision, resetComputePrecision } from '../src/train/compute_precision.js';
import { computeCast } from '../src/nn/compute_cast.js';
import { Conv2d } from '../src/nn/conv.js';
import { convList } from '../src/nn/conv_list.js';
import { FUSED_KERNELS } from '../src/backend/fused.js';
import { Linear } from '../src/nn/linear.js';
import { Module } from '../src/nn/module.js';
import { Rng } from '../src/util/rng.js';

// The bf16 kernels against an independent computation: operands rounded to bf16 here, on the
// float32 bit pattern (round to nearest even), then products summed in float64. oneDNN accumulates
// in fp32, so each output may differ from that by a few fp32 ulps of Σ|a·b|; an fp32 product of the
// unrounded operands is ~2^-9 away, far outside the tolerance.

const load = loadNativeAddon();
const hardware = load.info ? bf16Hardware(load.info.dnnlCpuIsa) : null;

const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);
function roundBf16(x: number): number {
  asFloat[0] = x;
  bits[0] = (bits[0]! + 0x7fff + ((bits[0]! >>> 16) & 1)) & 0xffff0000;
  return asFloat[0]!;
}
const roundAll = (v: Float32Array) => Float64Array.from(v, roundBf16);

const rng = new Rng(1616);
const randn = (n: number) => rng.fillNormal(new Float32Array(n));

/** Σ of n products of bf16-rounded operands, Σ of their magnitudes, and Σ of the plain products: expectBf16Product's want, absSum and fp32. */
function productSums(n: number, rounded: (k: number) => number, plain: (k: number) => number): [number, number, number] {
  let s = 0, sa = 0, s32 = 0;
  for (let k = 0; k < n; k++) {
    const term = rounded(k);
    s += term;
    sa += Math.abs(term);
    s32 += plain(k);
  }
  return [s, sa, s32];
}

/** |got − want| ≤ 2^-20 · Σ|terms| per element (fp32 accumulation of bf16 products), and much closer to want than to the fp32 product. */
function expectBf16Product(got: Float32Array, want: Float64Array, absSum: Float64Array, fp32: Float64Array, label: string) {
  expect(got.length, label).toBe(want.length);
  let worst = 0;
  let fromFp32 = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    worst = Math.max(worst, err / (2 ** -20 * absSum[i]! + 1e-30));
    fromFp32 = Math.max(fromFp32, Math.abs(got[i]! - fp32[i]!));
  }
  expect(worst, `${label}: error in units of 2^-20·Σ|a·b|`).toBeLessThanOrEqual(1);
  // The kernel really multiplied bf16 operands: the unrounded fp32 product is far away.
  let maxRef = 0;
  for (const v of want) maxRef = Math.max(maxRef, Math.abs(v));
  expect(fromFp32, `${label}: indistinguishable from an fp32 product`).toBeGreaterThan(1e-4 * maxRef);
}

describe('choosing how precision: bf16 is computed', () => {
  const facts = { backend: NATIVE_BACKEND, bf16Hardware: 'AVX-512-BF16', forceEmulation: false };

  it('uses the oneDNN bf16 kernels on the native backend of a bf16 CPU', () => {
    const c = chooseComputeMode('bf16', facts);
    expect(c.mode).toBe('bf16-onednn');
    expect(c.line).toContain('AVX-512-BF16');
  });

  it('keeps the emulation where the CPU lacks bf16, on other backends, when asked, and for fp16', () => {
    const noHw = chooseComputeMode('bf16', { ...facts, bf16Hardware: null });
    expect(noHw.mode).toBe('bf16-emulated');
    expect(noHw.line).toContain('no AVX-512-BF16 or AMX');
    expect(chooseComputeMode('bf16', { ...facts, backend: 'cpu' }).line).toContain("backend 'cpu'");
    expect(chooseComputeMode('bf16', { ...facts, forceEmulation: true }).line).toContain('SCALEFORGE_BF16=emulate');
    expect(chooseComputeMode('fp16', facts).mode).toBe('fp16-emulated');
    expect(chooseComputeMode('fp32', facts).mode).toBe('fp32');
  });

  it('installs the exact rounding on the cpu backend and removes it again', () => {
    expect(tf.getBackend()).toBe('cpu');
    const choice = installComputePrecision('bf16', {});
    expect(choice.mode).toBe('bf16-emulated');
    const x = tf.tensor1d([1 + 2 ** -8 + 2 ** -10]);
    expect(Array.from(computeCast(x).dataSync())).toEqual([1 + 2 ** -7]);
    resetComputePrecision();
    expect(computeCast(x)).toBe(x);
    expect(nativeBf16Active()).toBe(false);
    x.dispose();
  });
});

describe.skipIf(!load.info)('AMX enabling for oneDNN 2.6', () => {
  it('reports AMX off on a CPU without it, and an outcome where it has it', () => {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    if (flags.includes('amx_bf16') && flags.includes('amx_tile')) expect(load.info!.dnnlAmx).toMatch(/AMX (enabled|left to|present but)/);
    else expect(load.info!.dnnlAmx).toBe('no AMX on this CPU');
  });
});

describe.skipIf(!hardware)(`bf16 kernels on oneDNN (${hardware ?? 'no bf16 CPU'})`, () => {
  const addon = load.addon!;

  beforeAll(async () => {
    expect(registerNativeBackend()).toBe(true);
    await tf.setBackend(NATIVE_BACKEND);
  });
  afterEach(() => setNativeBf16(addon, false));
  afterAll(async () => {
    setNativeBf16(addon, false);
    await tf.setBackend('cpu');
  });

  /** Runs fn with the bf16 kernels on; checks no kernel fell back to the fp32 cpu one. */
  function inBf16(kernel: string, fn: () => tf.Tensor): Float32Array {
    const before = fallbackCounts[kernel] ?? 0;
    setNativeBf16(addon, true);
    const y = fn();
    setNativeBf16(addon, false);
    expect(fallbackCounts[kernel] ?? 0, `${kernel} fell back to cpu`).toBe(before);
    const v = y.dataSync() as Float32Array;
    y.dispose();
    return v;
  }

  /** Σ_k op(A)[b,i,k]·op(B)[b,k,j] in float64 over rounded (or plain) operands, with Σ|·|. */
  function referenceMatMul(a: ArrayLike<number>, aShape: number[], b: ArrayLike<number>, bShape: number[], transA: boolean, transB: boolean) {
    const [ar, ac] = aShape.slice(-2) as [number, number];
    const [br, bc] = bShape.slice(-2) as [number, number];
    const m = transA ? ac : ar, k = transA ? ar : ac, n = transB ? br : bc;
    const batchA = aShape.length > 2 ? aShape[0]! : 1, batchB = bShape.length > 2 ? bShape[0]! : 1;
    const batch = Math.max(batchA, batchB);
    const out = new Float64Array(batch * m * n), absSum = new Float64Array(batch * m * n);
    for (let t = 0; t < batch; t++) {
      const ao = (batchA === 1 ? 0 : t) * ar * ac, bo = (batchB === 1 ? 0 : t) * br * bc;
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let s = 0, sa = 0;
          for (let p = 0; p < k; p++) {
            const x = a[ao + (transA ? p * ac + i : i * ac + p)]!, y = b[bo + (transB ? j * bc + p : p * bc + j)]!;
            s += x * y;
            sa += Math.abs(x * y);
          }
          out[(t * m + i) * n + j] = s;
          absSum[(t * m + i) * n + j] = sa;
        }
    }
    return { out, absSum };
  }

  const matmulCases: [string, number[], number[], boolean, boolean][] = [
    ['A·B', [37, 70], [70, 29], false, false],
    ['Aᵀ·B', [70, 37], [70, 29], true, false],
    ['A·Bᵀ', [37, 70], [29, 70], false, true],
    ['Aᵀ·Bᵀ', [70, 37], [29, 70], true, true],
    ['batched A·B', [3, 17, 40], [3, 40, 23], false, false],
    ['batched, B broadcast, Bᵀ', [3, 17, 40], [1, 23, 40], false, true],
  ];
  for (const [label, aShape, bShape, transA, transB] of matmulCases) {
    it(`matmul ${label} ${aShape}×${bShape}`, () => {
      const a = randn(aShape.reduce((x, y) => x * y)), b = randn(bShape.reduce((x, y) => x * y));
      const got = inBf16('BatchMatMul', () => tf.tidy(() => tf.matMul(tf.tensor(a, aShape), tf.tensor(b, bShape), transA, transB)));
      const ref = referenceMatMul(roundAll(a), aShape, roundAll(b), bShape, transA, transB);
      const fp32 = referenceMatMul(a, aShape, b, bShape, transA, transB);
      expectBf16Product(got, ref.out, ref.absSum, fp32.out, label);
    });
  }

  const arrayOf = (t: tf.Tensor) => (tf.backend() as unknown as { data: { get(id: object): { values: Float32Array } } }).data.get(t.dataId).values;

  it('a frozen weight is converted once and passed as its kept bf16 copy, with bit-identical results; trainable weights are not kept', () => {
    // [64, 384] · [256, 384]ᵀ: the weight is above MIN_CACHED_LENGTH; the activation changes every call.
    const wv = randn(256 * 384);
    const frozen = tf.variable(tf.tensor2d(wv, [256, 384]), false);
    const trainable = tf.variable(tf.tensor2d(Float32Array.from(wv), [256, 384]), true); // its own array: tensor2d(wv) would share wv
    rescanFrozenWeights();
    const xs = Array.from({ length: 3 }, () => randn(64 * 384));
    const viaFrozen = xs.map((x) => inBf16('BatchMatMul', () => tf.tidy(() => tf.matMul(tf.tensor2d(x, [64, 384]), frozen, false, true))));
    expect(hasBf16Copy(arrayOf(frozen))).toBe(true);
    const viaTrainable = xs.map((x) => inBf16('BatchMatMul', () => tf.tidy(() => tf.matMul(tf.tensor2d(x, [64, 384]), trainable, false, true))));
    expect(hasBf16Copy(arrayOf(trainable))).toBe(false);
    for (let i = 0; i < xs.length; i++) expect(Array.from(viaFrozen[i]!), `call ${i + 1}`).toEqual(Array.from(viaTrainable[i]!));
    const ref = referenceMatMul(roundAll(xs[2]!), [64, 384], roundAll(wv), [256, 384], false, true);
    const fp32 = referenceMatMul(xs[2]!, [64, 384], wv, [256, 384], false, true);
    expectBf16Product(viaFrozen[2]!, ref.out, ref.absSum, fp32.out, 'cached weight');
    tf.dispose([frozen, trainable]);
  });

  it('a recycled buffer forgets its bf16 copy: new contents, right product', () => {
    const shape: [number, number] = [128, 256];
    const x = tf.tensor2d(randn(8 * 256), [8, 256]);
    // A frozen variable on the output of a native kernel, so its array comes from (and returns to) the pool.
    const source = tf.tensor2d(randn(128 * 256), shape);
    const initial = tf.tidy(() => source.mul(1));
    const weight = tf.variable(initial, false);
    const values = arrayOf(weight);
    rescanFrozenWeights();
    inBf16('BatchMatMul', () => tf.tidy(() => tf.matMul(x, weight, false, true)));
    expect(hasBf16Copy(values)).toBe(true);
    tf.dispose([weight, initial]);
    const second = randn(128 * 256);
    const secondSource = tf.tensor2d(second, shape);
    const reuse = tf.tidy(() => secondSource.mul(1));
    expect(arrayOf(reuse)).toBe(values); // the pool handed the same array back …
    expect(hasBf16Copy(values)).toBe(false); // … without the old copy
    const got = inBf16('BatchMatMul', () => tf.tidy(() => tf.matMul(x, reuse, false, true)));
    const ref = referenceMatMul(roundAll(x.dataSync() as Float32Array), [8, 256], roundAll(second), shape, false, true);
    const fp32 = referenceMatMul(x.dataSync(), [8, 256], second, shape, false, true);
    expectBf16Product(got, ref.out, ref.absSum, fp32.out, 'recycled');
    tf.dispose([x, source, reuse, secondSource]);
  });

  it('refuses bf16 operands while the bf16 kernels are off', () => {
    const a = new Uint16Array(4 * 4);
    expect(() => addon.matmul(Int32Array.of(4, 4), Int32Array.of(4, 4), false, false, a, new Float32Array(16), null, new Float32Array(16), 0, 0, 1, false)).toThrow(/bf16 kernels on/);
  });

  it('fused matmul with bias and relu (Linear with an activation)', () => {
    const a = randn(19 * 48), w = randn(31 * 48), bias = randn(31);
    const got = inBf16('_FusedMatMul', () =>
      tf.tidy(() => tf.fused.matMul({ a: tf.tensor2d(a, [19, 48]), b: tf.tensor2d(w, [31, 48]), transposeB: true, bias: tf.tensor1d(bias), activation: 'relu' })),
    );
    const ref = referenceMatMul(roundAll(a), [19, 48], roundAll(w), [31, 48], false, true);
    const fp32 = referenceMatMul(a, [19, 48], w, [31, 48], false, true);
    const post = (v: Float64Array) => v.map((x, i) => Math.max(0, x + bias[i % 31]!));
    expectBf16Product(got, post(ref.out), ref.absSum.map((s, i) => s + Math.abs(bias[i % 31]!)), post(fp32.out), 'fused');
  });

  // One NHWC convolution geometry with stride, asymmetric 'same' padding and odd sizes; the three
  // passes accumulated in float64 over the same (n, oy, ox, ky, kx, c, o) terms.
  const [n, h, w, c, o, k, stride] = [2, 9, 11, 6, 10, 3, 2];
  const info = tf.backend_util.computeConv2DInfo([n, h, w, c], [k, k, c, o], stride, 1, 'same');
  const { outHeight: oh, outWidth: ow } = info;
  const { top, left } = info.padInfo;

  function referenceConv(x: ArrayLike<number>, f: ArrayLike<number>, dy: ArrayLike<number>) {
    const y = new Float64Array(n * oh * ow * o), yAbs = new Float64Array(y.length);
    const dx = new Float64Array(n * h * w * c), dxAbs = new Float64Array(dx.length);
    const dw = new Float64Array(k * k * c * o), dwAbs = new Float64Array(dw.length);
    for (let b = 0; b < n; b++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++)
          for (let ky = 0; ky < k; ky++)
            for (let kx = 0; kx < k; kx++) {
              const iy = oy * stride - top + ky, ix = ox * stride - left + kx;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              for (let ci = 0; ci < c; ci++)
                for (let co = 0; co < o; co++) {
                  const xi = ((b * h + iy) * w + ix) * c + ci, fi = ((ky * k + kx) * c + ci) * o + co, yi = ((b * oh + oy) * ow + ox) * o + co;
                  const xf = x[xi]! * f[fi]!, fdy = f[fi]! * dy[yi]!, xdy = x[xi]! * dy[yi]!;
                  y[yi] += xf, yAbs[yi] += Math.abs(xf);
                  dx[xi] += fdy, dxAbs[xi] += Math.abs(fdy);
                  dw[fi] += xdy, dwAbs[fi] += Math.abs(xdy);
                }
            }
    return { y, yAbs, dx, dxAbs, dw, dwAbs };
  }

  const x = randn(n * h * w * c), f = randn(k * k * c * o), dy = randn(n * oh * ow * o);
  const ref = referenceConv(roundAll(x), roundAll(f), roundAll(dy));
  const fp32 = referenceConv(x, f, dy);
  const attrs = { strides: stride, pad: 'same', dataFormat: 'NHWC' } as const;

  it('conv2d forward (stride 2, asymmetric same padding)', () => {
    const got = inBf16('Conv2D', () => tf.tidy(() => tf.conv2d(tf.tensor4d(x, [n, h, w, c]), tf.tensor4d(f, [k, k, c, o]), stride, 'same')));
    expectBf16Product(got, ref.y, ref.yAbs, fp32.y, 'conv forward');
  });

  it('the fused conv over a list of inputs (dense-block convolutions) also runs in bf16', () => {
    const { bottom, right } = info.padInfo;
    const got = inBf16(FUSED_KERNELS.convList, () =>
      tf.tidy(() => {
        // The input split in two along channels; the weight in PyTorch's [o, c, kh, kw] layout.
        const [x1, x2] = tf.split(tf.tensor4d(x, [n, h, w, c]), [2, c - 2], 3) as [tf.Tensor4D, tf.Tensor4D];
        const weight = tf.variable(tf.tensor4d(f, [k, k, c, o]).transpose([3, 2, 0, 1]));
        return convList([x1, x2], weight, null, { stride, pad: [top, left, bottom, right] });
      }),
    );
    expectBf16Product(got, ref.y, ref.yAbs, fp32.y, 'fused conv-list forward');
  });

  it('a patch-embedding conv (stride = kernel, run as a matmul over patches): forward, input and weight gradients in bf16', () => {
    const [pn, ph, pw, pc, pk, po] = [2, 8, 12, 3, 4, 5];
    const [poh, pow] = [ph / pk, pw / pk];
    const px = randn(pn * ph * pw * pc), pf = randn(pk * pk * pc * po), pdy = randn(pn * poh * pow * po);
    const reference = (xv: ArrayLike<number>, fv: ArrayLike<number>, dyv: ArrayLike<number>) => {
      const out = { y: new Float64Array(pdy.length), yAbs: new Float64Array(pdy.length), dx: new Float64Array(px.length), dxAbs: new Float64Array(px.length), dw: new Float64Array(pf.length), dwAbs: new Float64Array(pf.length) };
      for (let b = 0; b < pn; b++)
        for (let i = 0; i < poh; i++)
          for (let j = 0; j < pow; j++)
            for (let ky = 0; ky < pk; ky++)
              for (let kx = 0; kx < pk; kx++)
                for (let ci = 0; ci < pc; ci++)
                  for (let co = 0; co < po; co++) {
                    const xi = ((b * ph + i * pk + ky) * pw + j * pk + kx) * pc + ci, fi = ((ky * pk + kx) * pc + ci) * po + co, yi = ((b * poh + i) * pow + j) * po + co;
                    const xf = xv[xi]! * fv[fi]!, fdy = fv[fi]! * dyv[yi]!, xdy = xv[xi]! * dyv[yi]!;
                    (out.y[yi] += xf), (out.yAbs[yi] += Math.abs(xf)), (out.dx[xi] += fdy), (out.dxAbs[xi] += Math.abs(fdy)), (out.dw[fi] += xdy), (out.dwAbs[fi] += Math.abs(xdy));
                  }
      return out;
    };
    const want = reference(roundAll(px), roundAll(pf), roundAll(pdy));
    const plain = reference(px, pf, pdy);
    const weight = tf.variable(tf.tensor4d(pf, [pk, pk, pc, po]).transpose([3, 2, 0, 1]));
    const input = tf.variable(tf.tensor4d(px, [pn, ph, pw, pc]));
    const dyT = tf.tensor4d(pdy, [pn, poh, pow, po]);
    const spec = { stride: pk, pad: [0, 0, 0, 0] as [number, number, number, number] };
    setNativeBf16(addon, true);
    const y = convList([input], weight, null, spec);
    const { value, grads } = tf.variableGrads(() => convList([input], weight, null, spec).mul(dyT).sum() as tf.Scalar, [input, weight]);
    setNativeBf16(addon, false);
    const [dx, dwOihw] = [grads[input.name], grads[weight.name]];
    value.dispose();
    expectBf16Product(y.dataSync() as Float32Array, want.y, want.yAbs, plain.y, 'patch conv forward');
    expectBf16Product(dx!.dataSync() as Float32Array, want.dx, want.dxAbs, plain.dx, 'patch conv input gradient');
    // The weight gradient comes back as [o, c, kh, kw]; the references are [kh, kw, c, o].
    const dwHwio = tf.tidy(() => dwOihw!.transpose([2, 3, 1, 0]).dataSync() as Float32Array);
    expectBf16Product(dwHwio, want.dw, want.dwAbs, plain.dw, 'patch conv weight gradient');
    tf.dispose([weight, input, dyT, y, dx!, dwOihw!]);
  });

  it('conv2d backprop input', () => {
    const got = inBf16('Conv2DBackpropInput', () =>
      tf.engine().runKernel('Conv2DBackpropInput', { dy: tf.tensor4d(dy, [n, oh, ow, o]), filter: tf.tensor4d(f, [k, k, c, o]) }, {
        ...attrs,
        inputShape: [n, h, w, c],
      }) as tf.Tensor,
    );
    expectBf16Product(got, ref.dx, ref.dxAbs, fp32.dx, 'conv backprop input');
  });

  it('conv2d backprop filter', () => {
    const got = inBf16('Conv2DBackpropFilter', () =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x: tf.tensor4d(x, [n, h, w, c]), dy: tf.tensor4d(dy, [n, oh, ow, o]) }, {
        ...attrs,
        filterShape: [k, k, c, o],
      }) as tf.Tensor,
    );
    expectBf16Product(got, ref.dw, ref.dwAbs, fp32.dw, 'conv backprop filter');
  });

  // Multi-head attention in bf16 (heads of width ≥ 64): the products take bf16 operands (as
  // autocast's bmm), softmax and its gradient stay fp32. Each product is checked on the kernel's own fp32 probabilities (or dS)
  // rounded here, so a rounding boundary the kernel and the reference straddle cannot flip a term.
  for (const a of [
    { label: 'cross lengths', b: 2, nq: 9, nk: 13, h: 3, d: 64, causal: false },
    { label: 'causal', b: 1, nq: 12, nk: 12, h: 2, d: 64, causal: true },
  ]) {
    it(`attention, multi-head, ${a.label}: bf16 products, fp32 softmax`, () => {
      const { b, nq, nk, h, d } = a;
      const scale = 1 / Math.sqrt(d);
      const q = randn(b * nq * h * d), k = randn(b * nk * h * d), v = randn(b * nk * h * d), dout = randn(b * nq * h * d);
      const o = new Float32Array(q.length), p = new Float32Array(b * h * nq * nk);
      const dq = new Float32Array(q.length), dk = new Float32Array(k.length), dv = new Float32Array(v.length);
      const dims = Int32Array.of(b, nq, nk, h, h, d);
      setNativeBf16(addon, true);
      addon.attention(dims, scale, a.causal, q, k, v, o, p);
      addon.attentionGrad(dims, scale, dout, q, k, v, p, dq, dk, dv);
      setNativeBf16(addon, false);
      const [q16, k16, v16, do16, p16] = [q, k, v, dout, p].map(roundAll) as [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array];
      const qi = (t: number, i: number, hh: number) => ((t * nq + i) * h + hh) * d;
      const ki = (t: number, j: number, hh: number) => ((t * nk + j) * h + hh) * d;
      const pi = (t: number, hh: number, i: number) => ((t * h + hh) * nq + i) * nk;
      const want = { o: new Float64Array(o.length), oAbs: new Float64Array(o.length), o32: new Float64Array(o.length) };
      const dvRef = { v: new Float64Array(dv.length), abs: new Float64Array(dv.length), fp32: new Float64Array(dv.length) };
      const exact = { dq: new Float64Array(dq.length), dk: new Float64Array(dk.length) };
      let worstP = 0;
      for (let t = 0; t < b; t++)
        for (let hh = 0; hh < h; hh++) {
          // The fp32 reference of the whole head (unrounded operands) for dQ and dK.
          const P = new Float64Array(nq * nk);
          for (let i = 0; i < nq; i++) {
            const row16 = [], row = [];
            for (let j = 0; j < nk; j++) {
              let s16 = 0, s32 = 0;
              for (let c = 0; c < d; c++) s16 += q16[qi(t, i, hh) + c]! * k16[ki(t, j, hh) + c]!, (s32 += q[qi(t, i, hh) + c]! * k[ki(t, j, hh) + c]!);
              const masked = a.causal && j > i;
              row16.push(masked ? -Infinity : scale * s16), row.push(masked ? -Infinity : scale * s32);
            }
            const soft = (r: number[]) => { const m = Math.max(...r); const e = r.map((x) => Math.exp(x - m)); const z = e.reduce((x, y) => x + y); return e.map((x) => x / z); };
            soft(row16).forEach((x, j) => (worstP = Math.max(worstP, Math.abs(x - p[pi(t, hh, i) + j]!))));
            soft(row).forEach((x, j) => (P[i * nk + j] = x));
          }
          for (let i = 0; i < nq; i++)
            for (let c = 0; c < d; c++) {
              [want.o[qi(t, i, hh) + c], want.oAbs[qi(t, i, hh) + c], want.o32[qi(t, i, hh) + c]] = productSums(
                nk,
                (j) => p16[pi(t, hh, i) + j]! * v16[ki(t, j, hh) + c]!,
                (j) => p[pi(t, hh, i) + j]! * v[ki(t, j, hh) + c]!,
              );
            }
          for (let j = 0; j < nk; j++)
            for (let c = 0; c < d; c++) {
              [dvRef.v[ki(t, j, hh) + c], dvRef.abs[ki(t, j, hh) + c], dvRef.fp32[ki(t, j, hh) + c]] = productSums(
                nq,
                (i) => p16[pi(t, hh, i) + j]! * do16[qi(t, i, hh) + c]!,
                (i) => p[pi(t, hh, i) + j]! * dout[qi(t, i, hh) + c]!,
              );
            }
          // dS = scale·P∘(dP − rowsum(P∘dP)) with dP = dO·Vᵀ, all unrounded: the fp32 gradient.
          for (let i = 0; i < nq; i++) {
            const dP = Array.from({ length: nk }, (_, j) => { let s = 0; for (let c = 0; c < d; c++) s += dout[qi(t, i, hh) + c]! * v[ki(t, j, hh) + c]!; return s; });
            const dot = dP.reduce((acc, x, j) => acc + x * P[i * nk + j]!, 0);
            for (let j = 0; j < nk; j++) {
              const dS = scale * P[i * nk + j]! * (dP[j]! - dot);
              for (let c = 0; c < d; c++) exact.dq[qi(t, i, hh) + c] += dS * k[ki(t, j, hh) + c]!, (exact.dk[ki(t, j, hh) + c] += dS * q[qi(t, i, hh) + c]!);
            }
          }
        }
      expect(worstP, 'probabilities: softmax of the bf16 scores, in fp32').toBeLessThan(1e-5);
      expectBf16Product(o, want.o, want.oAbs, want.o32, 'attention output');
      expectBf16Product(dv, dvRef.v, dvRef.abs, dvRef.fp32, 'attention dV');
      for (const [name, got, ref] of [['dQ', dq, exact.dq], ['dK', dk, exact.dk]] as const) {
        let diff = 0, norm = 0;
        for (let i = 0; i < got.length; i++) diff += (got[i]! - ref[i]!) ** 2, (norm += ref[i]! ** 2);
        // Two bf16 products deep (dP from rounded dO and V, then dS rounded): within a few 2^-9, not zero.
        expect(Math.sqrt(diff / norm), name).toBeLessThan(2e-2);
        expect(Math.sqrt(diff / norm), name).toBeGreaterThan(1e-5);
      }
    });
  }

  it('attention with heads narrower than 64, or grouped heads, stays fp32 under bf16 compute', () => {
    for (const [h, hkv, d] of [[2, 2, 32], [4, 1, 64]] as const) {
      const dims = Int32Array.of(2, 7, 7, h, hkv, d);
      const q = randn(2 * 7 * h * d), k = randn(2 * 7 * hkv * d), v = randn(2 * 7 * hkv * d);
      const run = (bf16: boolean) => {
        const o = new Float32Array(q.length), p = new Float32Array(2 * h * 49);
        setNativeBf16(addon, bf16);
        addon.attention(dims, 0.125, false, q, k, v, o, p);
        setNativeBf16(addon, false);
        return o;
      };
      expect(run(true), `heads ${h}/${hkv} of width ${d}`).toEqual(run(false));
    }
  });

  class SmallNet extends Module {
    readonly conv = this.module('conv', new Conv2d(4, 8, 3, { padding: 1, rng: new Rng(5) }));
    readonly down = this.module('down', new Conv2d(8, 8, 3, { stride: 2, padding: 1, rng: new Rng(6) }));
    readonly head = this.module('head', new Linear(8 * 4 * 4, 5, { rng: new Rng(7) }));
    forward(x: tf.Tensor4D): tf.Tensor {
      return this.head.forward(tf.relu(this.down.forward(tf.relu(this.conv.forward(x)))).reshape([x.shape[0], -1]));
    }
  }

  /** Loss and gradients of SmallNet on fixed data under `precision` on the native backend. */
  function lossAndGrads(precision: 'fp32' | 'bf16', env: NodeJS.ProcessEnv = {}) {
    const net = new SmallNet();
    const xs = tf.tensor4d(new Rng(8).fillNormal(new Float32Array(3 * 8 * 8 * 4)), [3, 8, 8, 4]);
    const target = tf.tensor2d(new Rng(9).fillNormal(new Float32Array(15)), [3, 5]);
    const mode = installComputePrecision(precision, env).mode;
    const { value, grads } = tf.variableGrads(() => tf.losses.meanSquaredError(target, net.forward(xs)) as tf.Scalar);
    resetComputePrecision();
    const named = [...net.trainableParameters()].map(([name, p]) => [name, grads[p.name]!.dataSync().slice() as Float32Array] as const);
    const out = { mode, loss: value.dataSync()[0]!, grads: Object.fromEntries(named) };
    tf.dispose([value, xs, target, ...Object.values(grads)]);
    net.dispose();
    return out;
  }

  it('a small model: the bf16 kernels give the emulation’s forward and fp32 gradients within bf16 tolerance', () => {
    const fp32 = lossAndGrads('fp32');
    const bf16 = lossAndGrads('bf16');
    const emulated = lossAndGrads('bf16', { SCALEFORGE_BF16: 'emulate' });
    expect(bf16.mode).toBe('bf16-onednn');
    expect(emulated.mode).toBe('bf16-emulated');
    // Same rounded operands, fp32 accumulation in both: the forward losses agree to fp32 noise.
    expect(Math.abs(bf16.loss - emulated.loss) / emulated.loss).toBeLessThan(2e-6);
    expect(Math.abs(bf16.loss - fp32.loss) / fp32.loss).toBeGreaterThan(1e-6);
    const names = Object.keys(fp32.grads);
    expect(names.length).toBe(6);
    for (const name of names) {
      const g = fp32.grads[name]!, b = bf16.grads[name]!;
      let diff = 0, norm = 0;
      for (let i = 0; i < g.length; i++) diff += (g[i]! - b[i]!) ** 2, norm += g[i]! ** 2;
      const rel = Math.sqrt(diff / norm);
      // bf16 keeps 8 significant bits (relative rounding ≤ 2^-9 per operand); through three layers
      // the relative gradient error stays within a few 2^-9, and is not zero.
      expect(rel, name).toBeLessThan(2e-2);
      expect(rel, name).toBeGreaterThan(1e-5);
    }
  });
});
