import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { DIT_LORA_TARGETS, injectLora, LoraLinear, matchesLoraTarget } from '../src/lora/index.js';
import { Linear } from '../src/nn/linear.js';
import { AdamW } from '../src/train/optim.js';
import { Rng } from '../src/util/rng.js';
import { ditLoraState, ditMeta, ditRef, ditState, expectCloseTo, loadFixtureDit, refTensor } from './dit_fixture.js';

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => a.sub(b).abs().max().dataSync()[0]!);

function fixtureInputs() {
  return { x: refTensor('x') as tf.Tensor4D, t: refTensor('t'), y: refTensor('y') };
}

describe('LoRA injection into the DiT', () => {
  it('adapts exactly the targeted Linears with PEFT names; only A and B are trainable', () => {
    const model = loadFixtureDit();
    const baseNames = [...model.stateDict().keys()];
    const lm = injectLora(model, { r: 4, alpha: 8, targets: DIT_LORA_TARGETS });
    expect([...lm.adapters.keys()].sort()).toEqual(
      [0, 1].flatMap((b) => ['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'].map((t) => `blocks.${b}.${t}`)).sort(),
    );
    const shapes = new Map([...model.namedParameters()].map(([k, v]) => [k, v.shape]));
    expect(shapes.get('blocks.0.attn.qkv.lora_A.weight')).toEqual([4, 32]);
    expect(shapes.get('blocks.0.attn.qkv.lora_B.weight')).toEqual([96, 4]);
    expect(shapes.get('blocks.1.mlp.fc2.lora_A.weight')).toEqual([4, 128]);
    expect(shapes.get('blocks.1.mlp.fc2.lora_B.weight')).toEqual([32, 4]);
    // Base names unchanged, so the official checkpoint still loads by name.
    for (const n of baseNames) expect(shapes.has(n), n).toBe(true);
    expect([...shapes.keys()].sort()).toEqual([...baseNames, ...ditLoraState.keys()].sort());
    expect([...model.trainableParameters().keys()].sort()).toEqual([...ditLoraState.keys()].sort());
    expect([...lm.parameters().keys()].sort()).toEqual([...ditLoraState.keys()].sort());
    expect(lm.adapters.get('blocks.0.attn.qkv')!.scaling).toBe(2);
    model.dispose();
  });

  it('a fresh adapter (B = 0) leaves the output bit-identical', () => {
    const model = loadFixtureDit();
    const { x, t, y } = fixtureInputs();
    const before = model.forward(x, t, y);
    injectLora(model, { r: 4, alpha: 8, targets: DIT_LORA_TARGETS, rng: new Rng(1) });
    expect(maxAbsDiff(model.forward(x, t, y), before)).toBe(0);
    model.dispose();
  });

  it('output and LoRA gradients match the torch reference (r 4, alpha 8)', () => {
    const model = loadFixtureDit();
    const lm = injectLora(model, { r: ditMeta.lora.r, alpha: ditMeta.lora.alpha, targets: ditMeta.lora.targets });
    const report = model.loadStateDict(ditLoraState, { strict: false });
    expect(report.unexpected).toEqual([]);
    expect(report.missing.sort()).toEqual([...ditState.keys()].sort());
    const { x, t, y } = fixtureInputs();
    expectCloseTo(model.forward(x, t, y), ditRef.get('lora.output'), 'LoRA output');
    const params = lm.parameters();
    const r = refTensor('r');
    const { grads } = tf.variableGrads(() => model.forward(x, t, y).mul(r).sum() as tf.Scalar, [...params.values()]);
    for (const [name, v] of params) expectCloseTo(grads[v.name]!, ditRef.get(`lora.grad.${name}`), `grad ${name}`);
    model.dispose();
  });

  it('merged and unmerged forwards agree; merge adds B·A·alpha/r to the base weight; unmerge restores it', () => {
    const model = loadFixtureDit();
    const lm = injectLora(model, { r: 4, alpha: 8, targets: DIT_LORA_TARGETS });
    model.loadStateDict(ditLoraState, { strict: false });
    const { x, t, y } = fixtureInputs();
    const unmerged = model.forward(x, t, y);
    const qkv = lm.adapters.get('blocks.0.attn.qkv')!;
    const w0 = qkv.base.weight.arraySync() as number[][];
    lm.merge();
    expect(lm.merged).toBe(true);
    expect(maxAbsDiff(model.forward(x, t, y), unmerged)).toBeLessThan(1e-5);
    // W' = W + s·B·A, checked with a plain loop.
    const a = qkv.loraA.weight.arraySync() as number[][];
    const b = qkv.loraB.weight.arraySync() as number[][];
    const w1 = qkv.base.weight.arraySync() as number[][];
    for (let o = 0; o < 96; o += 7)
      for (let i = 0; i < 32; i += 3) {
        let d = 0;
        for (let k = 0; k < 4; k++) d += b[o]![k]! * a[k]![i]!;
        expect(w1[o]![i]!).toBeCloseTo(w0[o]![i]! + 2 * d, 5);
      }
    lm.unmerge();
    expect(maxAbsDiff(qkv.base.weight, tf.tensor2d(w0))).toBeLessThan(1e-6);
    expect(maxAbsDiff(model.forward(x, t, y), unmerged)).toBeLessThan(1e-6);
    model.dispose();
  });

  it('training updates only A and B: the base weights stay bit-identical, frozen ones get no gradient', () => {
    const model = loadFixtureDit();
    const lm = injectLora(model, { r: 4, alpha: 8, targets: DIT_LORA_TARGETS, rng: new Rng(5) });
    const { x, t, y } = fixtureInputs();
    const base = new Map([...model.namedParameters()].filter(([k]) => !k.includes('lora_')).map(([k, v]) => [k, v.dataSync().slice()]));
    const all = [...model.namedParameters()];
    const { grads } = tf.variableGrads(() => model.forward(x, t, y).square().mean() as tf.Scalar, all.map(([, v]) => v));
    for (const [name, v] of all) {
      if (name.includes('lora_')) expect(grads[v.name], name).toBeTruthy();
      else expect(grads[v.name] ?? null, name).toBeNull();
    }
    // With B = 0 only B gets a gradient at first; after one step A's gradient is non-zero too.
    const named = lm.parameters();
    const opt = new AdamW(named, { weightDecay: 0 });
    for (let step = 0; step < 2; step++) {
      const { grads: g } = tf.variableGrads(() => model.forward(x, t, y).square().mean() as tf.Scalar, [...named.values()]);
      const byName = new Map([...named].map(([k, v]) => [k, g[v.name]!]));
      if (step === 1) expect(tf.abs(byName.get('blocks.0.attn.qkv.lora_A.weight')!).max().dataSync()[0]).toBeGreaterThan(0);
      opt.step(byName, 1e-2);
    }
    for (const [name, v] of model.namedParameters()) if (base.has(name)) expect(v.dataSync(), name).toEqual(base.get(name));
    expect(tf.abs(named.get('blocks.1.mlp.fc1.lora_B.weight')!).max().dataSync()[0]).toBeGreaterThan(0);
    model.dispose();
  });

  it('unload removes the adapters and gives back the base names and trainable flags; merge: true keeps the update', async () => {
    const model = loadFixtureDit();
    const names = [...model.stateDict().keys()].sort();
    const flags = new Map([...model.namedParameters()].map(([k, v]) => [k, v.trainable]));
    const { x, t, y } = fixtureInputs();
    const plain = model.forward(x, t, y);
    const lm = injectLora(model, { r: 4, alpha: 8, targets: DIT_LORA_TARGETS });
    model.loadStateDict(ditLoraState, { strict: false });
    const adapted = model.forward(x, t, y);
    expect(maxAbsDiff(adapted, plain)).toBeGreaterThan(1e-2);
    expect(lm.withAdaptersDisabled(() => maxAbsDiff(model.forward(x, t, y), plain))).toBe(0);
    expect(() => lm.withAdaptersDisabled(() => { throw new Error('inside'); })).toThrow('inside');
    // An async fn keeps the adapters off until its promise settles.
    let release!: () => void;
    const pending = lm.withAdaptersDisabled(() => new Promise<void>((r) => (release = r)));
    expect(maxAbsDiff(model.forward(x, t, y), plain)).toBe(0);
    release();
    await pending;
    expect(maxAbsDiff(model.forward(x, t, y), adapted)).toBe(0);
    lm.unload({ merge: true });
    expect([...model.stateDict().keys()].sort()).toEqual(names);
    for (const [k, v] of model.namedParameters()) expect(v.trainable, k).toBe(flags.get(k));
    expect(flags.get('pos_embed')).toBe(false);
    expect(maxAbsDiff(model.forward(x, t, y), adapted)).toBeLessThan(1e-5);
    model.dispose();
  });

  it('rejects targets that match nothing or a non-Linear module', () => {
    const model = loadFixtureDit();
    expect(() => injectLora(model, { r: 2, targets: ['to_q'] })).toThrow(/no module matches/);
    expect(() => injectLora(model, { r: 2, targets: ['attn'] })).toThrow(/only Linear and Conv2d layers.*blocks\.0\.attn \(Attention\)/);
    model.dispose();
  });
});

