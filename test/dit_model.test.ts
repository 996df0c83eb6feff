import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { ditConfig, ditConfigs, ditParameterCount } from '../src/models/dit/config.js';
import { sincosPosEmbed2d, timestepEmbedding, timestepFrequencies } from '../src/models/dit/embeddings.js';
import { DiT } from '../src/models/dit/model.js';
import { Linear } from '../src/nn/linear.js';
import { Rng } from '../src/util/rng.js';
import { ditMeta, ditRef, ditState, expectCloseTo, fixtureDitConfig, loadFixtureDit, refTensor } from './dit_fixture.js';

describe('DiT layout', () => {
  it('has exactly the torch state_dict names and shapes, pos_embed included but not trainable', () => {
    const model = new DiT(fixtureDitConfig);
    const ours = new Map([...model.stateDict()].map(([k, v]) => [k, v.shape]));
    const theirs = new Map([...ditState].map(([k, v]) => [k, v.shape]));
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [k, shape] of theirs) expect(ours.get(k), k).toEqual(shape);
    expect(ours.get('blocks.1.attn.qkv.weight')).toEqual([96, 32]);
    expect(ours.get('x_embedder.proj.weight')).toEqual([32, 4, 2, 2]);
    expect(ours.get('y_embedder.embedding_table.weight')).toEqual([11, 32]);
    expect(ours.get('final_layer.linear.weight')).toEqual([2 * 2 * 8, 32]);
    expect(model.numParameters()).toBe(ditMeta.parameter_count);
    expect(model.trainableParameters().has('pos_embed')).toBe(false);
    expect(model.trainableParameters().size).toBe(ours.size - 1);
    model.dispose();
  });

  it('registers every official variant; the count formula matches built models and the paper sizes', () => {
    const names = ['S', 'B', 'L', 'XL'].flatMap((s) => [2, 4, 8].map((p) => `DiT-${s}/${p}`));
    for (const n of names) expect(Object.keys(ditConfigs)).toContain(n);
    expect(ditConfig('DiT-XL/2')).toMatchObject({ depth: 28, hiddenSize: 1152, numHeads: 16, patchSize: 2, inputSize: 32, numClasses: 1000, learnSigma: true });
    expect(ditConfig('DiT-S/2')).toMatchObject({ depth: 12, hiddenSize: 384, numHeads: 6, patchSize: 2 });
    for (const c of [fixtureDitConfig, ditConfig('DiT-tiny/2', { learnSigma: false, classDropoutProb: 0 }), ditConfig('DiT-S/8')]) {
      const m = new DiT(c);
      expect(ditParameterCount(c)).toBe(m.numParameters());
      m.dispose();
    }
    // Counted on torch models built by the fixture script (the paper rounds them to 33M, 130M, 458M, 675M).
    for (const [name, count] of Object.entries(ditMeta.variant_parameter_counts)) expect(ditParameterCount(ditConfig(name)), name).toBe(count);
    expect(() => ditConfig('DiT-S/3')).toThrow(/unknown DiT variant/);
    expect(() => ditConfig('DiT-S/2', { inputSize: 33 })).toThrow(/multiple of patchSize/);
  });

  it('initialises as the reference: zero adaLN-Zero/output/bias tensors, xavier linears, N(0, 0.02) embeddings', () => {
    const model = new DiT(fixtureDitConfig, { rng: new Rng(3) });
    const zero = new Set(ditMeta.zero_at_init);
    for (const [name, v] of model.stateDict()) {
      const data = v.dataSync();
      const allZero = data.every((x) => x === 0);
      expect(allZero, `${name} zero at init`).toBe(zero.has(name));
    }
    const std = (d: Float32Array) => Math.sqrt(d.reduce((s, x) => s + x * x, 0) / d.length);
    for (const [name, m] of model.namedModules()) {
      if (!(m instanceof Linear) || zero.has(`${name}.weight`) || name.startsWith('t_embedder')) continue;
      const [out, inp] = m.weight.shape as [number, number];
      const bound = Math.sqrt(6 / (inp + out));
      const w = m.weight.dataSync() as Float32Array;
      expect(Math.max(...w.map(Math.abs)), name).toBeLessThanOrEqual(bound);
      expect(std(w) / (bound / Math.sqrt(3)), name).toBeGreaterThan(0.9);
      expect(std(w) / (bound / Math.sqrt(3)), name).toBeLessThan(1.1);
    }
    // Patch conv as a Linear over [D, C·p·p]: fan_out is D, not D·p·p as for a conv.
    const patch = model.xEmbedder.proj.weight.dataSync() as Float32Array;
    const patchBound = Math.sqrt(6 / (4 * 2 * 2 + 32));
    expect(Math.max(...patch.map(Math.abs))).toBeLessThanOrEqual(patchBound);
    expect(Math.max(...patch.map(Math.abs))).toBeGreaterThan(0.9 * patchBound);
    expect(std(model.tEmbedder.mlp.first.weight.dataSync() as Float32Array) / 0.02).toBeCloseTo(1, 1);
    expect(std(model.tEmbedder.mlp.second.weight.dataSync() as Float32Array) / 0.02).toBeCloseTo(1, 1);
    const table = model.yEmbedder!.embeddingTable.weight.dataSync() as Float32Array;
    expect(Math.abs(std(table) / 0.02 - 1)).toBeLessThan(0.15);
    model.dispose();
  });
});

