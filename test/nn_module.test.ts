import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Rng } from '../src/util/rng.js';
import { Attention, CrossAttention, Dropout, MLP, StateDictError, geluTanh } from '../src/nn/index.js';

function caught(f: () => unknown): StateDictError {
  try {
    f();
  } catch (e) {
    if (e instanceof StateDictError) return e;
    throw e;
  }
  throw new Error('expected a StateDictError');
}

function shapes(m: { stateDict(): Map<string, tf.Tensor> }): Record<string, number[]> {
  return Object.fromEntries([...m.stateDict()].map(([k, v]) => [k, v.shape]));
}

describe('state dict', () => {
  it('names parameters as timm / HF CLIP / diffusers do', () => {
    expect(shapes(new MLP(4, 16, 3))).toEqual({ 'fc1.weight': [16, 4], 'fc1.bias': [16], 'fc2.weight': [3, 16], 'fc2.bias': [3] });
    expect(shapes(new Attention(8, { numHeads: 2 }))).toEqual({
      'qkv.weight': [24, 8],
      'qkv.bias': [24],
      'proj.weight': [8, 8],
      'proj.bias': [8],
    });
    expect(shapes(new Attention(8, { numHeads: 2, fused: false }))).toEqual({
      'q_proj.weight': [8, 8],
      'q_proj.bias': [8],
      'k_proj.weight': [8, 8],
      'k_proj.bias': [8],
      'v_proj.weight': [8, 8],
      'v_proj.bias': [8],
      'out_proj.weight': [8, 8],
      'out_proj.bias': [8],
    });
    expect(shapes(new CrossAttention(8, 6, { numHeads: 4, numKvHeads: 2 }))).toEqual({
      'to_q.weight': [8, 8],
      'to_k.weight': [4, 6],
      'to_v.weight': [4, 6],
      'to_out.0.weight': [8, 8],
      'to_out.0.bias': [8],
    });
  });

  it('grouped-query attention really has fewer key/value parameters', () => {
    // dim 64, 8 heads of 8: qkv rows = (8 + 2·Hkv)·8.
    const count = (hkv: number) => new Attention(64, { numHeads: 8, numKvHeads: hkv }).numParameters();
    const expected = (hkv: number) => (8 + 2 * hkv) * 8 * 65 + 64 * 65;
    expect(count(8)).toBe(expected(8));
    expect(count(2)).toBe(expected(2));
    expect(count(1)).toBe(expected(1));
    expect(count(8) - count(2)).toBe(2 * 6 * 8 * 65);
  });

  it('strict load names missing, unexpected and mis-shaped keys', () => {
    const m = new MLP(4, 8, 4);
    const full = () => new Map([...new MLP(4, 8, 4, { rng: new Rng(1) }).stateDict()]);

    const noBias = full();
    noBias.delete('fc2.bias');
    const e1 = caught(() => m.loadStateDict(noBias));
    expect(e1.missing).toEqual(['fc2.bias']);
    expect(e1.message).toMatch(/missing keys \(1\): fc2\.bias/);

    const extra = full();
    extra.set('fc3.weight', tf.zeros([2, 2]));
    const e2 = caught(() => m.loadStateDict(extra));
    expect(e2.unexpected).toEqual(['fc3.weight']);
    expect(e2.message).toMatch(/unexpected keys \(1\): fc3\.weight/);

    const wrong = full();
    wrong.set('fc1.weight', tf.zeros([8, 5]));
    for (const strict of [true, false]) {
      const e3 = caught(() => m.loadStateDict(wrong, { strict }));
      expect(e3.mismatched).toEqual([{ key: 'fc1.weight', expected: [8, 4], got: [8, 5] }]);
      expect(e3.message).toMatch(/size mismatch for fc1\.weight: expected \[8,4\], got \[8,5\]/);
    }
  });

  it('a failed load changes nothing; a non-strict load fills the intersection and reports the rest', () => {
    const m = new MLP(4, 8, 4, { rng: new Rng(2) });
    const before = m.fc1.weight.arraySync();
    const src = new Map([...new MLP(4, 8, 4, { rng: new Rng(3) }).stateDict()]);
    src.set('fc1.weight', tf.zeros([1]));
    caught(() => m.loadStateDict(src, { strict: false }));
    expect(m.fc1.weight.arraySync()).toEqual(before);

    const partial = new Map([...new MLP(4, 8, 4, { rng: new Rng(3) }).stateDict()].filter(([k]) => k.startsWith('fc1.')));
    partial.set('head.weight', tf.zeros([1]));
    const fc2Before = m.fc2.weight.arraySync();
    const report = m.loadStateDict(partial, { strict: false });
    expect(report).toEqual({ missing: ['fc2.weight', 'fc2.bias'], unexpected: ['head.weight'] });
    expect(m.fc1.weight.arraySync()).toEqual(partial.get('fc1.weight')!.arraySync());
    expect(m.fc2.weight.arraySync()).toEqual(fc2Before);
  });

  it('loads host tensors (flat arrays with a shape)', () => {
    const m = new MLP(2, 3, 1);
    const host = (shape: number[]) => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => i) });
    m.loadStateDict({ 'fc1.weight': host([3, 2]), 'fc1.bias': host([3]), 'fc2.weight': host([1, 3]), 'fc2.bias': host([1]) });
    expect(m.fc1.weight.arraySync()).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
    ]);
  });
});

