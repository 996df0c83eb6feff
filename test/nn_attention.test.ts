import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Rng } from '../src/util/rng.js';
import {
  AdaLayerNorm,
  Attention,
  CrossAttention,
  FiLM,
  LayerNorm,
  Rope2d,
  applyRope,
  gridPositions,
  modulate,
  rope2dTables,
  scaledDotProductAttention,
} from '../src/nn/index.js';

const randn = (shape: number[], seed: number) => tf.tensor(new Rng(seed).fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1))), shape);

describe('2-D RoPE', () => {
  it('turns pair j of the row half by row·ω_j and of the column half by col·ω_j, ω_j = 10000^(−j/(d/4))', () => {
    // d = 8: ω = [1, 0.01]; token at (row 2, col 3).
    const t = rope2dTables([2], [3], 8);
    const y = applyRope(tf.tensor([[1, 0, 0, 1, 1, 0, 0, 1]]), t).dataSync();
    const expected = [Math.cos(2), Math.sin(2), -Math.sin(0.02), Math.cos(0.02), Math.cos(3), Math.sin(3), -Math.sin(0.03), Math.cos(0.03)];
    expected.forEach((e, i) => expect(y[i]).toBeCloseTo(e, 6));
  });

  it('orders grid tokens row-major', () => {
    const { rows, cols } = gridPositions(2, 3);
    expect([...rows]).toEqual([0, 0, 0, 1, 1, 1]);
    expect([...cols]).toEqual([0, 1, 2, 0, 1, 2]);
  });

  it('preserves the norm of every token vector', () => {
    const rope = new Rope2d(16);
    const x = randn([2, 3, 12, 16], 1);
    const y = applyRope(x, rope.tables(3, 4));
    const nx = x.norm('euclidean', -1).dataSync();
    const ny = y.norm('euclidean', -1).dataSync();
    nx.forEach((v, i) => expect(ny[i]).toBeCloseTo(v, 5));
    rope.dispose();
  });

  it('makes q·k depend only on the 2-D offset between the tokens', () => {
    const rope = new Rope2d(16);
    const w = 6;
    const tables = rope.tables(6, w);
    // The same q (and k) vector placed at every one of the 36 grid positions, then rotated.
    const q = applyRope(tf.tile(randn([1, 16], 2), [36, 1]), tables);
    const k = applyRope(tf.tile(randn([1, 16], 3), [36, 1]), tables);
    const dots = tf.matMul(q, k, false, true).arraySync() as number[][];
    const at = (r: number, c: number) => r * w + c;
    const dot = (qa: [number, number], kb: [number, number]) => dots[at(...qa)]![at(...kb)]!;
    // offset (+2, +3) from three different query positions
    expect(dot([1, 2], [3, 5])).toBeCloseTo(dot([0, 0], [2, 3]), 4);
    expect(dot([3, 1], [5, 4])).toBeCloseTo(dot([0, 0], [2, 3]), 4);
    // offset (−1, +4)
    expect(dot([4, 0], [3, 4])).toBeCloseTo(dot([2, 1], [1, 5]), 4);
    // a different offset gives a different score (the rotation is not trivial)
    expect(Math.abs(dot([0, 0], [2, 3]) - dot([0, 0], [3, 2]))).toBeGreaterThan(1e-3);
    rope.dispose();
  });

  it('builds tables once per grid size and rejects head dims that are not multiples of 4', () => {
    const rope = new Rope2d(8);
    expect(rope.tables(2, 2)).toBe(rope.tables(2, 2));
    expect(rope.tables(2, 3)).not.toBe(rope.tables(2, 2));
    rope.dispose();
    expect(() => new Rope2d(6)).toThrow(/divisible by 4/);
  });
});

describe('scaled dot-product attention', () => {
  it('matches a hand-worked single-head case', () => {
    // softmax([1, 0]) = [e, 1]/(e+1); output = weights · v.
    const q = tf.tensor4d([[[[1, 0]]]]);
    const k = tf.tensor4d([[[[1, 0], [0, 1]]]]);
    const v = tf.tensor4d([[[[1, 2], [3, 4]]]]);
    const out = scaledDotProductAttention(q, k, v, { scale: 1 }).dataSync();
    const a = Math.E / (Math.E + 1);
    expect(out[0]).toBeCloseTo(a * 1 + (1 - a) * 3, 6);
    expect(out[1]).toBeCloseTo(a * 2 + (1 - a) * 4, 6);
  });

  it('grouped heads equal full multi-head attention with repeat_interleaved K/V', () => {
    const q = randn([2, 6, 4, 8], 4) as tf.Tensor4D;
    const k = randn([2, 2, 5, 8], 5) as tf.Tensor4D;
    const v = randn([2, 2, 5, 8], 6) as tf.Tensor4D;
    // head h reads kv head ⌊h/3⌋: repeat each kv head 3 times in place
    const expand = (t: tf.Tensor4D) => tf.concat([0, 0, 0, 1, 1, 1].map((i) => t.slice([0, i], [-1, 1])), 1) as tf.Tensor4D;
    const grouped = scaledDotProductAttention(q, k, v).dataSync();
    const full = scaledDotProductAttention(q, expand(k), expand(v)).dataSync();
    full.forEach((f, i) => expect(grouped[i]).toBeCloseTo(f, 5));
  });

  it('a fully masked row stays finite', () => {
    const q = randn([1, 1, 2, 4], 7) as tf.Tensor4D;
    const k = randn([1, 1, 3, 4], 8) as tf.Tensor4D;
    const out = scaledDotProductAttention(q, k, k, { keyMask: tf.tensor2d([[0, 0, 0]]) }).dataSync();
    expect(out.every(Number.isFinite)).toBe(true);
  });
});

