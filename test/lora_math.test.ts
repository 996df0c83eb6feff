import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import {
  applyLoras,
  extractLora,
  injectLora,
  LoraConv2d,
  LoraLinear,
  loraDelta,
  mergeLorasIntoState,
  parseLoraSpec,
  quantile,
  resizeLora,
  svd,
  svdOfProduct,
  truncatedSvd,
} from '../src/lora/index.js';
import { matmul, qr, transpose } from '../src/lora/linalg.js';
import { Conv2d } from '../src/nn/conv.js';
import { Linear } from '../src/nn/linear.js';
import type { HostTensor } from '../src/nn/module.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { loadFixtureDit, refTensor } from './dit_fixture.js';
import { maxRelDiff, randomHost, randomLora, tinyDitLoraSpec } from './helpers/lora.js';

interface DoraFixture {
  r: number;
  alpha: number;
  W: number[][];
  bias: number[];
  A: number[][];
  B: number[][];
  x: number[][];
  R: number[][];
  magnitude: number[];
  y: number[][];
  grad_magnitude: number[];
  grad_A: number[][];
  grad_B: number[][];
  merged_weight: number[][];
  weight_norm_at_init: number[];
}
const dora = JSON.parse(fs.readFileSync(new URL('./fixtures/lora/dora.json', import.meta.url), 'utf8')) as DoraFixture;
/** The same layer run through peft itself (scripts/fixtures/lora_peft_reference.py). */
const peftRef = JSON.parse(fs.readFileSync(new URL('./fixtures/lora/peft_reference.json', import.meta.url), 'utf8')) as Pick<
  DoraFixture,
  'y' | 'grad_A' | 'grad_B' | 'grad_magnitude' | 'merged_weight'
> & { magnitude_at_init: number[]; state_dict_keys: string[] };

function expectNear(got: tf.Tensor, want: number[] | number[][], tol: number, what: string): void {
  const g = got.dataSync();
  const w = want.flat();
  expect(g.length, what).toBe(w.length);
  for (let i = 0; i < w.length; i++) expect(Math.abs(g[i]! - w[i]!), `${what}[${i}]`).toBeLessThan(tol * (1 + Math.abs(w[i]!)));
}

describe('DoRA (PEFT formulation) against the float64 reference fixture', () => {
  function doraLayer(): { lin: Linear; lora: LoraLinear } {
    const lin = new Linear(5, 4);
    lin.weight.assign(tf.tensor2d(dora.W));
    lin.bias!.assign(tf.tensor1d(dora.bias));
    const lora = new LoraLinear(lin, { r: dora.r, alpha: dora.alpha, dora: true });
    return { lin, lora };
  }

  it('magnitude starts at ‖W‖ per output row, so a fresh DoRA adapter changes nothing', () => {
    const { lin, lora } = doraLayer();
    expectNear(lora.magnitude!.weight, dora.weight_norm_at_init, 1e-6, 'm0');
    expectNear(lora.magnitude!.weight, peftRef.magnitude_at_init, 1e-6, 'peft m0');
    const x = tf.tensor2d(dora.x);
    const plain = tf.tidy(() => tf.matMul(x, lin.weight, false, true).add(lin.bias!));
    expect(tf.abs(lin.forward(x).sub(plain)).max().dataSync()[0]).toBeLessThan(1e-6);
  });

  it('output, gradients (weight norm detached) and merged weight match the formula fixture and peft itself', () => {
    const { lin, lora } = doraLayer();
    lora.loraA.weight.assign(tf.tensor2d(dora.A));
    lora.loraB.weight.assign(tf.tensor2d(dora.B));
    lora.magnitude!.weight.assign(tf.tensor1d(dora.magnitude));
    const x = tf.tensor2d(dora.x);
    const R = tf.tensor2d(dora.R);
    expectNear(lin.forward(x), dora.y, 1e-5, 'y');
    const vars = [lora.loraA.weight, lora.loraB.weight, lora.magnitude!.weight];
    const { grads } = tf.variableGrads(() => lin.forward(x).mul(R).sum() as tf.Scalar, vars);
    expectNear(grads[lora.loraA.weight.name]!, dora.grad_A, 1e-5, 'dA');
    expectNear(grads[lora.loraB.weight.name]!, dora.grad_B, 1e-5, 'dB');
    expectNear(grads[lora.magnitude!.weight.name]!, dora.grad_magnitude, 1e-5, 'dm');
    expectNear(lin.forward(x), peftRef.y, 1e-5, 'peft y');
    expectNear(grads[lora.loraA.weight.name]!, peftRef.grad_A, 1e-5, 'peft dA');
    expectNear(grads[lora.loraB.weight.name]!, peftRef.grad_B, 1e-5, 'peft dB');
    expectNear(grads[lora.magnitude!.weight.name]!, peftRef.grad_magnitude, 1e-5, 'peft dm');
    expectNear(tf.tensor2d(dora.merged_weight), peftRef.merged_weight, 1e-6, 'formula vs peft merge');
    // peft saves the magnitude as `<module>.lora_magnitude_vector`, the key our peft layout writes.
    expect(peftRef.state_dict_keys).toContain('base_model.model.proj.lora_magnitude_vector');
    const y = lin.forward(x).dataSync().slice();
    lora.merge();
    expectNear(lin.weight, dora.merged_weight, 1e-6, 'merged W');
    expect(maxRelDiff(lin.forward(x).dataSync(), y)).toBeLessThan(1e-6);
    lora.unmerge();
    expectNear(lin.weight, dora.W, 1e-6, 'unmerged W');
  });
});

