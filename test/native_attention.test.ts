import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { FUSED_KERNELS, hasFusedKernel } from '../src/backend/fused.js';
import { Attention, CrossAttention, attentionTokens } from '../src/nn/attention.js';
import { Rng } from '../src/util/rng.js';

// The fused attention kernel (native, one kernel each way on the token-major layout) against the
// unfused tfjs composite on the cpu backend, value and gradients, and against central finite
// differences of the fused op itself.

const skip = loadNativeAddon().addon === undefined;
const rng = new Rng(77);
const randn = (shape: number[], s = 1) => rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1))).map((v) => v * s);

type Case = { label: string; b: number; nq: number; nk: number; h: number; hkv: number; d: number; causal?: boolean };
const CASES: Case[] = [
  { label: 'multi-head, square', b: 2, nq: 5, nk: 5, h: 2, hkv: 2, d: 4 },
  { label: 'grouped (4 query heads, 1 kv head), cross lengths', b: 3, nq: 7, nk: 4, h: 4, hkv: 1, d: 8 },
  { label: 'grouped 6/2, causal', b: 1, nq: 6, nk: 6, h: 6, hkv: 2, d: 4, causal: true },
  { label: 'large enough to split across threads', b: 4, nq: 64, nk: 48, h: 4, hkv: 2, d: 16 },
  // Multi-head (kvHeads = heads) runs as batched matmuls over strided head views: cover its shapes.
  { label: 'multi-head, causal', b: 2, nq: 6, nk: 6, h: 3, hkv: 3, d: 4, causal: true },
  { label: 'multi-head cross-attention, nq ≠ nk', b: 3, nq: 7, nk: 11, h: 2, hkv: 2, d: 8 },
  { label: 'multi-head, a DiT block at batch 4 (threaded)', b: 4, nq: 64, nk: 64, h: 4, hkv: 4, d: 32 },
];

