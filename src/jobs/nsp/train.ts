import { tf } from '../../backend/tf.js';
import { BatchSampler, SamplerPosition } from '../../data/batch.js';
import { FidelitySummary } from '../../data/caption_fidelity.js';
import { MetricsLog } from '../../io/metrics_log.js';
import { saveModule } from '../../io/safetensors.js';
import { SummaryWriter } from '../../io/tensorboard.js';
import { pyramid, addNoise } from '../../models/nsp/model.js';
import { disposeTextEncoding } from '../../models/text/text_encoder.js';
import { Module } from '../../nn/module.js';
import { setComputeCast } from '../../nn/compute_cast.js';
import { CheckpointManager, LoadedCheckpoint } from '../../train/checkpoint.js';
import { EMA } from '../../train/ema.js';
import { clipByGlobalNorm, disposeGrads, GradAccumulator, globalNorm, gradsByParamName } from '../../train/grad.js';
import { DynamicLossScaler, LossScalerState } from '../../train/loss_scaler.js';
import { castTo, needsLossScaling } from '../../train/precision.js';
import { RunDir } from '../../train/run_dir.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import { Progress } from '../../util/progress.js';
import { Rng, RngState } from '../../util/rng.js';
import { NspArchitecture, NspPipeline } from './pipeline.js';
import { evaluateFidelity, fidelityPrompts, saveChainGrid } from './sampling.js';
import { batchSizeFor, NspRecipe, perStageValue } from './schema.js';
import { TrainingSource } from './source.js';

/** The JSON part of an NSP checkpoint: where training stands and every random stream's state. */
export interface NspTrainState {
  kind: 'nsp-progressive';
  stage: number;
  /** Optimizer steps done in `stage`; equal to that stage's length when the stage is complete. */
  stageStep: number;
  globalStep: number;
  sampler: SamplerPosition;
  noiseRng: RngState;
  lossScaler: LossScalerState | null;
  architecture: NspArchitecture;
}

export interface NspTrainOptions {
  recipe: NspRecipe;
  pipeline: NspPipeline;
  architecture: NspArchitecture;
  source: TrainingSource;
  run: RunDir;
  /** A checkpoint to continue from (already loaded). */
  resumeFrom?: LoadedCheckpoint | null;
  /** Stop after this many global steps (tests simulate a crash with it). */
  stopAfterGlobalStep?: number;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  log?: (line: string) => void;
}

export interface NspTrainResult {
  globalStep: number;
  finalLoss: number | null;
  fidelity: FidelitySummary | null;
  modelFile: string | null;
  stoppedEarly: boolean;
}

/** Groups the modules one stage trains under short names, so optimizer and EMA state key by them. */
class StageTrainables extends Module {
  constructor(children: [string, Module][]) {
    super();
    for (const [name, m] of children) this.module(name, m);
  }
}

/**
 * The teacher-forced input with its first `captions.length` samples replaced by what the cascade
 * itself draws for those captions at scale k−1 (from fresh noise, through the finished stages).
 * Ground truth alone teaches a stage to sharpen details its input already has; at sampling time
 * the input comes from the earlier stages instead, where a small cross may arrive as a blob, and
 * only a stage that has seen such inputs learns to take the shape from the text.
 */
/** The base stage's noise latent for `n` samples, drawn from the run's teacher-noise stream. */
function baseNoise(g: NspPipeline['generator'], n: number, noiseRng: Rng): tf.Tensor4D {
  const s = g.config.sizes[0]!;
  const c = g.config.imageChannels;
  return tf.tensor4d(noiseRng.fillNormal(new Float32Array(n * s * s * c), 0, g.config.baseNoiseStd), [n, s, s, c]);
}

export function withOwnOutputs(pipeline: NspPipeline, truth: tf.Tensor4D, captions: string[], k: number, noiseRng: Rng): tf.Tensor4D {
  return tf.tidy(() => {
    const g = pipeline.generator;
    const n = captions.length;
    const enc = pipeline.textEncoder.encode(captions);
    const own = g.generate(baseNoise(g, n, noiseRng), enc, { lastStage: k - 1 })[k - 1]!;
    if (n === truth.shape[0]) return own;
    return tf.concat([own, truth.slice([n, 0, 0, 0], [-1, -1, -1, -1])], 0) as tf.Tensor4D;
  });
}