describe('LoRA layers and injection', () => {
  it('Conv2d LoRA (patch embedding): zero at start, W + s·B·A when merged, exact unmerge', () => {
    const conv = new Conv2d(4, 8, 2, { stride: 2, rng: new Rng(1) });
    const x = tf.tensor4d(new Rng(2).fillNormal(new Float32Array(1 * 6 * 6 * 4)), [1, 6, 6, 4]);
    const before = conv.forward(x).dataSync().slice();
    const w0 = conv.weight.dataSync().slice();
    const lora = new LoraConv2d(conv, { r: 3, alpha: 6, rng: new Rng(3) });
    expect(conv.forward(x).dataSync()).toEqual(before);
    lora.loraB.weight.assign(tf.tensor(new Rng(4).fillNormal(new Float32Array(8 * 3)), [8, 3, 1, 1]));
    const adapted = conv.forward(x).dataSync().slice();
    expect(maxRelDiff(adapted, before)).toBeGreaterThan(1e-3);
    // ΔW[o, i, h, w] = 2 · Σ_k B[o, k] A[k, i, h, w], by loops.
    const a = lora.loraA.weight.dataSync();
    const b = lora.loraB.weight.dataSync();
    lora.merge();
    const w1 = conv.weight.dataSync();
    for (let o = 0; o < 8; o++)
      for (let j = 0; j < 16; j++) {
        let d = 0;
        for (let k = 0; k < 3; k++) d += b[o * 3 + k]! * a[k * 16 + j]!;
        expect(w1[o * 16 + j]!).toBeCloseTo(w0[o * 16 + j]! + 2 * d, 5);
      }
    expect(maxRelDiff(conv.forward(x).dataSync(), adapted)).toBeLessThan(1e-5);
    lora.unmerge();
    expect(maxRelDiff(conv.weight.dataSync(), w0)).toBeLessThan(1e-6);
  });

  it('per-pattern rank/alpha, exclusions, adaLN and patch-embedding targets on the DiT; only adapter gradients are non-zero', () => {
    const model = loadFixtureDit();
    const lm = injectLora(model, {
      r: 4,
      alpha: 4,
      targets: ['attn.qkv', 'mlp.fc1', 'adaLN_modulation.1', 'x_embedder.proj'],
      exclude: ['final_layer.adaLN_modulation.1'],
      rankPattern: { 'blocks\\.1\\.mlp\\.fc1': 2 },
      alphaPattern: { 'attn.qkv': 8 },
      rslora: false,
      trainable: ['adaLN_modulation.1.bias'],
    });
    expect([...lm.adapters.keys()].sort()).toEqual(
      ['blocks.0.adaLN_modulation.1', 'blocks.0.attn.qkv', 'blocks.0.mlp.fc1', 'blocks.1.adaLN_modulation.1', 'blocks.1.attn.qkv', 'blocks.1.mlp.fc1', 'x_embedder.proj'].sort(),
    );
    expect(lm.adapters.get('blocks.1.mlp.fc1')!.r).toBe(2);
    expect([...lm.extraParameters().keys()]).toEqual(['blocks.0.adaLN_modulation.1.bias', 'blocks.1.adaLN_modulation.1.bias', 'final_layer.adaLN_modulation.1.bias']);
    expect([...model.trainableParameters().keys()].sort()).toEqual([...lm.trainableParameters().keys()].sort());
    expect(lm.adapters.get('blocks.0.mlp.fc1')!.r).toBe(4);
    expect(lm.adapters.get('blocks.0.attn.qkv')!.scaling).toBe(2);
    expect(lm.adapters.get('x_embedder.proj')!.loraA.weight.shape).toEqual([4, 4, 2, 2]);
    const x = refTensor('x') as tf.Tensor4D;
    const t = refTensor('t');
    const y = refTensor('y');
    for (const a of lm.adapters.values()) a.loraB.weight.assign(tf.randomNormal(a.loraB.weight.shape, 0, 0.1, 'float32', 5));
    const all = [...model.namedParameters()];
    const { grads } = tf.variableGrads(() => model.forward(x, t, y).square().mean() as tf.Scalar, all.map(([, v]) => v));
    // A trained extra parameter is saved as its difference from the base and applies back exactly.
    const bias = lm.extraParameters().get('blocks.0.adaLN_modulation.1.bias')!;
    const biasBase = bias.dataSync().slice();
    bias.assign(bias.add(0.25));
    const saved = lm.toWeights();
    expect(saved.diffs!.get('blocks.0.adaLN_modulation.1.bias')!.data.every((v) => Math.abs(v - 0.25) < 1e-6)).toBe(true);
    expect(saved.diffs!.get('blocks.1.adaLN_modulation.1.bias')!.data.every((v) => v === 0)).toBe(true);
    bias.assign(tf.tensor(biasBase));
    const fresh = loadFixtureDit();
    const applied = applyLoras(fresh, [{ lora: saved, strength: 1, label: 'saved' }]);
    const freshBias = [...fresh.namedParameters()].find(([k]) => k === 'blocks.0.adaLN_modulation.1.bias')![1].dataSync();
    for (let i = 0; i < freshBias.length; i += 9) expect(freshBias[i]!).toBeCloseTo(biasBase[i]! + 0.25, 6);
    expect(applied.modules).toContain('blocks.0.adaLN_modulation.1.bias');
    fresh.dispose();
    for (const [name, v] of all) {
      const g = grads[v.name];
      if (name.includes('lora_') || name.endsWith('adaLN_modulation.1.bias')) expect(g ? tf.abs(g).max().dataSync()[0] : 0, name).toBeGreaterThan(0);
      else expect(g ?? null, name).toBeNull();
    }
    model.dispose();
  });
});