/** Output and dq/dk/dv of sum(o · w) for a fixed random w, on the current backend. */
function valueAndGrads(c: Case, data: Float32Array[]) {
  const [qv, kv, vv, wv] = data;
  const q = tf.tensor4d(qv!, [c.b, c.nq, c.h, c.d]);
  const k = tf.tensor4d(kv!, [c.b, c.nk, c.hkv, c.d]);
  const v = tf.tensor4d(vv!, [c.b, c.nk, c.hkv, c.d]);
  const w = tf.tensor4d(wv!, [c.b, c.nq, c.h, c.d]);
  const f = (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => attentionTokens(a as tf.Tensor4D, bb as tf.Tensor4D, cc as tf.Tensor4D, { causal: c.causal });
  const o = f(q, k, v);
  const grads = tf.grads((a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => f(a, bb, cc).mul(w).sum())([q, k, v]);
  const out = [o, ...grads].map((t) => t.dataSync().slice() as Float32Array);
  tf.dispose([q, k, v, w, o, ...grads]);
  return out;
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  let ref = 0;
  let err = 0;
  for (let i = 0; i < a.length; i++) ref = Math.max(ref, Math.abs(b[i]!)), (err = Math.max(err, Math.abs(a[i]! - b[i]!)));
  expect(ref).toBeGreaterThan(0);
  return err / Math.max(1, ref);
}

describe.skipIf(skip)('fused attention (native) vs the tfjs composite', () => {
  beforeAll(() => {
    expect(registerNativeBackend()).toBe(true);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  for (const c of CASES) {
    it(`${c.label}: value and dq, dk, dv`, async () => {
      const data = [randn([c.b, c.nq, c.h, c.d]), randn([c.b, c.nk, c.hkv, c.d]), randn([c.b, c.nk, c.hkv, c.d]), randn([c.b, c.nq, c.h, c.d])];
      await tf.setBackend(NATIVE_BACKEND);
      expect(hasFusedKernel(FUSED_KERNELS.attention)).toBe(true);
      const fused = valueAndGrads(c, data);
      await tf.setBackend('cpu');
      expect(hasFusedKernel(FUSED_KERNELS.attention)).toBe(false);
      const composite = valueAndGrads(c, data);
      ['o', 'dq', 'dk', 'dv'].forEach((name, i) => expect(maxRelErr(fused[i]!, composite[i]!), `${c.label} ${name}`).toBeLessThan(2e-5));
    });
  }

  for (const c of [
    { label: 'grouped', b: 1, nq: 3, nk: 4, h: 2, hkv: 1, d: 4, causal: false },
    { label: 'multi-head', b: 2, nq: 3, nk: 4, h: 2, hkv: 2, d: 4, causal: false },
  ] satisfies Case[]) it(`gradients match central finite differences of the fused op (${c.label})`, async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const base = [randn([c.b, c.nq, c.h, c.d]), randn([c.b, c.nk, c.hkv, c.d]), randn([c.b, c.nk, c.hkv, c.d]), randn([c.b, c.nq, c.h, c.d])];
    const [, dq, dk, dv] = valueAndGrads(c, base);
    const loss = (data: Float32Array[]) => {
      const [o] = valueAndGrads(c, data);
      let s = 0;
      for (let i = 0; i < o!.length; i++) s += o![i]! * data[3]![i]!;
      return s;
    };
    const eps = 1e-2;
    [dq, dk, dv].forEach((g, which) => {
      for (let i = 0; i < g!.length; i += 3) {
        const plus = base.map((a) => a.slice());
        const minus = base.map((a) => a.slice());
        plus[which]![i]! += eps;
        minus[which]![i]! -= eps;
        const fd = (loss(plus) - loss(minus)) / (2 * eps);
        expect(Math.abs(fd - g![i]!), `input ${which} element ${i}: fd ${fd} vs ${g![i]}`).toBeLessThan(2e-3 * Math.max(1, Math.abs(fd)));
      }
    });
  });

  it('Attention (2-D RoPE, grouped heads) and CrossAttention modules: native fused = cpu composite, with parameter gradients', async () => {
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const attn = new Attention(16, { numHeads: 4, numKvHeads: 1, rope: '2d', rng: new Rng(3) });
      const cross = new CrossAttention(16, 12, { numHeads: 4, numKvHeads: 2, rng: new Rng(4) });
      const x = tf.tensor3d(new Rng(5).fillNormal(new Float32Array(2 * 16 * 16)), [2, 16, 16]);
      const ctx = tf.tensor3d(new Rng(6).fillNormal(new Float32Array(2 * 5 * 12)), [2, 5, 12]);
      const vars = [...attn.namedParameters(), ...cross.namedParameters()].map(([, v]) => v);
      const { value, grads } = tf.variableGrads(() => cross.forward(attn.forward(x), ctx).square().mean() as tf.Scalar, vars);
      const out = [value.dataSync()[0]!, ...vars.map((v) => grads[v.name]!.dataSync().slice() as Float32Array)] as const;
      tf.dispose([value, ...Object.values(grads), x, ctx]);
      attn.dispose();
      cross.dispose();
      return out;
    };
    const [nv, ...ng] = await run(NATIVE_BACKEND);
    const [cv, ...cg] = await run('cpu');
    expect(Math.abs(nv - cv) / Math.abs(cv)).toBeLessThan(1e-5);
    ng.forEach((g, i) => expect(maxRelErr(g as Float32Array, cg[i] as Float32Array), `param ${i}`).toBeLessThan(5e-5));
  });

  it('masked attention keeps the composite (the fused kernel takes no masks)', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const q = tf.randomNormal([1, 3, 2, 4]) as tf.Tensor4D;
    const k = tf.randomNormal([1, 5, 2, 4]) as tf.Tensor4D;
    const keyMask = tf.tensor2d([[1, 1, 0, 1, 0]]);
    const o = attentionTokens(q, k, k, { keyMask });
    expect(o.shape).toEqual([1, 3, 2, 4]);
    tf.dispose([q, k, keyMask, o]);
  });
});

describe.skipIf(skip)('fused leakyRelu gradient (native) vs the tfjs composite', () => {
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  it('value and gradient equal tf.leakyRelu on cpu, zeros and negatives included, and finite differences', async () => {
    const { leakyRelu } = await import('../src/nn/activations.js');
    const xs = Float32Array.from([...randn([5, 7, 3]), 0, -0, 1e-8, -1e-8]);
    const dys = randn([xs.length]);
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      const x = tf.tensor1d(xs);
      const dy = tf.tensor1d(dys);
      const y = leakyRelu(x, 0.2);
      const [g] = tf.grads((a: tf.Tensor) => leakyRelu(a, 0.2).mul(dy).sum())([x]);
      const out = [y.dataSync().slice(), g!.dataSync().slice()] as Float32Array[];
      tf.dispose([x, dy, y, g!]);
      return out;
    };
    expect(registerNativeBackend()).toBe(true);
    await tf.setBackend(NATIVE_BACKEND);
    expect(hasFusedKernel(FUSED_KERNELS.leakyReluGrad)).toBe(true);
    const [ny, ng] = await run(NATIVE_BACKEND);
    const [cy, cg] = await run('cpu');
    // Same arithmetic as tfjs (alpha·dy in float32), so bit for bit.
    expect(Array.from(ny!)).toEqual(Array.from(cy!));
    expect(Array.from(ng!)).toEqual(Array.from(cg!));
    // Away from the kink the derivative is 1 or 0.2: finite differences of the value agree.
    for (let i = 0; i < 20; i++) {
      if (Math.abs(xs[i]!) < 1e-2) continue;
      expect(ng![i]! / dys[i]!).toBeCloseTo(xs[i]! > 0 ? 1 : 0.2, 6);
    }
  });
});