export function stagePlan(r: NspRecipe, datasetLength: number): { stages: number[]; steps: number[] } {
  const n = r.model.sizes.length;
  const first = r.train.start_scale;
  const last = r.train.end_scale ?? n - 1;
  if (first > last || last >= n) {
    throw new Error(`train.start_scale=${first} / end_scale=${last} must satisfy 0 ≤ start ≤ end < ${n} (number of sizes)`);
  }
  const steps = r.model.sizes.map((_, k) => {
    const explicit = r.train.steps_per_scale;
    if (explicit) return explicit.length === 1 ? explicit[0]! : explicit[k] ?? explicit[explicit.length - 1]!;
    const epochs = r.train.epochs_per_scale;
    const e = epochs ? (epochs.length === 1 ? epochs[0]! : epochs[k] ?? epochs[epochs.length - 1]!) : 1;
    return Math.max(1, Math.ceil((e * datasetLength) / (batchSizeFor(r, k) * r.train.grad_accum)));
  });
  const stages: number[] = [];
  for (let k = first; k <= last; k++) stages.push(k);
  return { stages, steps };
}

/**
 * Progressive training: stage by stage (coarse to fine), each stage trains its scale predictor with
 * teacher forcing — the input is the ground truth at the previous scale (plus noise), the target the
 * ground truth at this scale — then its EMA weights become the stage's weights and the next begins.
 */
