import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Linear } from '../src/nn/linear.js';
import { Rng } from '../src/util/rng.js';
import { EMA } from '../src/train/ema.js';

function setWeights(m: Linear, w: number, b: number) {
  tf.tidy(() => {
    m.weight.assign(tf.fill(m.weight.shape, w));
    m.bias!.assign(tf.fill(m.bias!.shape, b));
  });
}
const first = (t: tf.Tensor) => t.dataSync()[0]!;

describe('EMA', () => {
  it('follows shadow = d·shadow + (1 − d)·param with a constant decay', () => {
    const m = new Linear(2, 1, { rng: new Rng(1) });
    setWeights(m, 0, 10);
    const ema = new EMA(m, { decay: 0.5 });
    let expectW = 0;
    let expectB = 10;
    for (const [w, b] of [[1, 0], [1, 2], [3, -4]] as const) {
      setWeights(m, w, b);
      ema.update();
      expectW = 0.5 * expectW + 0.5 * w;
      expectB = 0.5 * expectB + 0.5 * b;
    }
    const s = ema.stateDict();
    expect(s.get('weight')!.data[0]).toBeCloseTo(expectW, 6); // 1.875
    expect(s.get('bias')!.data[0]).toBeCloseTo(expectB, 6);
    expect(expectW).toBe(1.875);
    expect(ema.numUpdates).toBe(3);
    ema.dispose();
    m.dispose();
  });

  it('warms the decay up: (1+n)/(10+n) and 1 − (1+n/γ)^−p, capped by decay', () => {
    const m = new Linear(1, 1, { rng: new Rng(2) });
    const a = new EMA(m, { decay: 0.3, warmup: 'num_updates' });
    const b = new EMA(m, { decay: 0.999, warmup: { power: 0.5 } });
    const seen: [number, number][] = [];
    for (let n = 0; n < 4; n++) {
      seen.push([a.currentDecay(), b.currentDecay()]);
      a.update();
      b.update();
    }
    expect(seen.map((s) => s[0])).toEqual([0.1, 2 / 11, 0.25, 0.3]);
    expect(seen[0]![1]).toBe(0);
    expect(seen[1]![1]).toBeCloseTo(1 - 1 / Math.SQRT2, 12);
    expect(seen[3]![1]).toBeCloseTo(0.5, 12);
    a.dispose();
    b.dispose();
    m.dispose();
  });

  it('swap exchanges live and shadow weights and swaps back; copyTo writes shadows into another module', async () => {
    const m = new Linear(2, 2, { rng: new Rng(3) });
    setWeights(m, 4, 4);
    const ema = new EMA(m, { decay: 0.75 });
    setWeights(m, 8, 0);
    ema.update(); // shadow w = 0.75·4 + 0.25·8 = 5, b = 3
    const inside = await ema.withShadowWeights(() => [first(m.weight), first(m.bias!)]);
    expect(inside).toEqual([5, 3]);
    expect([first(m.weight), first(m.bias!)]).toEqual([8, 0]);
    const other = new Linear(2, 2, { rng: new Rng(9) });
    ema.copyTo(other);
    expect(Array.from(other.weight.dataSync())).toEqual([5, 5, 5, 5]);
    expect(first(m.weight)).toBe(8);
    ema.dispose();
    m.dispose();
    other.dispose();
  });

  it('state dict round trip continues identically and does not leak', () => {
    const before = tf.memory().numTensors;
    const m = new Linear(3, 2, { rng: new Rng(4) });
    const a = new EMA(m, { decay: 0.9, warmup: 'num_updates' });
    const rng = new Rng(5);
    const perturb = () => {
      for (const p of m.parameters()) tf.tidy(() => p.assign(p.add(tf.tensor(rng.fillNormal(new Float32Array(p.size)), p.shape))));
    };
    perturb();
    a.update();
    perturb();
    a.update();
    const b = new EMA(m, { decay: 0.9, warmup: 'num_updates' });
    b.loadStateDict(a.stateDict(), a.numUpdates);
    perturb();
    a.update();
    b.update();
    for (const [k, v] of a.stateDict()) expect(Array.from(b.stateDict().get(k)!.data)).toEqual(Array.from(v.data));
    expect(() => b.loadStateDict(new Map(), 0)).toThrow(/missing \[weight, bias\]/);
    a.dispose();
    b.dispose();
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