describe('freeze and train/eval', () => {
  it('freezing a child removes exactly its parameters from the trainable set and from the gradients', () => {
    const attn = new Attention(8, { numHeads: 2 });
    attn.qkv!.freeze();
    expect([...attn.trainableParameters().keys()]).toEqual(['proj.weight', 'proj.bias']);
    const x = tf.randomNormal([1, 3, 8]) as tf.Tensor3D;
    const { grads } = tf.variableGrads(() => attn.forward(x).sum() as tf.Scalar, [...attn.trainableParameters().values()]);
    expect(Object.keys(grads).length).toBe(2);
    attn.unfreeze();
    expect([...attn.trainableParameters().keys()]).toEqual(['qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias']);
    expect(attn.numParameters(true)).toBe(attn.numParameters());
  });

  it('eval() reaches nested dropout: MLP is deterministic fc2(act(fc1 x)) in eval, dropped in train', () => {
    const m = new MLP(6, 32, 6, { dropout: 0.5, rng: new Rng(5) });
    const x = tf.randomNormal([4, 6]);
    const plain = m.fc2.forward(geluTanh(m.fc1.forward(x)));
    m.eval();
    expect([...m.namedModules()].every(([, c]) => !c.training)).toBe(true);
    expect(m.forward(x).arraySync()).toEqual(plain.arraySync());
    m.train();
    const dropped = m.forward(x).dataSync();
    const ref = plain.dataSync();
    expect(dropped.some((v, i) => v !== ref[i])).toBe(true);
    expect(dropped.filter((v) => v === 0).length).toBeGreaterThan(0);
  });
});

describe('Dropout', () => {
  it('zeroes about p of the elements and scales the rest by 1/(1−p)', () => {
    const d = new Dropout(0.25, { rng: new Rng(11) });
    const y = d.forward(tf.ones([200_000])).dataSync();
    const zeros = y.filter((v) => v === 0).length;
    // Binomial(n, p) standard deviation √(n·p·(1−p)) ≈ 194; allow five.
    expect(Math.abs(zeros - 50_000)).toBeLessThan(5 * 194);
    expect(y.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6)).toBe(true);
  });

  it('draws the same mask from the same Rng state, and a per-call Rng overrides the stored one', () => {
    const rng = new Rng(12);
    const state = rng.getState();
    const d = new Dropout(0.5, { rng });
    const x = tf.range(1, 65);
    const a = d.forward(x).arraySync();
    rng.setState(state);
    expect(d.forward(x).arraySync()).toEqual(a);
    expect(d.forward(x, new Rng(12)).arraySync()).toEqual(a);
    expect(d.forward(x).arraySync()).not.toEqual(a);
  });

  it('is the identity in eval, and refuses to run in training without an Rng', () => {
    const x = tf.tensor([1, 2, 3]);
    expect(new Dropout(0.9).eval().forward(x).arraySync()).toEqual([1, 2, 3]);
    expect(() => new Dropout(0.1).forward(x)).toThrow(/needs an Rng/);
    expect(() => new Dropout(1)).toThrow(RangeError);
  });
});