describe('merging and applying LoRAs', () => {
  it('several LoRAs at chosen strengths: W + Σ strength·scale·B·A, and remove() restores the weights bit for bit', () => {
    const model = loadFixtureDit();
    const w0 = new Map([...model.namedParameters()].map(([k, v]) => [k, v.dataSync().slice()]));
    const l1 = randomLora(tinyDitLoraSpec(4, 2), 1);
    const l2 = randomLora({ 'blocks.0.attn.qkv': [96, 32, 2, 8] }, 2);
    const applied = applyLoras(model, [
      { lora: l1, strength: 0.7, label: 'l1' },
      { lora: l2, strength: -0.5, label: 'l2' },
    ]);
    expect(applied.modules.length).toBe(8);
    const got = [...model.namedParameters()].find(([k]) => k === 'blocks.0.attn.qkv.weight')![1].dataSync();
    const d1 = loraDelta(l1.modules.get('blocks.0.attn.qkv')!);
    const d2 = loraDelta(l2.modules.get('blocks.0.attn.qkv')!);
    const base = w0.get('blocks.0.attn.qkv.weight')!;
    for (let i = 0; i < base.length; i += 17) expect(got[i]!).toBeCloseTo(base[i]! + 0.7 * d1[i]! - 0.5 * d2[i]!, 5);
    applied.remove();
    for (const [k, v] of model.namedParameters()) expect(v.dataSync(), k).toEqual(w0.get(k));
    model.dispose();
  });

  it('a LoRA that does not fit names the module and both shapes; nothing is changed', () => {
    const model = loadFixtureDit();
    const w0 = [...model.namedParameters()].map(([, v]) => v.dataSync().slice());
    const bad = randomLora({ 'blocks.0.attn.qkv': [96, 32, 4, 4], 'blocks.7.attn.qkv': [96, 32, 4, 4], 'blocks.1.mlp.fc1': [64, 32, 4, 4] });
    let err: unknown;
    try {
      applyLoras(model, [{ lora: bad, strength: 1, label: 'bad.safetensors' }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/bad\.safetensors does not fit the base model \(2 problems\)/);
    expect(msg).toMatch(/blocks\.7\.attn\.qkv: no such module in the base/);
    expect(msg).toMatch(/blocks\.1\.mlp\.fc1: base weight is \[128, 32\] but the LoRA \(down \[4, 32\], up \[64, 4\]\) needs \[64, 32\]/);
    [...model.namedParameters()].forEach(([, v], i) => expect(v.dataSync()).toEqual(w0[i]));
    model.dispose();
  });

  it('merge into a state dict then subtract gives the base back; a trained LoRA saved and merged equals the live merged model', () => {
    const model = loadFixtureDit();
    const state = new Map<string, HostTensor>([...model.stateDict()].map(([k, v]) => [k, { shape: [...v.shape], data: v.dataSync() as Float32Array }]));
    const lm = injectLora(model, { r: 4, alpha: 2, targets: ['attn.qkv', 'mlp.fc2'], rng: new Rng(3) });
    for (const a of lm.adapters.values()) a.loraB.weight.assign(tf.randomNormal(a.loraB.weight.shape, 0, 0.1, 'float32', 9));
    const lora = lm.toWeights();
    lm.merge();
    const merged = mergeLorasIntoState(state, [{ lora, strength: 1, label: 't' }]);
    const live = new Map([...model.namedParameters()].map(([k, v]) => [k, v.dataSync()]));
    for (const k of ['blocks.0.attn.qkv.weight', 'blocks.1.mlp.fc2.weight']) expect(maxRelDiff(merged.get(k)!.data, live.get(k)!)).toBeLessThan(1e-6);
    const back = mergeLorasIntoState(merged, [{ lora, strength: -1, label: 't' }]);
    for (const [k, v] of state) expect(maxRelDiff(back.get(k)!.data, v.data), k).toBeLessThan(1e-6);
    model.dispose();
  });

  it('parses FILE[:strength]', () => {
    expect(parseLoraSpec('a.safetensors')).toEqual({ file: 'a.safetensors', strength: 1 });
    expect(parseLoraSpec('a.safetensors:0.6')).toEqual({ file: 'a.safetensors', strength: 0.6 });
    expect(parseLoraSpec('dir/a.safetensors:-1')).toEqual({ file: 'dir/a.safetensors', strength: -1 });
    expect(parseLoraSpec('C:/x/a.safetensors')).toEqual({ file: 'C:/x/a.safetensors', strength: 1 });
  });
});

/** A matrix with known singular values: U diag(s) Vᵀ from orthonormalised random bases. */
function knownMatrix(m: number, n: number, s: number[], seed: number): Float64Array {
  const rng = new Rng(seed);
  const k = s.length;
  const u = qr(Float64Array.from({ length: m * k }, () => rng.normal()), m, k).q;
  const v = qr(Float64Array.from({ length: n * k }, () => rng.normal()), n, k).q;
  const us = Float64Array.from(u, (x, i) => x * s[i % k]!);
  return matmul(us, transpose(v, n, k), m, k, n);
}

describe('SVD (float64, one-sided Jacobi)', () => {
  it('recovers known singular values, orthonormal factors and A = U S Vᵀ (tall, wide, rank-deficient)', () => {
    for (const [m, n, s] of [
      [12, 7, [9, 5, 3, 2, 1, 0.5, 0.01]],
      [6, 15, [4, 4, 1, 1e-3, 0, 0]],
    ] as [number, number, number[]][]) {
      const a = knownMatrix(m, n, s, m * n);
      const d = svd(a, m, n);
      const sorted = [...s].sort((x, y) => y - x);
      sorted.forEach((v, i) => expect(Math.abs(d.s[i]! - v), `σ${i}`).toBeLessThan(1e-12));
      const back = matmul(Float64Array.from(d.u, (x, i) => x * d.s[i % d.k]!), transpose(d.v, d.n, d.k), m, d.k, n);
      for (let i = 0; i < a.length; i++) expect(Math.abs(back[i]! - a[i]!)).toBeLessThan(1e-12);
      const utu = matmul(transpose(d.u, m, d.k), d.u, d.k, m, d.k);
      const vtv = matmul(transpose(d.v, n, d.k), d.v, d.k, n, d.k);
      for (let i = 0; i < d.k; i++)
        for (let j = 0; j < d.k; j++) {
          expect(Math.abs(utu[i * d.k + j]! - (i === j ? 1 : 0))).toBeLessThan(1e-10);
          expect(Math.abs(vtv[i * d.k + j]! - (i === j ? 1 : 0))).toBeLessThan(1e-10);
        }
    }
  });

  it('svd of a product B·A and the randomized truncated SVD give the leading singular values', () => {
    const rng = new Rng(5);
    const b = Float64Array.from({ length: 40 * 6 }, () => rng.normal());
    const a = Float64Array.from({ length: 6 * 30 }, () => rng.normal());
    const full = svd(matmul(b, a, 40, 6, 30), 40, 30);
    const prod = svdOfProduct(b, a, 40, 6, 30);
    for (let i = 0; i < 6; i++) expect(Math.abs(prod.s[i]! - full.s[i]!)).toBeLessThan(1e-10 * full.s[0]!);
    const big = knownMatrix(500, 420, [50, 30, 20, 10, 5, 1, 0.5, 0.1], 8);
    const top = truncatedSvd(big, 500, 420, 4);
    [50, 30, 20, 10].forEach((v, i) => expect(Math.abs(top.s[i]! - v)).toBeLessThan(1e-8));
  });
});

describe('resize and extract', () => {
  it('resize to a lower rank keeps the top singular directions, reports the energy kept, and is exact at full rank', () => {
    const lora = randomLora({ 'blocks.0.attn.qkv': [96, 32, 8, 4] }, 4);
    const m = lora.modules.get('blocks.0.attn.qkv')!;
    const full = resizeLora(lora, 8);
    expect(maxRelDiff(loraDelta(full.lora.modules.get('blocks.0.attn.qkv')!), loraDelta(m))).toBeLessThan(1e-6);
    expect(full.report[0]!.energyKept).toBeCloseTo(1, 12);
    const small = resizeLora(lora, 3);
    const r3 = small.lora.modules.get('blocks.0.attn.qkv')!;
    expect(r3.down.shape).toEqual([3, 32]);
    expect(r3.up.shape).toEqual([96, 3]);
    expect(r3.alpha / 3).toBeCloseTo(0.5, 12);
    const s = svd(loraDelta(m), 96, 32).s;
    const energy = (s[0]! ** 2 + s[1]! ** 2 + s[2]! ** 2) / s.reduce((acc, v) => acc + v * v, 0);
    expect(small.report[0]!.energyKept).toBeCloseTo(energy, 10);
    // Best rank-3 approximation error = √(σ₄² + … + σ₈²) (Eckart–Young).
    const d3 = loraDelta(r3);
    const d = loraDelta(m);
    const err = Math.sqrt(d.reduce((acc, v, i) => acc + (v - d3[i]!) ** 2, 0));
    expect(err).toBeCloseTo(Math.sqrt(s.slice(3).reduce((acc, v) => acc + v * v, 0)), 5);
  });

  it('extracts a known low-rank difference exactly (clamping off) and names mismatches', () => {
    const rng = new Rng(6);
    const w = randomHost([64, 48], rng);
    const b = randomHost([64, 3], rng, 0.3);
    const a = randomHost([3, 48], rng, 0.3);
    const delta = loraDelta({ down: a, up: b, alpha: 3 });
    const tuned = { shape: [64, 48], data: Float32Array.from(w.data, (v, i) => v + delta[i]!) };
    const other = randomHost([32, 32], rng);
    const base = new Map([['blocks.0.attn.proj.weight', w], ['blocks.0.attn.proj.bias', randomHost([64], rng)], ['blocks.0.mlp.fc1.weight', other]]);
    const tunedMap = new Map([['blocks.0.attn.proj.weight', tuned], ['blocks.0.attn.proj.bias', base.get('blocks.0.attn.proj.bias')!], ['blocks.0.mlp.fc1.weight', other]]);
    const { lora, report, unchanged } = extractLora(base, tunedMap, { rank: 4, clampQuantile: 1 });
    expect([...lora.modules.keys()]).toEqual(['blocks.0.attn.proj']);
    expect(unchanged).toEqual(['blocks.0.mlp.fc1']);
    const got = loraDelta(lora.modules.get('blocks.0.attn.proj')!);
    // float32 storage of W and W+ΔW limits the recovered ΔW to ~1e-6 relative.
    expect(maxRelDiff(got, delta)).toBeLessThan(1e-5);
    expect(report[0]!.energyKept).toBeGreaterThan(0.999999);
    const clamped = extractLora(base, tunedMap, { rank: 4 }).lora.modules.get('blocks.0.attn.proj')!;
    const all = Float64Array.from([...clamped.up.data, ...clamped.down.data]);
    const unclamped = lora.modules.get('blocks.0.attn.proj')!;
    const hi = quantile(Float64Array.from([...unclamped.up.data, ...unclamped.down.data]), 0.99);
    expect(Math.max(...all.map(Math.abs))).toBeCloseTo(hi, 6);
    expect(() => extractLora(base, new Map([['blocks.0.attn.proj.weight', randomHost([64, 40], rng)]]), { rank: 2 })).toThrow(
      /'blocks\.0\.attn\.proj\.weight': base is \[64, 48\] but tuned is \[64, 40\]/,
    );
    expect(quantile(Float64Array.of(1, 2, 3, 4), 0.5)).toBe(2.5);
  });
});
