import { tf } from '../../backend/tf.js';
import type { FidelitySummary } from '../../data/caption_fidelity.js';
import { ddpmLoss, flowInterpolate, flowLoss, qSample, sampleFlowTimes, sampleTimesteps } from '../../diffusion/objectives.js';
import { saveModule } from '../../io/safetensors.js';
import type { DitCondition } from '../../models/dit/model.js';
import { EMA } from '../../train/ema.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import type { TrainingSession } from '../../train/session.js';
import { StepFunction } from '../../train/step.js';
import type { TrainingSource } from '../nsp/data.js';
import { fidelityPrompts } from '../nsp/sampling.js';
import { DIT_MODEL_FILE, disposeCondition, ditModelMetadata, type DitJobState, type DitPipeline, scheduleOf } from './model.js';
import { type DitRequests, type DitSampleSettings, evaluateDitFidelity, saveSampleGrid } from './sampling.js';
import { defaultSamplerFor, type DitRecipe } from './schema.js';

export interface DitTrainOptions {
  recipe: DitRecipe;
  pipeline: DitPipeline;
  source: TrainingSource;
  /** Class-conditioned runs: the class of every dataset item. */
  labels: Int32Array | null;
  session: TrainingSession<DitJobState>;
}

export interface DitTrainResult {
  finalLoss: number | null;
  fidelity: FidelitySummary | null;
  modelFile: string | null;
  stoppedEarly: boolean;
  /** Optimizer steps per second of wall time in this process (the machine's load included). */
  stepsPerSecond: number;
}

/** The sampling settings of a recipe's `sample:` section. */
export function sampleSettings(r: DitRecipe): DitSampleSettings {
  return { sampler: r.sample.sampler ?? defaultSamplerFor(r.objective.type), steps: r.sample.steps, cfg: r.sample.cfg, eta: r.sample.eta, seed: r.sample.seed };
}

/** What the periodic sample grids show: the recipe's prompts/classes, else the first few of the data. */
function gridRequests(r: DitRecipe, source: TrainingSource, labels: Int32Array | null): DitRequests {
  if (labels) return { classes: r.sample.classes ?? [...new Set(labels)].slice(0, 4) };
  return { prompts: r.sample.prompts ?? source.captions().slice(0, 4) };
}

/**
 * Trains a DiT as a denoiser: each step draws data x_0, noise and a time per sample, forms x_t,
 * and regresses the objective's target (ε for DDPM, with DiT's vlb term when σ is learned; velocity
 * for rectified flow), the condition replaced by the null one (empty prompt / null class) for a
 * share of the samples so that the same network is the unconditional model guidance needs.
 */
