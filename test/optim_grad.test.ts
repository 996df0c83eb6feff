import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { clipByGlobalNorm, disposeGrads, GradAccumulator, globalNorm, gradsAreFinite } from '../src/train/grad.js';

const grads = (o: Record<string, number[]>) => new Map(Object.entries(o).map(([k, v]) => [k, tf.tensor1d(v)]));

describe('clipByGlobalNorm (torch clip_grad_norm_)', () => {
  it('scales by maxNorm/(norm+1e-6) when the 3-4-12 norm 13 exceeds maxNorm', () => {
    const g = grads({ a: [3, 4], b: [12] });
    const { grads: c, norm } = clipByGlobalNorm(g, 6.5);
    expect(norm).toBeCloseTo(13, 5);
    const coef = 6.5 / (13 + 1e-6);
    expect(Array.from(c.get('a')!.dataSync())).toEqual([Math.fround(3 * coef), Math.fround(4 * coef)].map(Math.fround));
    expect(c.get('b')!.dataSync()[0]).toBeCloseTo(12 * coef, 6);
    expect(globalNorm(c)).toBeCloseTo(6.5, 5);
    disposeGrads(g);
    disposeGrads(c);
  });

  it('leaves gradients unchanged below the threshold and returns fresh tensors', () => {
    const before = tf.memory().numTensors;
    const g = grads({ a: [0.3, 0.4] });
    const { grads: c, norm } = clipByGlobalNorm(g, 1);
    expect(norm).toBeCloseTo(0.5, 6);
    expect(c.get('a')).not.toBe(g.get('a'));
    expect(Array.from(c.get('a')!.dataSync())).toEqual(Array.from(g.get('a')!.dataSync()));
    disposeGrads(g);
    disposeGrads(c);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('gradsAreFinite', () => {
  it('detects NaN and ±Inf anywhere', () => {
    const ok = grads({ a: [1, 2], b: [-3e38] });
    const nan = grads({ a: [1, 2], b: [NaN] });
    const inf = grads({ a: [1, -Infinity], b: [0] });
    expect(gradsAreFinite(ok)).toBe(true);
    expect(gradsAreFinite(nan)).toBe(false);
    expect(gradsAreFinite(inf)).toBe(false);
    [ok, nan, inf].forEach(disposeGrads);
  });
});

describe('GradAccumulator', () => {
  it('mean of micro-batch gradients equals the full-batch gradient of a mean loss', () => {
    const w = tf.variable(tf.tensor2d([[0.5], [-1.25]]), true, 'accum_w');
    const x = tf.tensor2d([[1, 2], [3, -1], [0.5, 0.25], [-2, 1]]);
    const y = tf.tensor2d([[1], [0], [2], [-1]]);
    const gradOf = (xs: tf.Tensor2D, ys: tf.Tensor2D) => {
      const { grads: g, value } = tf.variableGrads(() => tf.losses.meanSquaredError(ys, tf.matMul(xs, w)) as tf.Scalar, [w]);
      value.dispose();
      return new Map([['w', g['accum_w']!]]);
    };
    const full = gradOf(x as tf.Tensor2D, y as tf.Tensor2D);
    const acc = new GradAccumulator();
    for (const [lo, hi] of [[0, 2], [2, 4]] as const) {
      const xs = x.slice([lo, 0], [hi - lo, 2]) as tf.Tensor2D;
      const ys = y.slice([lo, 0], [hi - lo, 1]) as tf.Tensor2D;
      const g = gradOf(xs, ys);
      acc.add(g);
      disposeGrads(g);
      xs.dispose();
      ys.dispose();
    }
    expect(acc.count).toBe(2);
    const mean = acc.takeMean();
    expect(acc.count).toBe(0);
    const a = mean.get('w')!.dataSync();
    const b = full.get('w')!.dataSync();
    for (let i = 0; i < b.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 5);
    disposeGrads(mean);
    disposeGrads(full);
    [w, x, y].forEach((t) => t.dispose());
  });

  it('holds no tensors after takeMean or reset', () => {
    const before = tf.memory().numTensors;
    const acc = new GradAccumulator();
    for (let i = 0; i < 3; i++) {
      const g = grads({ a: [i, 2 * i] });
      acc.add(g);
      disposeGrads(g);
    }
    const m = acc.takeMean();
    expect(Array.from(m.get('a')!.dataSync())).toEqual([1, 2]);
    disposeGrads(m);
    const g = grads({ a: [1, 1] });
    acc.add(g);
    disposeGrads(g);
    acc.reset();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => acc.takeMean()).toThrow(/before any add/);
  });
});