describe('Attention modules', () => {
  it('causal attention: a token does not see later tokens', () => {
    const attn = new Attention(16, { numHeads: 4, numKvHeads: 2, causal: true, rng: new Rng(9) });
    const x = randn([1, 6, 16], 10) as tf.Tensor3D;
    const changedTail = tf.concat([x.slice([0, 0], [1, 4]), randn([1, 2, 16], 11)], 1) as tf.Tensor3D;
    const before = attn.forward(x).arraySync() as number[][][];
    const after = attn.forward(changedTail).arraySync() as number[][][];
    for (let t = 0; t < 4; t++) after[0]![t]!.forEach((v, c) => expect(v).toBeCloseTo(before[0]![t]![c]!, 6));
    expect(after[0]![5]).not.toEqual(before[0]![5]);
  });

  it('cross-attention ignores padded context tokens', () => {
    const attn = new CrossAttention(8, 6, { numHeads: 2, numKvHeads: 1, rng: new Rng(12) });
    const x = randn([1, 3, 8], 13) as tf.Tensor3D;
    const ctx = randn([1, 4, 6], 14);
    const otherPad = tf.concat([ctx.slice([0, 0], [1, 2]), randn([1, 2, 6], 15)], 1) as tf.Tensor3D;
    const keyMask = tf.tensor2d([[1, 1, 0, 0]]);
    const a = attn.forward(x, ctx as tf.Tensor3D, { keyMask }).dataSync();
    const b = attn.forward(x, otherPad, { keyMask }).dataSync();
    b.forEach((v, i) => expect(v).toBeCloseTo(a[i]!, 6));
  });

  it('RoPE attention needs a grid that holds the tokens', () => {
    const attn = new Attention(16, { numHeads: 2, rope: '2d' });
    expect(() => attn.forward(tf.zeros([1, 6, 16]) as tf.Tensor3D)).toThrow(/not a square grid/);
    expect(() => attn.forward(tf.zeros([1, 6, 16]) as tf.Tensor3D, { grid: [2, 2] })).toThrow(/does not hold 6 tokens/);
    expect(attn.forward(tf.zeros([1, 6, 16]) as tf.Tensor3D, { grid: [2, 3] }).shape).toEqual([1, 6, 16]);
    attn.dispose();
  });

  it('rejects head counts that do not divide', () => {
    expect(() => new Attention(16, { numHeads: 3 })).toThrow(/not divisible/);
    expect(() => new Attention(16, { numHeads: 4, numKvHeads: 3 })).toThrow(/not a multiple/);
  });
});

describe('FiLM / adaLN', () => {
  it('modulate is x·(1+scale)+shift broadcast over tokens (hand-worked)', () => {
    const x = tf.tensor3d([[[1, 2], [3, 4]]]);
    const y = modulate(x, tf.tensor2d([[10, 20]]), tf.tensor2d([[1, -0.5]])).arraySync();
    expect(y).toEqual([[[12, 21], [16, 22]]]);
  });

  it('a fresh FiLM is the identity and a fresh AdaLayerNorm is a plain LayerNorm (adaLN-Zero)', () => {
    const film = new FiLM(5, 4);
    const x = randn([2, 3, 3, 4], 16);
    const cond = randn([2, 5], 17);
    expect(film.forward(x, cond).arraySync()).toEqual(x.arraySync());
    const ada = new AdaLayerNorm(4, 5);
    expect(ada.forward(x, cond).arraySync()).toEqual(new LayerNorm(4, 1e-6, false).forward(x).arraySync());
    expect([...ada.stateDict().keys()]).toEqual(['linear.weight', 'linear.bias']);
  });

  it('splits the projection as (scale, shift) or DiT-style (shift, scale)', () => {
    const a = new FiLM(1, 2, { zeroInit: false });
    a.linear.weight.assign(tf.zeros([4, 1]));
    a.linear.bias!.assign(tf.tensor1d([1, 2, 3, 4]));
    const { scale, shift } = a.modulation(tf.ones([1, 1]));
    expect([scale.arraySync(), shift.arraySync()]).toEqual([[[1, 2]], [[3, 4]]]);
    const b = new FiLM(1, 2, { zeroInit: false, order: 'shift_scale', linearName: 'proj' });
    b.loadStateDict({ 'proj.weight': tf.zeros([4, 1]), 'proj.bias': tf.tensor1d([1, 2, 3, 4]) });
    const m = b.modulation(tf.ones([1, 1]));
    expect([m.scale.arraySync(), m.shift.arraySync()]).toEqual([[[3, 4]], [[1, 2]]]);
  });
});
