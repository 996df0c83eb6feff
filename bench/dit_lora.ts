/**
 * One LoRA fine-tuning step of DiT-S/2 on 256 px images (32×32×4 latents, 256 tokens): rank-16
 * adapters on attn.qkv / attn.proj / mlp.fc1 / mlp.fc2 of every block, frozen base, AdamW on the
 * adapters, MSE between the eps half of the output and the noise at random t and labels (DiT's
 * linear-beta schedule). bench/torch_ref.py times the same step in PyTorch. The weights are as
 * initialised: the cost of dense kernels does not depend on their values.
 */
import { tf } from '../src/backend/tf.js';
import { injectLora, DIT_LORA_TARGETS } from '../src/lora/index.js';
import { ditConfig } from '../src/models/dit/config.js';
import { DiT } from '../src/models/dit/model.js';
import { AdamW } from '../src/train/optim.js';
import { Rng } from '../src/util/rng.js';
import type { BenchRow } from './row.js';

/** Keep in step with bench/torch_ref.py. Batch 1 keeps the wasm step near 2 s on the 2-core machines (batch 4 exhausts the wasm heap). */
export const DIT_BENCH = { variant: 'DiT-S/2', batch: 1, rank: 16, alpha: 16, lr: 1e-4, steps: 1000 } as const;

/** ᾱ_t for DiT's schedule: linear betas 1e-4 … 0.02 over 1000 steps. */
function alphasCumprod(steps: number): Float64Array {
  const out = new Float64Array(steps);
  let prod = 1;
  for (let i = 0; i < steps; i++) {
    prod *= 1 - (1e-4 + ((0.02 - 1e-4) * i) / (steps - 1));
    out[i] = prod;
  }
  return out;
}

/** One LoRA optimizer step of DiT-S/2 as a closure; `dispose` frees the model and optimizer state. */
export function ditLoraStep(batch: number = DIT_BENCH.batch): { name: string; step: () => void; dispose: () => void } {
  const config = ditConfig(DIT_BENCH.variant);
  const model = new DiT(config, { rng: new Rng(0) }).train();
  const lora = injectLora(model, { r: DIT_BENCH.rank, alpha: DIT_BENCH.alpha, targets: DIT_LORA_TARGETS, rng: new Rng(1) });
  const params = lora.parameters();
  const varList = [...params.values()];
  const opt = new AdamW(params, { weightDecay: 0 });
  const abar = alphasCumprod(DIT_BENCH.steps);
  const rng = new Rng(2);
  const b = batch;
  const s = config.inputSize;
  const c = config.inChannels;
  const latentSize = b * s * s * c;
  const step = () => {
    const t = Int32Array.from({ length: b }, () => rng.int(DIT_BENCH.steps));
    const labels = Int32Array.from({ length: b }, () => rng.int(config.numClasses));
    const x0 = tf.tensor4d(rng.fillNormal(new Float32Array(latentSize)), [b, s, s, c]);
    const eps = tf.tensor4d(rng.fillNormal(new Float32Array(latentSize)), [b, s, s, c]);
    const signal = tf.tensor4d(Float32Array.from(t, (ti) => Math.sqrt(abar[ti]!)), [b, 1, 1, 1]);
    const noise = tf.tensor4d(Float32Array.from(t, (ti) => Math.sqrt(1 - abar[ti]!)), [b, 1, 1, 1]);
    const [tt, yy] = [tf.tensor1d(t, 'int32'), tf.tensor1d(labels, 'int32')];
    const { value, grads } = tf.variableGrads(() => {
      const xt = x0.mul(signal).add(eps.mul(noise)) as tf.Tensor4D;
      const out = model.forward(xt, tt, yy);
      return out.slice([0, 0, 0, 0], [-1, -1, -1, c]).sub(eps).square().mean() as tf.Scalar;
    }, varList);
    value.dataSync();
    const named = new Map<string, tf.Tensor>();
    for (const [name, v] of params) named.set(name, grads[v.name]!);
    opt.step(named, DIT_BENCH.lr);
    tf.dispose([value, ...Object.values(grads), x0, eps, signal, noise, tt, yy]);
    varList[0]!.dataSync();
  };
  return {
    name: `dit-s/2 lora step (256 tokens, batch ${batch})`,
    step,
    dispose: () => {
      opt.dispose();
      model.dispose();
    },
  };
}

export function ditLoraStepRow(backend: string, bestMs: (fn: () => void, repeats: number) => number, repeats: number, batch: number = DIT_BENCH.batch): BenchRow {
  const name = `${backend} dit-s/2 lora step (256 tokens, batch ${batch})`;
  // ~100 GFLOP a step: minutes on the plain-JS reference backend.
  if (backend === 'cpu') return { name, value: NaN, unit: 'ms', note: 'skipped on cpu (minutes per step)' };
  const { step, dispose } = ditLoraStep(batch);
  const ms = bestMs(step, repeats);
  dispose();
  return { name, value: ms, unit: 'ms', note: `rank ${DIT_BENCH.rank} on qkv/proj/fc1/fc2` };
}
