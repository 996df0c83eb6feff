import { describe, expect, it } from 'vitest';
import { Rng } from '../src/util/rng.js';

describe('Rng', () => {
  it('reproduces a stream from a saved state', () => {
    const a = new Rng(42);
    for (let i = 0; i < 10; i++) a.nextU32();
    const st = a.getState();
    const first = Array.from({ length: 5 }, () => a.uniform());
    const b = new Rng(st);
    expect(Array.from({ length: 5 }, () => b.uniform())).toEqual(first);
  });
  it('matches the xoshiro128** reference sequence', () => {
    // Reference: state {1,2,3,4} → 11520, 0, 5927040, 70819200 (first outputs of xoshiro128**).
    const r = new Rng([1, 2, 3, 4]);
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([11520, 0, 5927040, 70819200]);
  });
  it('draws normals with mean 0 and std 1', () => {
    const r = new Rng(7);
    const xs = r.fillNormal(new Float32Array(200_000));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    const var_ = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / xs.length;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(Math.sqrt(var_) - 1)).toBeLessThan(0.01);
  });
});
