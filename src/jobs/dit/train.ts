import { tf } from '../../backend/tf.js';
import { BatchSampler, type SamplerPosition } from '../../data/batch.js';
import type { FidelitySummary } from '../../data/caption_fidelity.js';
import { ddpmLoss, flowInterpolate, flowLoss, qSample, sampleFlowTimes, sampleTimesteps } from '../../diffusion/objectives.js';
import { MetricsLog } from '../../io/metrics_log.js';
import { saveModule } from '../../io/safetensors.js';
import { SummaryWriter } from '../../io/tensorboard.js';
import type { DitCondition } from '../../models/dit/model.js';
import { setComputeCast } from '../../nn/compute_cast.js';
import { CheckpointManager, type LoadedCheckpoint } from '../../train/checkpoint.js';
import { EMA } from '../../train/ema.js';
import { clipByGlobalNorm, disposeGrads, GradAccumulator, globalNorm, gradsByParamName } from '../../train/grad.js';
import { DynamicLossScaler, type LossScalerState } from '../../train/loss_scaler.js';
import { castTo, needsLossScaling } from '../../train/precision.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import type { RunDir } from '../../train/run_dir.js';
import { Progress } from '../../util/progress.js';
import { Rng, type RngState } from '../../util/rng.js';
import { fidelityPrompts } from '../nsp/sampling.js';
import type { TrainingSource } from '../nsp/source.js';
import { disposeCondition, type DitArchitecture, type DitPipeline, scheduleOf } from './model.js';
import { type DitRequests, type DitSampleSettings, evaluateDitFidelity, saveSampleGrid } from './sampling.js';
import { defaultSamplerFor, type DitRecipe } from './schema.js';

/** The JSON part of a DiT checkpoint: where training stands and the random streams' states. */
export interface DitTrainState {
  kind: 'dit';
  step: number;
  sampler: SamplerPosition;
  /** Noise, timesteps and condition dropout, drawn in a fixed order per step. */
  rng: RngState;
  lossScaler: LossScalerState | null;
  architecture: DitArchitecture;
}

export interface DitTrainOptions {
  recipe: DitRecipe;
  pipeline: DitPipeline;
  source: TrainingSource;
  /** Class-conditioned runs: the class of every dataset item. */
  labels: Int32Array | null;
  run: RunDir;
  resumeFrom?: LoadedCheckpoint | null;
  /** Stop after this many steps (tests simulate a crash with it). */
  stopAfterStep?: number;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  log?: (line: string) => void;
}