export async function trainDit(opts: DitTrainOptions): Promise<DitTrainResult> {
  const { recipe: r, pipeline, source, labels, session } = opts;
  const arch = pipeline.architecture;
  const objective = arch.objective;
  const schedule = objective.type === 'ddpm' ? scheduleOf(objective) : null;
  const cursor = session.dataCursor(source.dataset, { shuffle: true, flip: r.data.flip });
  // Noise, times and condition dropout, drawn in this order every micro-batch.
  const rng = session.rng('diffusion');

  pipeline.textEncoder?.requiresGrad(r.text_encoder.train);
  const params = pipeline.trainableParameters();
  const optimizer = makeOptimizer(r.train.optimizer, params, [{ match: (name) => name.startsWith('text_encoder.'), lrScale: r.text_encoder.lr_scale, weightDecay: 0 }]);
  const ema = r.train.ema.enabled ? new EMA(pipeline, { decay: r.train.ema.decay, warmup: 'num_updates' }) : null;
  const stepFn = new StepFunction({ params, optimizer, ema, gradAccum: r.train.grad_accum, clip: r.train.grad_clip, lossScaler: session.lossScaler });
  const settings = sampleSettings(r);
  const requests = gridRequests(r, source, labels);
  const writeGrid = async (step: number): Promise<void> => {
    const grid = await saveSampleGrid(`${session.run.samples}/step-${String(step).padStart(6, '0')}.png`, pipeline, requests, settings, source.decode);
    await session.tb.image('samples', { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
  };

  const microBatch = () => {
    const batch = source.nextBatch(cursor, r.data.batch_size);
    const n = batch.captions.length;
    const [, h, w, c] = batch.x.shape;
    const noise = tf.tensor4d(rng.fillNormal(new Float32Array(n * h * w * c)), [n, h, w, c]);
    const times =
      objective.type === 'flow'
        ? sampleFlowTimes(n, rng, { distribution: objective.timeSampling, mean: objective.logitMean, std: objective.logitStd, shift: objective.shift })
        : sampleTimesteps(n, schedule!.numTimesteps, rng);
    const drop = Array.from({ length: n }, () => rng.uniform() < r.conditioning.dropout);
    const { xt, target, modelT } = tf.tidy(() => {
      if (objective.type === 'flow') {
        const f = flowInterpolate(batch.x, noise, times);
        // The network sees t·1000, the range of the DDPM steps its timestep embedding was made for.
        return { xt: f.xt, target: f.target, modelT: tf.tensor1d(Float32Array.from(times, (t) => t * 1000)) };
      }
      return { xt: qSample(schedule!, batch.x, times, noise), target: noise.clone(), modelT: tf.tensor1d(Float32Array.from(times)) };
    });
    const classIds = labels ? Int32Array.from(batch.indices, (i) => labels[i]!) : null;
    const captions = batch.captions.map((cap, i) => (drop[i] ? '' : cap));
    return {
      loss: () => {
        const cond: DitCondition = classIds ? tf.tensor1d(classIds, 'int32') : pipeline.encodePrompts(captions);
        // Class drops come from this run's stream, not the embedder's own, so resume replays them.
        const call = classIds ? { forceDropIds: tf.tensor1d(Int32Array.from(drop, (d) => (d ? 1 : 0)), 'int32') } : {};
        const out = pipeline.dit.forward(xt, modelT, cond, call);
        disposeCondition(cond);
        if (objective.type === 'flow') return flowLoss(out, target, times, { minSnrGamma: objective.minSnrGamma }).loss.mean() as tf.Scalar;
        const per = ddpmLoss(schedule!, out, { x0: batch.x, xt, noise, t: times }, { learnSigma: arch.model.learnSigma, minSnrGamma: objective.minSnrGamma });
        if (!arch.model.learnSigma) return per.loss.mean() as tf.Scalar;
        return { total: per.loss.mean() as tf.Scalar, parts: { mse: per.mse.mean() as tf.Scalar, vb: per.vb.mean() as tf.Scalar } };
      },
      done: () => tf.dispose([batch.x, noise, xt, target, modelT]),
    };
  };

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

  let fidelity: FidelitySummary | null = null;
  let modelFile: string | null = null;
  if (outcome === 'done') {
    await session.checkpoint();
    // The averaged weights are the model: the last samples, the fidelity check and model.safetensors use them.
    ema?.copyTo(pipeline);
    await session.writeSamples(() => writeGrid(session.step));
    if (r.data.source === 'procedural' && pipeline.isText) {
      fidelity = await evaluateDitFidelity(pipeline, fidelityPrompts(r.sample.fidelity_samples), settings, source.decode);
      session.metrics.write(session.step, { fidelity: fidelity.score, ...Object.fromEntries(Object.entries(fidelity.accuracy).map(([a, v]) => [`fidelity_${a}`, v])) });
      session.tb.scalar('fidelity/score', fidelity.score, session.step);
    }
    modelFile = `${session.run.dir}/${DIT_MODEL_FILE}`;
    const precision = r.train.precision;
    await saveModule(modelFile, pipeline, { dtype: precision === 'bf16' ? 'BF16' : precision === 'fp16' ? 'F16' : 'F32', metadata: ditModelMetadata(arch) });
  }
  optimizer.dispose();
  ema?.dispose();
  return { finalLoss: session.lastLoss, fidelity, modelFile, stoppedEarly: outcome === 'stopped', stepsPerSecond };
}