describe('DiT embeddings against the reference', () => {
  it('pos_embed is the reference sin-cos table', () => {
    const ours = sincosPosEmbed2d(32, 4);
    const theirs = ditState.get('pos_embed')!;
    expect(theirs.shape).toEqual([1, 16, 32]);
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - theirs.data[i]!));
    expect(worst).toBeLessThan(1e-7);
    // Token (row 1, col 2): the first half encodes the column, the second the row; sin before cos.
    const tok = 1 * 4 + 2;
    expect(ours[tok * 32 + 0]).toBeCloseTo(Math.sin(2), 6);
    expect(ours[tok * 32 + 8]).toBeCloseTo(Math.cos(2), 6);
    expect(ours[tok * 32 + 16]).toBeCloseTo(Math.sin(1), 6);
    expect(ours[tok * 32 + 24]).toBeCloseTo(Math.cos(1), 6);
  });

  it('timestep frequencies are the correctly rounded table, within one float32 ulp of torch, features [cos, sin] match', () => {
    const ours = timestepFrequencies(256);
    expect(ours.length).toBe(128);
    expect([...ours]).toEqual([...ditRef.get('timestep_freqs')!.data]);
    const torchFreqs = ditRef.get('timestep_freqs_torch')!.data;
    for (let i = 0; i < 128; i++) expect(Math.abs(ours[i]! - torchFreqs[i]!), `freq ${i}`).toBeLessThanOrEqual(ours[i]! * 2 ** -23);
    const t = refTensor('t_probe');
    expectCloseTo(timestepEmbedding(t, 256), ditRef.get('t_probe_features'), 'timestep features', 1e-6, 0);
    const small = timestepEmbedding(tf.tensor1d([0, 1, 17], 'int32'), 256);
    const want = ditRef.get('t_probe_features')!;
    expectCloseTo(small, { shape: [3, 256], data: want.data.slice(0, 3 * 256) }, 'timestep features t ≤ 17', 1e-6, 0);
    expect(timestepEmbedding(tf.tensor1d([5]), 7).shape).toEqual([1, 7]);
    expect(timestepEmbedding(tf.tensor1d([5]), 7).dataSync()[6]).toBe(0);
  });
});

