import { tf } from '../../backend/tf.js';
import { applyCaptionOps, type CaptionOpsOptions, mentionsTrigger } from '../../data/caption_ops.js';
import type { BucketSampler } from '../../data/buckets.js';
import { ddpmLoss, flowInterpolate, flowLoss, meanFlat, qSample, sampleFlowTimes, sampleTimesteps } from '../../diffusion/objectives.js';
import type { LoraModel } from '../../lora/inject.js';
import { EMA } from '../../train/ema.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import type { TrainingSession } from '../../train/session.js';
import { StepFunction } from '../../train/step.js';
import { disposeCondition, type LoadedDit, scheduleOf } from '../dit/model.js';
import { type DitSampleSettings } from '../dit/sampling.js';
import { defaultSamplerFor } from '../dit/schema.js';
import { batchX, type LoraData } from './data.js';
import type { DitLoraJobState } from './model.js';
import { saveLoraGrid } from './sampling.js';
import type { DitLoraRecipe } from './schema.js';

export interface DitLoraTrainOptions {
  recipe: DitLoraRecipe;
  base: LoadedDit;
  lora: LoraModel;
  data: LoraData;
  sampler: BucketSampler;
  trigger: string;
  session: TrainingSession<DitLoraJobState>;
}

export interface DitLoraTrainResult {
  finalLoss: number | null;
  stoppedEarly: boolean;
  stepsPerSecond: number;
}

export function loraSampleSettings(r: DitLoraRecipe, base: LoadedDit): DitSampleSettings {
  const objective = base.pipeline.architecture.objective.type;
  return { sampler: r.sample.sampler ?? defaultSamplerFor(objective), steps: r.sample.steps, cfg: r.sample.cfg, eta: 0, seed: r.sample.seed };
}

export function captionOpsOf(r: DitLoraRecipe): CaptionOpsOptions {
  return { captionDropout: r.data.caption_dropout, shuffleTags: r.data.shuffle_tags, keepTokens: r.data.keep_tokens, tagDropout: r.data.tag_dropout };
}

/**
 * Trains the adapters of a frozen DiT on the brand images with the base's own objective: each
 * micro-batch is one bucket's batch, its captions through kohya's caption ops (dropout to the empty
 * prompt — the null condition guidance needs — tag shuffle keeping the first N, tag dropout).
 */
