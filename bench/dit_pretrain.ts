/**
 * One DiT pretraining step at the trunk of the default recipe (recipes/dit-pretrain.yaml via
 * configs/dit-pixel-tiny.yaml: 32 px pixels, patch 4 → 64 tokens, 4 × 128, 4 heads), every parameter
 * trained: AdamW, rectified-flow velocity MSE at logit-normal t. Class-conditioned (10 labels) so
 * that bench/torch_ref.py can time the same step with the fixtures' torch DiT; the default recipe
 * adds a text encoder and cross-attention on top of this trunk.
 */
import { tf } from '../src/backend/tf.js';
import { flowInterpolate, flowLoss, sampleFlowTimes } from '../src/diffusion/objectives.js';
import { DiT } from '../src/models/dit/model.js';
import { AdamW } from '../src/train/optim.js';
import { Rng } from '../src/util/rng.js';
import type { BenchRow } from './row.js';

/** Keep in step with bench/torch_ref.py (DIT_PRETRAIN). */
export const DIT_PRETRAIN_BENCH = { inputSize: 32, patchSize: 4, channels: 3, hidden: 128, depth: 4, heads: 4, classes: 10, batch: 32, lr: 1e-3 } as const;

/** The step as bench/torch_ref.py names it (without a backend prefix), for interleaved timing in bench/steps.ts. */
export function ditPretrainStep(): { name: string; step: () => void; dispose: () => void; count: number } {
  const b = DIT_PRETRAIN_BENCH;
  const name = `dit pretrain step (32px, patch 4, 4×128, batch ${b.batch})`;
  const model = new DiT(
    { inputSize: b.inputSize, patchSize: b.patchSize, inChannels: b.channels, hiddenSize: b.hidden, depth: b.depth, numHeads: b.heads, mlpRatio: 4, classDropoutProb: 0.1, numClasses: b.classes, learnSigma: false },
    { rng: new Rng(0) },
  ).train();
  const params = model.trainableParameters();
  const varList = [...params.values()];
  const opt = new AdamW(params, { weightDecay: 0 });
  const rng = new Rng(2);
  const size = b.batch * b.inputSize * b.inputSize * b.channels;
  const shape: [number, number, number, number] = [b.batch, b.inputSize, b.inputSize, b.channels];
  const step = () => {
    const t = sampleFlowTimes(b.batch, rng);
    const labels = tf.tensor1d(Int32Array.from({ length: b.batch }, () => rng.int(b.classes)), 'int32');
    const x0 = tf.tensor4d(rng.fillNormal(new Float32Array(size)), shape);
    const eps = tf.tensor4d(rng.fillNormal(new Float32Array(size)), shape);
    const tt = tf.tensor1d(Float32Array.from(t, (v) => v * 1000));
    const { xt, target } = flowInterpolate(x0, eps, t);
    const { value, grads } = tf.variableGrads(() => flowLoss(model.forward(xt, tt, labels), target, t).loss.mean() as tf.Scalar, varList);
    value.dataSync();
    const named = new Map<string, tf.Tensor>();
    for (const [n, v] of params) named.set(n, grads[v.name]!);
    opt.step(named, b.lr);
    tf.dispose([value, ...Object.values(grads), x0, eps, tt, labels, xt, target]);
    varList[0]!.dataSync();
  };
  const dispose = () => {
    opt.dispose();
    model.dispose();
  };
  return { name, step, dispose, count: model.numParameters() };
}

export function ditPretrainStepRow(backend: string, bestMs: (fn: () => void, repeats: number) => number, repeats: number): BenchRow {
  const { name, step, dispose, count } = ditPretrainStep();
  const ms = bestMs(step, backend === 'cpu' ? 1 : repeats);
  dispose();
  return { name: `${backend} ${name}`, value: ms, unit: 'ms', note: `${count.toLocaleString()} params, all trained` };
}