describe('DiT forward and backward against the torch reference', () => {
  it('output matches (eval, labels kept)', () => {
    const model = loadFixtureDit();
    const out = model.forward(refTensor('x') as tf.Tensor4D, refTensor('t'), refTensor('y'));
    expect(out.shape).toEqual([4, 8, 8, 8]);
    expectCloseTo(out, ditRef.get('output'), 'output');
    model.dispose();
  });

  it('forced label drops (the CFG null class) and forwardWithCfg match', () => {
    const model = loadFixtureDit();
    const x = refTensor('x') as tf.Tensor4D;
    expectCloseTo(model.forward(x, refTensor('t'), refTensor('y'), { forceDropIds: refTensor('force_drop_ids') }), ditRef.get('output_force_drop'), 'force drop');
    const cfg = model.forwardWithCfg(x, refTensor('t'), refTensor('y_cfg'), ditMeta.cfg_scale, ditMeta.cfg_guided_channels);
    expectCloseTo(cfg, ditRef.get('output_cfg'), 'cfg');
    model.dispose();
  });

  it('gradients of sum(out·R) w.r.t. the input and parameters match', () => {
    const model = loadFixtureDit();
    const params = new Map(model.namedParameters());
    const r = refTensor('r');
    const [t, y] = [refTensor('t'), refTensor('y')];
    const wrt = ditMeta.grad_params.map((n) => params.get(n)!);
    const grads = tf.grads((x: tf.Tensor, ..._p: tf.Tensor[]) => model.forward(x as tf.Tensor4D, t, y).mul(r).sum())([refTensor('x'), ...wrt]);
    expectCloseTo(grads[0]!, ditRef.get('grad.x'), 'grad x');
    ditMeta.grad_params.forEach((n, i) => expectCloseTo(grads[i + 1]!, ditRef.get(`grad.${n}`), `grad ${n}`));
    model.dispose();
  });
});

describe('DiT pieces', () => {
  it('unpatchify puts token (i, j) channel (a·p + b)·C + c at pixel (i·p + a, j·p + b), channel c', () => {
    const model = new DiT(fixtureDitConfig);
    const [n, g, p, c] = [2, 4, 2, 8];
    const x = tf.randomNormal([n, g * g, p * p * c], 0, 1, 'float32', 5) as tf.Tensor3D;
    const out = model.unpatchify(x).arraySync() as number[][][][];
    const xs = x.arraySync() as number[][][];
    for (let b = 0; b < n; b++)
      for (let i = 0; i < g; i++)
        for (let j = 0; j < g; j++)
          for (let a = 0; a < p; a++)
            for (let q = 0; q < p; q++) for (let ch = 0; ch < c; ch++) expect(out[b]![i * p + a]![j * p + q]![ch]).toBe(xs[b]![i * g + j]![(a * p + q) * c + ch]);
    model.dispose();
  });

  it('training mode drops labels to the null class with probability classDropoutProb, from the given Rng', () => {
    const model = new DiT({ ...fixtureDitConfig, classDropoutProb: 0.25 });
    model.loadStateDict(ditState);
    const labels = tf.tensor1d(Array.from({ length: 20000 }, (_, i) => i % 10), 'int32');
    const dropped = model.yEmbedder!.tokenDrop(labels, { rng: new Rng(9) }).dataSync();
    const l = labels.dataSync();
    let count = 0;
    for (let i = 0; i < l.length; i++) {
      if (dropped[i] === 10) count++;
      else expect(dropped[i]).toBe(l[i]);
    }
    expect(count / l.length).toBeGreaterThan(0.24);
    expect(count / l.length).toBeLessThan(0.26);
    // A training forward equals an eval forward with the same drops forced, and differs from no drops.
    const x = refTensor('x') as tf.Tensor4D;
    const [t, y] = [refTensor('t'), refTensor('y')];
    const rng = new Rng(4);
    const draws = new Rng(rng.getState());
    const forceIds = Array.from({ length: 4 }, () => (draws.uniform() < 0.25 ? 1 : 0));
    expect(forceIds.some((d) => d === 1)).toBe(true);
    const force = tf.tensor1d(forceIds, 'int32');
    const trained = model.train().forward(x, t, y, { rng });
    const forced = model.eval().forward(x, t, y, { forceDropIds: force });
    expect(trained.arraySync()).toEqual(forced.arraySync());
    expect(tf.max(tf.abs(trained.sub(model.forward(x, t, y)))).dataSync()[0]).toBeGreaterThan(1e-3);
    model.dispose();
  });
});
