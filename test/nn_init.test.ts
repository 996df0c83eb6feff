import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Rng } from '../src/util/rng.js';
import { Conv2d, Embedding, Linear, fans, kaimingUniform, xavierUniform } from '../src/nn/index.js';

// Initialisers against torch.nn.init's formulas: for U(−b, b) the samples stay inside ±b, reach
// close to it, and have variance b²/3.
function expectUniform(t: tf.Tensor, bound: number): void {
  const v = t.dataSync();
  let max = 0;
  let sum = 0;
  let sq = 0;
  for (const s of v) {
    max = Math.max(max, Math.abs(s));
    sum += s;
    sq += s * s;
  }
  const mean = sum / v.length;
  const variance = sq / v.length - mean * mean;
  expect(max).toBeLessThanOrEqual(bound);
  expect(max).toBeGreaterThan(bound * (1 - 20 / v.length));
  expect(Math.abs(mean)).toBeLessThan((4 * bound) / Math.sqrt(3 * v.length));
  // The sample variance of U(−b, b) has relative standard error √(0.8/n); allow four of them.
  expect(Math.abs(variance / ((bound * bound) / 3) - 1)).toBeLessThan(4 * Math.sqrt(0.8 / v.length));
}

describe('init', () => {
  it('computes fan in/out like torch for linear and conv weights', () => {
    expect(fans([5, 7])).toEqual({ fanIn: 7, fanOut: 5 });
    expect(fans([16, 8, 3, 3])).toEqual({ fanIn: 72, fanOut: 144 });
    expect(() => fans([3])).toThrow(/at least 2 dims/);
  });

  it('kaiming_uniform with a=√5 (torch Linear default) has bound 1/√fan_in', () => {
    // gain² = 2/(1+5) = 1/3, so bound = √(1/3)·√(3/fan_in) = 1/√fan_in.
    const w = kaimingUniform([256, 64], new Rng(1));
    expectUniform(w, 1 / 8);
    w.dispose();
  });

  it('kaiming_uniform with a=0 has bound √(6/fan_in)', () => {
    const w = kaimingUniform([128, 150], new Rng(2), 0);
    expectUniform(w, Math.sqrt(6 / 150));
    w.dispose();
  });

  it('xavier_uniform has bound gain·√(6/(fan_in+fan_out))', () => {
    const w = xavierUniform([100, 200], new Rng(3));
    expectUniform(w, Math.sqrt(6 / 300));
    w.dispose();
    const g = xavierUniform([100, 200], new Rng(3), 2);
    expectUniform(g, 2 * Math.sqrt(6 / 300));
    g.dispose();
  });

  it('Linear and Conv2d defaults: weight and bias within ±1/√fan_in', () => {
    const lin = new Linear(64, 512, { rng: new Rng(4) });
    expectUniform(lin.weight, 1 / 8);
    expectUniform(lin.bias!, 1 / 8);
    lin.dispose();
    const conv = new Conv2d(8, 256, 3, { rng: new Rng(5) });
    expectUniform(conv.weight, 1 / Math.sqrt(72));
    expectUniform(conv.bias!, 1 / Math.sqrt(72));
    conv.dispose();
  });

  it('Embedding is N(0, 1)', () => {
    const e = new Embedding(400, 64, { rng: new Rng(6) });
    const v = Float32Array.from(e.weight.dataSync());
    const mean = v.reduce((s, x) => s + x, 0) / v.length;
    const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(std).toBeCloseTo(1, 1);
    e.dispose();
  });

  it('is reproducible from the seed and different across seeds', () => {
    const a = kaimingUniform([4, 4], new Rng(9));
    const b = kaimingUniform([4, 4], new Rng(9));
    const c = kaimingUniform([4, 4], new Rng(10));
    expect(a.dataSync()).toEqual(b.dataSync());
    expect(a.dataSync()).not.toEqual(c.dataSync());
    tf.dispose([a, b, c]);
  });
});
