import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Linear } from '../src/nn/linear.js';
import { SGD } from '../src/train/optim.js';
import { StepFunction } from '../src/train/step.js';
import { Rng } from '../src/util/rng.js';

// y = x·W + b under mean squared error, one output: the gradient is worked out by hand in float64
// (dL/dW = 2/N · xᵀ(pred − y), dL/db = 2/N · Σ(pred − y)) and compared with what the step applied.
const N = 8;
const IN = 3;

function data(seed: number): { x: Float32Array; y: Float32Array } {
  const rng = new Rng(seed);
  const x = rng.fillNormal(new Float32Array(N * IN));
  const y = rng.fillNormal(new Float32Array(N), 0, 3);
  return { x, y };
}

function handGrad(w: Float32Array, b: number, x: Float32Array, y: Float32Array, rows: number[]): number[] {
  const g = new Array<number>(IN + 1).fill(0);
  for (const i of rows) {
    let pred = b;
    for (let j = 0; j < IN; j++) pred += x[i * IN + j]! * w[j]!;
    const r = (2 / rows.length) * (pred - y[i]!);
    for (let j = 0; j < IN; j++) g[j]! += r * x[i * IN + j]!;
    g[IN]! += r;
  }
  return g;
}

function setup(clip: number, gradAccum: number) {
  const model = new Linear(IN, 1, { rng: new Rng(1) });
  const params = model.trainableParameters();
  const w0 = Float32Array.from(params.get('weight')!.dataSync());
  const b0 = params.get('bias')!.dataSync()[0]!;
  const optimizer = new SGD(params, { momentum: 0, weightDecay: 0 });
  const step = new StepFunction({ params, optimizer, gradAccum, clip });
  return { model, params, w0, b0, optimizer, step };
}

/** Micro-batch i of k: rows [i·N/k, (i+1)·N/k). */
function micro(model: Linear, x: Float32Array, y: Float32Array, i: number, k: number) {
  const rows = N / k;
  const xt = tf.tensor2d(x.subarray(i * rows * IN, (i + 1) * rows * IN), [rows, IN]);
  const yt = tf.tensor2d(y.subarray(i * rows, (i + 1) * rows), [rows, 1]);
  return {
    loss: () => {
      const mse = tf.losses.meanSquaredError(yt, model.forward(xt)) as tf.Scalar;
      return { total: mse, parts: { mse_twice: mse.mul(2) as tf.Scalar } };
    },
    done: () => tf.dispose([xt, yt]),
  };
}

function applied(params: Map<string, tf.Variable>, w0: Float32Array, b0: number, lr: number): number[] {
  const w = params.get('weight')!.dataSync();
  const b = params.get('bias')!.dataSync()[0]!;
  return [...Array.from(w, (v, j) => (w0[j]! - v) / lr), (b0 - b) / lr];
}

describe('StepFunction', () => {
  const lr = 0.1;
  const { x, y } = data(3);
  const all = Array.from({ length: N }, (_, i) => i);

  it('with grad_clip 0 applies the unclipped gradient and reports its norm', async () => {
    const s = setup(0, 1);
    const g = handGrad(s.w0, s.b0, x, y, all);
    const norm = Math.hypot(...g);
    const r = await s.step.run(lr, (i) => micro(s.model, x, y, i, 1));
    expect(r.gradNorm).toBeCloseTo(norm, 4);
    expect(norm).toBeGreaterThan(1); // so a clip of 1 below would have changed it
    applied(s.params, s.w0, s.b0, lr).forEach((v, j) => expect(v).toBeCloseTo(g[j]!, 3));
    expect(r.parts.mse_twice).toBeCloseTo(2 * r.loss, 5);
    expect(r.skipped).toBe(false);
  });

  it('clips by global norm when grad_clip > 0', async () => {
    const s = setup(0.5, 1);
    const g = handGrad(s.w0, s.b0, x, y, all);
    const norm = Math.hypot(...g);
    const r = await s.step.run(lr, (i) => micro(s.model, x, y, i, 1));
    expect(r.gradNorm).toBeCloseTo(norm, 4); // reported before clipping
    applied(s.params, s.w0, s.b0, lr).forEach((v, j) => expect(v).toBeCloseTo((g[j]! * 0.5) / norm, 4));
  });

  it('averages gradients, loss and parts over micro-batches like one large batch', async () => {
    const s = setup(0, 2);
    const g = handGrad(s.w0, s.b0, x, y, all);
    const halves = [0, 1].map((h) => handGrad(s.w0, s.b0, x, y, all.slice(h * 4, h * 4 + 4)));
    // The mean of the two half-batch gradients is the full-batch gradient (equal halves).
    halves[0]!.forEach((v, j) => expect((v + halves[1]![j]!) / 2).toBeCloseTo(g[j]!, 10));
    const r = await s.step.run(lr, (i) => micro(s.model, x, y, i, 2));
    applied(s.params, s.w0, s.b0, lr).forEach((v, j) => expect(v).toBeCloseTo(g[j]!, 3));
    let mse = 0;
    for (let i = 0; i < N; i++) {
      let pred = s.b0;
      for (let j = 0; j < IN; j++) pred += x[i * IN + j]! * s.w0[j]!;
      mse += (pred - y[i]!) ** 2 / N;
    }
    expect(r.loss).toBeCloseTo(mse, 4);
    expect(r.parts.mse_twice).toBeCloseTo(2 * mse, 4);
  });

  it('keeps the tensor count flat', async () => {
    const s = setup(1, 2);
    await s.step.run(lr, (i) => micro(s.model, x, y, i, 2));
    const before = tf.memory().numTensors;
    await s.step.run(lr, (i) => micro(s.model, x, y, i, 2));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses a negative clip or a zero accumulation count', () => {
    const s = setup(0, 1);
    expect(() => new StepFunction({ params: s.params, optimizer: s.optimizer, clip: -1 })).toThrow(/clip must be ≥ 0/);
    expect(() => new StepFunction({ params: s.params, optimizer: s.optimizer, gradAccum: 0 })).toThrow(/gradAccum/);
  });
});