export async function trainNspProgressive(opts: NspTrainOptions): Promise<NspTrainResult> {
  const { recipe: r, pipeline, source, run } = opts;
  const say = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const gen = pipeline.generator;
  const sizes = gen.config.sizes;
  if (source.size !== sizes[sizes.length - 1]) {
    throw new Error(`data is ${source.size}×${source.size} but the model's finest size is ${sizes[sizes.length - 1]} (model.sizes)`);
  }
  const plan = stagePlan(r, source.length);
  const totalSteps = plan.stages.reduce((a, k) => a + plan.steps[k]!, 0);
  const root = new Rng(r.seed);
  const sampler = new BatchSampler(source.dataset, { seed: root.fork('data').nextU32(), shuffle: true, flip: false });
  const noiseRng = root.fork('teacher-noise');
  const precision = r.train.precision;
  const scaler = needsLossScaling(precision) ? new DynamicLossScaler() : null;
  const ckpts = new CheckpointManager(run.checkpoints, { keepLast: r.log.keep_last });
  const tb = new SummaryWriter(run.tb);
  const resumeStep = opts.resumeFrom?.step;
  const metrics = MetricsLog.open(run.metricsFile, resumeStep !== undefined ? { resumeStep } : {});

  let stageIdx = 0;
  let stageStep = 0;
  let globalStep = 0;
  const resume = opts.resumeFrom ?? null;
  let resumeState: NspTrainState | null = null;
  if (resume) {
    resumeState = resume.extra as unknown as NspTrainState;
    if (resumeState.kind !== 'nsp-progressive') throw new Error(`${resume.file}: not an nsp-progressive checkpoint`);
    pipeline.loadStateDict(resume.model, { strict: true });
    sampler.seek(resumeState.sampler);
    noiseRng.setState(resumeState.noiseRng);
    if (scaler && resumeState.lossScaler) scaler.loadStateDict(resumeState.lossScaler);
    globalStep = resumeState.globalStep;
    stageIdx = plan.stages.indexOf(resumeState.stage);
    if (stageIdx < 0) throw new Error(`${resume.file}: stage ${resumeState.stage} is outside this recipe's stages ${plan.stages.join(',')}`);
    stageStep = resumeState.stageStep;
    say(`resuming from ${resume.file}: stage ${resumeState.stage} step ${stageStep}/${plan.steps[resumeState.stage]} (global ${globalStep})`);
  } else {
    tb.text('recipe', '```\n' + JSON.stringify(r, null, 2) + '\n```', 0);
  }

  const progress = new Progress({ total: totalSteps, label: 'nsp', startStep: globalStep, ...(opts.progressStream ? { stream: opts.progressStream } : {}) });
  setComputeCast(precision === 'fp32' ? null : (x) => castTo(precision, x));
  let lastLoss: number | null = null;
  let stoppedEarly = false;

  const samplePrompts = r.sample.prompts ?? source.captions().slice(0, 4);
  const decode = source.decode;

  const state = (stage: number, step: number): NspTrainState => ({
    kind: 'nsp-progressive',
    stage,
    stageStep: step,
    globalStep,
    sampler: sampler.position,
    noiseRng: noiseRng.getState(),
    lossScaler: scaler ? scaler.stateDict() : null,
    architecture: opts.architecture,
  });

  try {
    for (; stageIdx < plan.stages.length; stageIdx++) {
      const k = plan.stages[stageIdx]!;
      const steps = plan.steps[k]!;
      const resumingThisStage = resumeState !== null && resumeState.stage === k;
      if (resumingThisStage && stageStep >= steps) {
        // The checkpoint closed this stage; continue with the next one.
        resumeState = null;
        stageStep = 0;
        continue;
      }
      if (!resumingThisStage) {
        stageStep = 0;
        if (k > 0 && r.train.init_from_previous) initFromPrevious(pipeline, k, say);
      }
      const trainText = r.text_encoder.train && k <= r.text_encoder.freeze_after_stage;
      pipeline.textEncoder.requiresGrad(trainText);
      const children: [string, Module][] = [
        ['stage', gen.stages.at(k)],
        ['scale_embedding', gen.scaleEmbedding],
      ];
      if (trainText) children.push(['text_encoder', pipeline.textEncoder]);
      const trainables = new StageTrainables(children);
      const params = trainables.trainableParameters();
      const byVarName = new Map([...params].map(([name, v]) => [v.name, name]));
      const varList = [...params.values()];
      const optimizer = makeOptimizer(r.train.optimizer, params, [
        { match: (name) => name.startsWith('text_encoder.'), lrScale: r.text_encoder.lr_scale, weightDecay: 0 },
      ]);
      const ema = r.train.ema.enabled ? new EMA(trainables, { decay: r.train.ema.decay, warmup: 'num_updates' }) : null;
      if (resumingThisStage && resume) {
        if (resume.optimizer) optimizer.loadStateDict(resume.optimizer);
        if (ema && resume.ema) ema.loadStateDict(resume.ema, resume.emaNumUpdates ?? 0);
      }
      resumeState = null;
      const schedule = phaseSchedule(r.train.schedule, perStageValue(r.train.optimizer.lr, k), steps);
      const weight = r.train.loss.scale_weights?.[k] ?? 1;
      const l1 = perStageValue(r.train.loss.l1, k);
      const mse = perStageValue(r.train.loss.mse, k);
      say(
        `stage ${k}: ${k === 0 ? `noise → ${sizes[0]}px` : `${sizes[k - 1]}px → ${sizes[k]}px`}, ${steps} steps, ` +
          `${gen.stages.at(k).numParameters()} params${gen.stages.at(k).hasAttention ? ' (with attention)' : ''}` +
          `${trainText ? ', text encoder trained' : ''}`,
      );
      const saveCheckpoint = async (): Promise<void> => {
        await ckpts.save(globalStep, { model: pipeline, optimizer, ...(ema ? { ema } : {}), extra: { ...state(k, stageStep) } });
      };

      while (stageStep < steps) {
        if (opts.stopAfterGlobalStep !== undefined && globalStep >= opts.stopAfterGlobalStep) {
          stoppedEarly = true;
          break;
        }
        const lr = schedule(stageStep);
        const alpha = k > 0 && r.train.fade_in_steps > 0 ? Math.min(1, (stageStep + 1) / r.train.fade_in_steps) : 1;
        const accum = new GradAccumulator();
        let lossSum = 0;
        for (let micro = 0; micro < r.train.grad_accum; micro++) {
          const batch = source.nextBatch(sampler, batchSizeFor(r, k));
          const { input, target } = tf.tidy(() => {
            const pyr = pyramid(batch.x, sizes.slice(0, k + 1));
            const tgt = pyr[k]!;
            let inp: tf.Tensor4D;
            if (k === 0) {
              inp = baseNoise(gen, tgt.shape[0], noiseRng);
            } else {
              const own = Math.round(perStageValue(r.train.generated_inputs, k) * batch.captions.length);
              inp = own > 0 ? withOwnOutputs(pipeline, pyr[k - 1]!, batch.captions.slice(0, own), k, noiseRng) : pyr[k - 1]!;
              if (r.train.input_noise > 0) inp = addNoise(inp, r.train.input_noise, noiseRng);
            }
            return { input: inp, target: tgt };
          });
          batch.x.dispose();
          const { value, grads } = tf.variableGrads(() => {
            const enc = pipeline.textEncoder.encode(batch.captions);
            const pred = gen.predict(k, input, enc, alpha);
            disposeTextEncoding(enc);
            const diff = pred.sub(target);
            const loss = diff.abs().mean().mul(l1).add(diff.square().mean().mul(mse)).mul(weight) as tf.Scalar;
            return (scaler ? scaler.scaleLoss(loss) : loss) as tf.Scalar;
          }, varList);
          input.dispose();
          target.dispose();
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
        stageStep++;
        globalStep++;
        const loss = lossSum / r.train.grad_accum;
        lastLoss = loss;

        progress.update(globalStep, { stage: k, loss: loss.toFixed(4), lr: lr.toExponential(2) });
        if (globalStep % r.log.every === 0 || stageStep === steps) {
          const fields: Record<string, number> = { stage: k, loss, lr, grad_norm: gradNorm };
          if (scaler) fields.loss_scale = scaler.scale;
          if (skip) fields.skipped = 1;
          metrics.write(globalStep, fields);
          tb.scalar(`loss/stage${k}`, loss, globalStep);
          tb.scalar('lr', lr, globalStep);
          tb.scalar('grad_norm', gradNorm, globalStep);
          if (scaler) tb.scalar('loss_scale', scaler.scale, globalStep);
        }
        if (globalStep % r.log.histogram_every === 0) {
          for (const [name, p] of gen.stages.at(k).namedParameters(`stage${k}`)) {
            if (name.endsWith('.weight')) tb.histogram(`weights/${name}`, await p.data() as Float32Array, globalStep);
          }
        }
        if (globalStep % r.log.sample_every === 0 && stageStep < steps) {
          await withEma(ema, () => writeSamples(pipeline, samplePrompts, r, run, tb, globalStep, k, decode));
        }
        if (globalStep % r.log.checkpoint_every === 0 && stageStep < steps) await saveCheckpoint();
      }
      if (stoppedEarly) {
        await saveCheckpoint();
        optimizer.dispose();
        ema?.dispose();
        break;
      }
      // The stage is done: its averaged weights become the weights later stages build on.
      ema?.copyTo(trainables);
      await saveCheckpoint();
      await writeSamples(pipeline, samplePrompts, r, run, tb, globalStep, k, decode);
      optimizer.dispose();
      ema?.dispose();
      progress.log(`stage ${k} done at step ${globalStep}, loss ${lastLoss?.toFixed(4)}`);
    }
  } finally {
    setComputeCast(null);
  }
  progress.finish();

  let fidelity: FidelitySummary | null = null;
  let modelFile: string | null = null;
  if (!stoppedEarly) {
    const lastStage = plan.stages[plan.stages.length - 1]!;
    if (r.data.source === 'procedural') {
      fidelity = await evaluateFidelity(pipeline, fidelityPrompts(r.sample.fidelity_samples), { seed: r.sample.seed, lastStage, decode });
      metrics.write(globalStep, { fidelity: fidelity.score, ...Object.fromEntries(Object.entries(fidelity.accuracy).map(([a, v]) => [`fidelity_${a}`, v])) });
      tb.scalar('fidelity/score', fidelity.score, globalStep);
    }
    modelFile = `${run.dir}/model.safetensors`;
    await saveModule(modelFile, pipeline, {
      dtype: precision === 'bf16' ? 'BF16' : precision === 'fp16' ? 'F16' : 'F32',
      metadata: { 'scaleforge.kind': 'nsp-progressive', 'scaleforge.architecture': JSON.stringify(opts.architecture), 'scaleforge.last_stage': String(lastStage) },
    });
  }
  metrics.close();
  tb.close();
  return { globalStep, finalLoss: lastLoss, fidelity, modelFile, stoppedEarly };
}

/**
 * Stage k starts from stage k−1's weights for every parameter whose name and shape match (all of
 * them when the stages have the same width and depth; the rest, e.g. attention only the coarser
 * stage has, keep their fresh initialisation).
 */
function initFromPrevious(pipeline: NspPipeline, k: number, say: (l: string) => void): void {
  const prev = new Map(pipeline.generator.stages.at(k - 1).namedParameters());
  const cur = [...pipeline.generator.stages.at(k).namedParameters()];
  let copied = 0;
  for (const [n, p] of cur) {
    const src = prev.get(n);
    if (src && src.shape.join() === p.shape.join()) {
      p.assign(src);
      copied++;
    }
  }
  say(`stage ${k}: initialised ${copied}/${cur.length} parameter tensors from stage ${k - 1}`);
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

async function writeSamples(
  pipeline: NspPipeline,
  prompts: string[],
  r: NspRecipe,
  run: RunDir,
  tb: SummaryWriter,
  step: number,
  stage: number,
  decode: TrainingSource['decode'],
): Promise<void> {
  const file = `${run.samples}/step-${String(step).padStart(6, '0')}-stage${stage}.png`;
  const grid = await saveChainGrid(file, pipeline, prompts, { seed: r.sample.seed, lastStage: stage, decode });
  await tb.image(`samples/stage${stage}`, { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
}