export interface DitTrainResult {
  step: number;
  finalLoss: number | null;
  fidelity: FidelitySummary | null;
  modelFile: string | null;
  stoppedEarly: boolean;
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
 * and regresses the objective's target (ε for DDPM, velocity for rectified flow), with the
 * condition replaced by the null one (empty prompt / null class) for a share of the samples so the
 * same network is the unconditional model classifier-free guidance needs.
 */
export async function trainDit(opts: DitTrainOptions): Promise<DitTrainResult> {
  const { recipe: r, pipeline, source, run, labels } = opts;
  const say = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const arch = pipeline.architecture;
  const objective = arch.objective;
  const schedule = objective.type === 'ddpm' ? scheduleOf(objective) : null;
  const root = new Rng(r.seed);
  const sampler = new BatchSampler(source.dataset, { seed: root.fork('data').nextU32(), shuffle: true, flip: r.data.flip });
  const rng = root.fork('diffusion');
  const precision = r.train.precision;
  const scaler = needsLossScaling(precision) ? new DynamicLossScaler() : null;
  const ckpts = new CheckpointManager(run.checkpoints, { keepLast: r.log.keep_last });
  const tb = new SummaryWriter(run.tb);
  const resume = opts.resumeFrom ?? null;
  const metrics = MetricsLog.open(run.metricsFile, resume ? { resumeStep: resume.step } : {});
  const steps = r.train.steps;

  const trainText = pipeline.textEncoder !== null && r.text_encoder.train;
  pipeline.textEncoder?.requiresGrad(trainText);
  const params = pipeline.trainableParameters();
  const byVarName = new Map([...params].map(([name, v]) => [v.name, name]));
  const varList = [...params.values()];
  const optimizer = makeOptimizer(r.train.optimizer, params, [{ match: (name) => name.startsWith('text_encoder.'), lrScale: r.text_encoder.lr_scale, weightDecay: 0 }]);
  const ema = r.train.ema.enabled ? new EMA(pipeline, { decay: r.train.ema.decay, warmup: 'num_updates' }) : null;
  const lrAt = phaseSchedule(r.train.schedule, r.train.optimizer.lr, steps);

  let step = 0;
  if (resume) {
    const st = resume.extra as Partial<DitTrainState>;
    if (st.kind !== 'dit') throw new Error(`${resume.file}: not a dit checkpoint (kind ${String(st.kind)})`);
    pipeline.loadStateDict(resume.model, { strict: true });
    if (resume.optimizer) optimizer.loadStateDict(resume.optimizer);
    if (ema && resume.ema) ema.loadStateDict(resume.ema, resume.emaNumUpdates ?? 0);
    sampler.seek(st.sampler!);
    rng.setState(st.rng!);
    if (scaler && st.lossScaler) scaler.loadStateDict(st.lossScaler);
    step = st.step!;
    say(`resuming from ${resume.file} at step ${step}/${steps}`);
  } else tb.text('recipe', '```\n' + JSON.stringify(r, null, 2) + '\n```', 0);

  const state = (): DitTrainState => ({
    kind: 'dit',
    step,
    sampler: sampler.position,
    rng: rng.getState(),
    lossScaler: scaler ? scaler.stateDict() : null,
    architecture: arch,
  });
  const saveCheckpoint = async (): Promise<void> => {
    await ckpts.save(step, { model: pipeline, optimizer, ...(ema ? { ema } : {}), extra: { ...state() } });
  };
  const settings = sampleSettings(r);
  const requests = gridRequests(r, source, labels);
  const writeGrid = async (): Promise<void> => {
    const file = `${run.samples}/step-${String(step).padStart(6, '0')}.png`;
    const grid = await withEma(ema, () => saveSampleGrid(file, pipeline, requests, settings, source.decode));
    await tb.image('samples', { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
  };

  const progress = new Progress({ total: steps, label: 'dit', startStep: step, ...(opts.progressStream ? { stream: opts.progressStream } : {}) });
  setComputeCast(precision === 'fp32' ? null : (x) => castTo(precision, x));
  pipeline.train();
  let lastLoss: number | null = null;
  let stoppedEarly = false;
  const started = Date.now();
  const firstStep = step;
  try {
    while (step < steps) {
      if (opts.stopAfterStep !== undefined && step >= opts.stopAfterStep) {
        stoppedEarly = true;
        break;
      }
      const lr = lrAt(step);
      const accum = new GradAccumulator();
      let lossSum = 0;
      for (let micro = 0; micro < r.train.grad_accum; micro++) {
        const batch = source.nextBatch(sampler, r.data.batch_size);
        const n = batch.captions.length;
        const [, h, w, c] = batch.x.shape;
        // Draw order is fixed (noise, times, dropout) so a resumed run draws the same numbers.
        const noise = tf.tensor4d(rng.fillNormal(new Float32Array(n * h * w * c)), [n, h, w, c]);
        const times = objective.type === 'flow'
          ? sampleFlowTimes(n, rng, { distribution: objective.timeSampling, mean: objective.logitMean, std: objective.logitStd, shift: objective.shift })
          : sampleTimesteps(n, schedule!.numTimesteps, rng);
        const drop = Array.from({ length: n }, () => rng.uniform() < r.conditioning.dropout);
        const { xt, target, modelT } = tf.tidy(() => {
          if (objective.type === 'flow') {
            const f = flowInterpolate(batch.x, noise, times);
            return { xt: f.xt, target: f.target, modelT: tf.tensor1d(Float32Array.from(times, (t) => t * 1000)) };
          }
          return { xt: qSample(schedule!, batch.x, times, noise), target: noise.clone(), modelT: tf.tensor1d(Float32Array.from(times)) };
        });
        const classIds = labels ? Int32Array.from(batch.indices, (i) => labels[i]!) : null;
        const { value, grads } = tf.variableGrads(() => {
          const cond: DitCondition = classIds
            ? tf.tensor1d(classIds, 'int32')
            : pipeline.encodePrompts(batch.captions.map((cap, i) => (drop[i] ? '' : cap)));
          const forceDropIds = classIds ? { forceDropIds: tf.tensor1d(Int32Array.from(drop, (d) => (d ? 1 : 0)), 'int32') } : {};
          const out = pipeline.dit.forward(xt, modelT, cond, forceDropIds);
          disposeCondition(cond);
          const per = objective.type === 'flow'
            ? flowLoss(out, target, times, { minSnrGamma: objective.minSnrGamma })
            : ddpmLoss(schedule!, out, { x0: batch.x, xt, noise, t: times }, { learnSigma: arch.model.learnSigma, minSnrGamma: objective.minSnrGamma });
          const loss = per.loss.mean() as tf.Scalar;
          return (scaler ? scaler.scaleLoss(loss) : loss) as tf.Scalar;
        }, varList);
        tf.dispose([batch.x, noise, xt, target, modelT]);
        lossSum += (await value.data())[0]! / (scaler ? scaler.scale : 1);
        value.dispose();
        const named = gradsByParamName(grads, byVarName);
        accum.add(named);
        disposeGrads(named);
      }
      let grads = accum.takeMean();
      accum.dispose();
      let skip = false;
      if (scaler) {
        const un = scaler.unscale(grads);
        disposeGrads(grads);
        grads = un.grads;
        skip = scaler.update(un.finite);
      }
      let gradNorm: number;
      if (r.train.grad_clip !== undefined && !skip) {
        const clipped = clipByGlobalNorm(grads, r.train.grad_clip);
        if (clipped.grads !== grads) disposeGrads(grads);
        grads = clipped.grads;
        gradNorm = clipped.norm;
      } else gradNorm = skip ? NaN : globalNorm(grads);
      if (!skip) {
        optimizer.step(grads, lr);
        ema?.update();
      }
      disposeGrads(grads);
      step++;
      const loss = lossSum / r.train.grad_accum;
      lastLoss = loss;
      progress.update(step, { loss: loss.toFixed(4), lr: lr.toExponential(2) });
      if (step % r.log.every === 0 || step === steps) {
        const fields: Record<string, number> = { loss, lr, grad_norm: gradNorm };
        if (scaler) fields.loss_scale = scaler.scale;
        if (skip) fields.skipped = 1;
        metrics.write(step, fields);
        tb.scalar('loss', loss, step);
        tb.scalar('lr', lr, step);
        tb.scalar('grad_norm', gradNorm, step);
      }
      if (step % r.log.sample_every === 0 && step < steps) await writeGrid();
      if (step % r.log.checkpoint_every === 0 && step < steps) await saveCheckpoint();
    }
    await saveCheckpoint();
  } finally {
    setComputeCast(null);
  }
  progress.finish();
  const stepsPerSecond = (step - firstStep) / Math.max(1e-9, (Date.now() - started) / 1000);

  let fidelity: FidelitySummary | null = null;
  let modelFile: string | null = null;
  if (!stoppedEarly) {
    // The averaged weights are the model: samples, the fidelity check and model.safetensors use them.
    ema?.copyTo(pipeline);
    await writeGrid();
    if (r.data.source === 'procedural' && pipeline.isText) {
      fidelity = await evaluateDitFidelity(pipeline, fidelityPrompts(r.sample.fidelity_samples), settings, source.decode);
      metrics.write(step, { fidelity: fidelity.score, ...Object.fromEntries(Object.entries(fidelity.accuracy).map(([a, v]) => [`fidelity_${a}`, v])) });
      tb.scalar('fidelity/score', fidelity.score, step);
    }
    modelFile = `${run.dir}/model.safetensors`;
    await saveModule(modelFile, pipeline, {
      dtype: precision === 'bf16' ? 'BF16' : precision === 'fp16' ? 'F16' : 'F32',
      metadata: { 'scaleforge.kind': 'dit', 'scaleforge.architecture': JSON.stringify(arch) },
    });
  }
  optimizer.dispose();
  ema?.dispose();
  metrics.close();
  tb.close();
  return { step, finalLoss: lastLoss, fidelity, modelFile, stoppedEarly, stepsPerSecond };
}

async function withEma<T>(ema: EMA | null, f: () => Promise<T>): Promise<T> {
  if (!ema) return f();
  ema.swap();
  try {
    return await f();
  } finally {
    ema.swap();
  }
}