export async function trainDitLora(opts: DitLoraTrainOptions): Promise<DitLoraTrainResult> {
  const { recipe: r, base, data, sampler, session } = opts;
  const pipeline = base.pipeline;
  const arch = pipeline.architecture;
  const objective = arch.objective;
  const schedule = objective.type === 'ddpm' ? scheduleOf(objective) : null;
  const rng = session.rng('diffusion');
  const captionRng = session.rng('captions');
  const ops = captionOpsOf(r);

  const params = pipeline.trainableParameters();
  const optimizer = makeOptimizer(r.train.optimizer, params);
  const ema = r.train.ema.enabled ? new EMA(pipeline, { decay: r.train.ema.decay, warmup: 'num_updates' }) : null;
  const stepFn = new StepFunction({ params, optimizer, ema, gradAccum: r.train.grad_accum, clip: r.train.grad_clip, lossScaler: session.lossScaler });
  const settings = loraSampleSettings(r, base);
  const prior = r.train.prior_loss;
  const gridPrompts = r.sample.prompts ?? data.items.filter((it) => !mentionsTrigger(it.caption, opts.trigger)).slice(0, 3).map((it) => it.caption);
  const writeGrid = async (step: number): Promise<void> => {
    const grid = await saveLoraGrid(`${session.run.samples}/step-${String(step).padStart(6, '0')}.png`, { base, lora: opts.lora, prompts: gridPrompts, trigger: opts.trigger, strengths: r.sample.strengths, settings });
    await session.tb.image('samples', { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
  };

  const microBatch = () => {
    const batch = sampler.next();
    const x = batchX(data, batch.items);
    const n = batch.items.length;
    const captions = batch.items.map((i) => applyCaptionOps(data.items[i]!.caption, ops, captionRng));
    const [, h, w, c] = x.shape;
    const noise = tf.tensor4d(rng.fillNormal(new Float32Array(n * h * w * c)), [n, h, w, c]);
    const times =
      objective.type === 'flow'
        ? sampleFlowTimes(n, rng, { distribution: objective.timeSampling, mean: objective.logitMean, std: objective.logitStd, shift: objective.shift })
        : sampleTimesteps(n, schedule!.numTimesteps, rng);
    const { xt, target, modelT } = tf.tidy(() => {
      if (objective.type === 'flow') {
        const f = flowInterpolate(x, noise, times);
        return { xt: f.xt, target: f.target, modelT: tf.tensor1d(Float32Array.from(times, (t) => t * 1000)) };
      }
      return { xt: qSample(schedule!, x, times, noise), target: noise.clone(), modelT: tf.tensor1d(Float32Array.from(times)) };
    });
    // Prior samples (this step's caption lacks the trigger: prior images, and any caption dropped to the
    // empty prompt) can regress what the frozen base predicts for the same noisy input and caption instead
    // of their own image, so that the adapters leave plain prompts where the base had them.
    const plain = captions.map((c) => !mentionsTrigger(c, opts.trigger));
    const anchor = prior.target === 'base' && plain.some(Boolean) ? frozenBasePrediction(xt, modelT, captions) : null;
    const weights = tf.tensor1d(plain.map((p) => (p ? prior.weight : 1)));
    return {
      loss: () => {
        const cond = pipeline.encodePrompts(captions);
        const out = pipeline.dit.forward(xt, modelT, cond);
        disposeCondition(cond);
        const perSample =
          objective.type === 'flow'
            ? flowLoss(out, target, times, { minSnrGamma: objective.minSnrGamma }).loss
            : ddpmLoss(schedule!, out, { x0: x, xt, noise, t: times }, { learnSigma: arch.model.learnSigma, minSnrGamma: objective.minSnrGamma }).loss;
        if (!anchor) return perSample.mul(weights).mean() as tf.Scalar;
        const toBase = meanFlat(out.sub(anchor).square());
        return tf.where(tf.tensor1d(plain, 'bool'), toBase, perSample).mul(weights).mean() as tf.Scalar;
      },
      done: () => tf.dispose([x, noise, xt, target, modelT, weights, ...(anchor ? [anchor] : [])]),
    };
  };

  /** The base's own output (every adapter off), computed outside the gradient tape. */
  const frozenBasePrediction = (xt: tf.Tensor4D, t: tf.Tensor1D, captions: string[]): tf.Tensor4D =>
    opts.lora.withAdaptersDisabled(() =>
      tf.tidy(() => {
        const cond = pipeline.encodePrompts(captions);
        const out = pipeline.dit.forward(xt, t, cond);
        disposeCondition(cond);
        return out;
      }),
    );

  pipeline.train();
  const started = Date.now();
  const firstStep = session.step;
  const outcome = await session.runPhase({
    id: 0,
    steps: r.train.steps,
    lr: phaseSchedule(r.train.schedule, r.train.optimizer.lr, r.train.steps),
    optimizer,
    ema,
    step: (lr) => stepFn.run(lr, microBatch),
    sample: writeGrid,
  });
  const stepsPerSecond = (session.step - firstStep) / Math.max(1e-9, (Date.now() - started) / 1000);
  session.endTraining();
  if (outcome === 'done') {
    await session.checkpoint();
    ema?.copyTo(pipeline);
    pipeline.eval();
    await session.writeSamples(() => writeGrid(session.step));
  }
  pipeline.eval();
  optimizer.dispose();
  ema?.dispose();
  return { finalLoss: session.lastLoss, stoppedEarly: outcome === 'stopped', stepsPerSecond };
}