describe('LoRA layer', () => {
  function linear(): Linear {
    const lin = new Linear(5, 3, { rng: new Rng(2) });
    lin.weight.assign(tf.tensor2d([[1, 0, -1, 2, 0.5], [0, 1, 1, -1, 0], [0.3, -0.2, 0.1, 0, 1]]));
    lin.bias!.assign(tf.tensor1d([0.1, -0.2, 0.3]));
    return lin;
  }
  const x = [
    [1, 2, 3, 4, 5],
    [-1, 0.5, 0, 2, -3],
  ];
  const A = [
    [0.1, 0.2, -0.3, 0.4, 0.5],
    [-0.5, 0.1, 0.2, 0, 0.3],
  ];
  const B = [
    [1, -1],
    [0.5, 2],
    [-2, 0.25],
  ];

  /** y = W x + b + s·B(A x), by loops. */
  function expected(lin: Linear, s: number): number[][] {
    const w = lin.weight.arraySync() as number[][];
    const b = lin.bias!.arraySync() as number[];
    return x.map((row) =>
      [0, 1, 2].map((o) => {
        let y = b[o]!;
        for (let i = 0; i < 5; i++) y += w[o]![i]! * row[i]!;
        for (let k = 0; k < 2; k++) {
          let h = 0;
          for (let i = 0; i < 5; i++) h += A[k]![i]! * row[i]!;
          y += s * B[o]![k]! * h;
        }
        return y;
      }),
    );
  }

  for (const [label, opts, scale] of [
    ['alpha/r', { r: 2, alpha: 6 }, 3],
    ['alpha defaults to r', { r: 2 }, 1],
    ['rslora alpha/√r', { r: 2, alpha: 6, rslora: true }, 6 / Math.SQRT2],
  ] as const) {
    it(`computes W x + b + B(A x)·scale with scale = ${label}`, () => {
      const lin = linear();
      const lora = new LoraLinear(lin, opts);
      expect(lora.scaling).toBeCloseTo(scale, 12);
      lora.loraA.weight.assign(tf.tensor2d(A));
      lora.loraB.weight.assign(tf.tensor2d(B));
      const got = lin.forward(tf.tensor2d(x)).arraySync() as number[][];
      const want = expected(lin, scale);
      for (let n = 0; n < 2; n++) for (let o = 0; o < 3; o++) expect(got[n]![o]!).toBeCloseTo(want[n]![o]!, 5);
      lin.dispose();
    });
  }

  it('initialises A like PEFT (kaiming-uniform a=√5, or N(0, 1/r) for gaussian) and B to zero', () => {
    const lin = new Linear(256, 64);
    const kaiming = new LoraLinear(lin, { r: 8, rng: new Rng(1) });
    const a = kaiming.loraA.weight.dataSync() as Float32Array;
    const bound = 1 / Math.sqrt(256); // gain √(2/(1+5)) · √(3/fan_in)
    const maxA = Math.max(...a.map(Math.abs));
    expect(maxA).toBeLessThanOrEqual(bound);
    expect(maxA).toBeGreaterThan(0.95 * bound);
    expect(kaiming.loraB.weight.dataSync().every((v) => v === 0)).toBe(true);
    kaiming.remove();
    const gaussian = new LoraLinear(lin, { r: 8, init: 'gaussian', rng: new Rng(1) });
    const g = gaussian.loraA.weight.dataSync() as Float32Array;
    const std = Math.sqrt(g.reduce((s, v) => s + v * v, 0) / g.length);
    expect(std / (1 / 8)).toBeGreaterThan(0.95);
    expect(std / (1 / 8)).toBeLessThan(1.05);
    expect(() => new LoraLinear(lin, { r: 8 })).toThrow(/already carries an adapter/);
    expect(() => new LoraLinear(new Linear(4, 4), { r: 0 })).toThrow(/positive integer/);
    lin.dispose();
  });

  it('dropout acts on the branch input in training only', () => {
    const lin = linear();
    const lora = new LoraLinear(lin, { r: 2, alpha: 2, dropout: 0.5, rng: new Rng(3) });
    lora.loraA.weight.assign(tf.tensor2d(A));
    lora.loraB.weight.assign(tf.tensor2d(B));
    const input = tf.tensor2d(x);
    lin.eval();
    const want = expected(lin, 1);
    const evalOut = lin.forward(input).arraySync() as number[][];
    for (let n = 0; n < 2; n++) for (let o = 0; o < 3; o++) expect(evalOut[n]![o]!).toBeCloseTo(want[n]![o]!, 5);
    lin.train();
    const base = tf.tidy(() => tf.matMul(input, lin.weight, false, true).add(lin.bias!));
    // Each training row's branch is B·A·(m ⊙ x)/(1 − p) for some 0/1 mask m over the 5 inputs
    // (PEFT drops the input, not the rank-r hidden); enumerate the 32 masks to find it.
    const branchFor = (row: number[], mask: number) =>
      [0, 1, 2].map((o) => {
        let y = 0;
        for (let k = 0; k < 2; k++) {
          let h = 0;
          for (let i = 0; i < 5; i++) if (mask & (1 << i)) h += (A[k]![i]! * row[i]!) / 0.5;
          y += B[o]![k]! * h;
        }
        return y;
      });
    const seenMasks = new Set<number>();
    for (let call = 0; call < 4; call++) {
      const branch = tf.tidy(() => lin.forward(input).sub(base)).arraySync() as number[][];
      for (let n = 0; n < 2; n++) {
        const match = [...Array(32).keys()].filter((m) => branchFor(x[n]!, m).every((v, o) => Math.abs(v - branch[n]![o]!) < 1e-4));
        expect(match.length, `call ${call} row ${n}`).toBeGreaterThan(0);
        seenMasks.add(match[0]!);
      }
    }
    expect(seenMasks.size).toBeGreaterThan(1);
    lin.dispose();
  });

  it('matches target names the PEFT way: exact or dotted suffix for strings, full match for RegExps', () => {
    expect(matchesLoraTarget('blocks.0.attn.qkv', ['attn.qkv'])).toBe(true);
    expect(matchesLoraTarget('attn.qkv', ['attn.qkv'])).toBe(true);
    expect(matchesLoraTarget('blocks.0.xattn.qkv', ['attn.qkv'])).toBe(false);
    expect(matchesLoraTarget('blocks.0.attn.qkv2', ['attn.qkv'])).toBe(false);
    expect(matchesLoraTarget('blocks.3.mlp.fc1', [/blocks\.[0-3]\.mlp\.fc\d/])).toBe(true);
    expect(matchesLoraTarget('blocks.13.mlp.fc1', [/blocks\.[0-3]\.mlp\.fc\d/])).toBe(false);
    expect(matchesLoraTarget('x.blocks.3.mlp.fc1', [/blocks\.[0-3]\.mlp\.fc\d/])).toBe(false);
  });
});
