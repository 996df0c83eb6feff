import { tf } from '../../backend/tf.js';
import { FidelitySummary } from '../../data/caption_fidelity.js';
import { saveModule } from '../../io/safetensors.js';
import { pyramid, addNoise } from '../../models/nsp/model.js';
import { disposeTextEncoding } from '../../models/text/text_encoder.js';
import { Module } from '../../nn/module.js';
import { EMA } from '../../train/ema.js';
import { makeOptimizer, perStageValue, phaseSchedule } from '../../train/recipe_parts.js';
import { TrainingSession } from '../../train/session.js';
import { StepFunction } from '../../train/step.js';
import { Rng } from '../../util/rng.js';
import { TrainingSource } from './data.js';
import { finalModelMetadata, NSP_MODEL_FILE, NspArchitecture, NspJobState, NspPipeline } from './model.js';
import { evaluateFidelity, fidelityPrompts, saveChainGrid } from './sampling.js';
import { batchSizeFor, NspRecipe } from './schema.js';

export interface NspTrainOptions {
  recipe: NspRecipe;
  pipeline: NspPipeline;
  architecture: NspArchitecture;
  source: TrainingSource;
  /** An open session on the run folder (resumed or new) whose model is `pipeline`. */
  session: TrainingSession<NspJobState>;
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
  const steps = r.model.sizes.map((_, k) => {
    if (r.train.steps_per_scale) return perStageValue(r.train.steps_per_scale, k);
    const e = r.train.epochs_per_scale ? perStageValue(r.train.epochs_per_scale, k) : 1;
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
  const { recipe: r, pipeline, source, session } = opts;
  const say = session.say;
  const gen = pipeline.generator;
  const sizes = gen.config.sizes;
  if (source.size !== sizes[sizes.length - 1]) {
    throw new Error(`data is ${source.size}×${source.size} but the model's finest size is ${sizes[sizes.length - 1]} (model.sizes)`);
  }
  const plan = stagePlan(r, source.length);
  const sampler = session.dataCursor(source.dataset, { shuffle: true, flip: false });
  const noiseRng = session.rng('teacher-noise');
  const samplePrompts = r.sample.prompts ?? source.captions().slice(0, 4);
  const writeSamples = (step: number, k: number) => writeStageSamples(pipeline, samplePrompts, r, session, step, k, source.decode);

  const resumePhase = session.resumePhase;
  const firstStage = resumePhase === null ? 0 : plan.stages.indexOf(resumePhase);
  if (firstStage < 0) throw new Error(`the checkpoint is in stage ${resumePhase}, outside this recipe's stages ${plan.stages.join(',')}`);
  let stopped = false;
  for (const k of plan.stages.slice(firstStage)) {
    const steps = plan.steps[k]!;
    const resumedAt = session.resumePoint(k);
    // A checkpoint written as this stage closed: continue with the next one.
    if (resumedAt !== null && resumedAt >= steps) continue;
    if (resumedAt === null && k > 0 && r.train.init_from_previous) initFromPrevious(pipeline, k, say);

    const trainText = r.text_encoder.train && k <= r.text_encoder.freeze_after_stage;
    pipeline.textEncoder.requiresGrad(trainText);
    const children: [string, Module][] = [
      ['stage', gen.stages.at(k)],
      ['scale_embedding', gen.scaleEmbedding],
    ];
    if (trainText) children.push(['text_encoder', pipeline.textEncoder]);
    const trainables = new StageTrainables(children);
    const params = trainables.trainableParameters();
    const optimizer = makeOptimizer(r.train.optimizer, params, [
      { match: (name) => name.startsWith('text_encoder.'), lrScale: r.text_encoder.lr_scale, weightDecay: 0 },
    ]);
    const ema = r.train.ema.enabled ? new EMA(trainables, { decay: r.train.ema.decay, warmup: 'num_updates' }) : null;
    const stepFn = new StepFunction({ params, optimizer, ema, gradAccum: r.train.grad_accum, clip: r.train.grad_clip, lossScaler: session.lossScaler });
    const weight = perStageValue(r.train.loss.scale_weights, k);
    const l1 = perStageValue(r.train.loss.l1, k);
    const mse = perStageValue(r.train.loss.mse, k);
    const ownShare = perStageValue(r.train.generated_inputs, k);
    say(
      `stage ${k}: ${k === 0 ? `noise → ${sizes[0]}px` : `${sizes[k - 1]}px → ${sizes[k]}px`}, ${steps} steps, ` +
        `${gen.stages.at(k).numParameters()} params${gen.stages.at(k).hasAttention ? ' (with attention)' : ''}` +
        `${trainText ? ', text encoder trained' : ''}`,
    );

    // One micro-batch: the teacher-forced input at scale k−1 (noise for the base stage) → the truth at scale k.
    const microBatch = (phaseStep: number) => {
      const alpha = k > 0 && r.train.fade_in_steps > 0 ? Math.min(1, (phaseStep + 1) / r.train.fade_in_steps) : 1;
      const batch = source.nextBatch(sampler, batchSizeFor(r, k));
      const { input, target } = tf.tidy(() => {
        const pyr = pyramid(batch.x, sizes.slice(0, k + 1));
        const tgt = pyr[k]!;
        let inp: tf.Tensor4D;
        if (k === 0) {
          inp = baseNoise(gen, tgt.shape[0], noiseRng);
        } else {
          const own = Math.round(ownShare * batch.captions.length);
          inp = own > 0 ? withOwnOutputs(pipeline, pyr[k - 1]!, batch.captions.slice(0, own), k, noiseRng) : pyr[k - 1]!;
          if (r.train.input_noise > 0) inp = addNoise(inp, r.train.input_noise, noiseRng);
        }
        return { input: inp, target: tgt };
      });
      batch.x.dispose();
      return {
        loss: () => {
          const enc = pipeline.textEncoder.encode(batch.captions);
          const pred = gen.predict(k, input, enc, alpha);
          disposeTextEncoding(enc);
          const diff = pred.sub(target);
          return diff.abs().mean().mul(l1).add(diff.square().mean().mul(mse)).mul(weight) as tf.Scalar;
        },
        done: () => {
          input.dispose();
          target.dispose();
        },
      };
    };

    const outcome = await session.runPhase({
      id: k,
      steps,
      lr: phaseSchedule(r.train.schedule, perStageValue(r.train.optimizer.lr, k), steps),
      optimizer,
      ema,
      step: (lr, phaseStep) => stepFn.run(lr, () => microBatch(phaseStep)),
      tags: { stage: k },
      lossTag: `loss/stage${k}`,
      afterStep: async (step) => {
        if (step % r.log.histogram_every !== 0) return;
        for (const [name, p] of gen.stages.at(k).namedParameters(`stage${k}`)) {
          if (name.endsWith('.weight')) session.tb.histogram(`weights/${name}`, (await p.data()) as Float32Array, step);
        }
      },
      sample: (step) => writeSamples(step, k),
    });
    if (outcome === 'done') {
      // The stage is done: its averaged weights become the weights later stages build on.
      ema?.copyTo(trainables);
      await session.checkpoint();
      await session.writeSamples(() => writeSamples(session.step, k));
      session.progress.log(`stage ${k} done at step ${session.step}, loss ${session.lastLoss?.toFixed(4)}`);
    }
    optimizer.dispose();
    ema?.dispose();
    if (outcome === 'stopped') {
      stopped = true;
      break;
    }
  }
  session.endTraining();

  let fidelity: FidelitySummary | null = null;
  let modelFile: string | null = null;
  if (!stopped) {
    const lastStage = plan.stages[plan.stages.length - 1]!;
    if (r.data.source === 'procedural') {
      fidelity = await evaluateFidelity(pipeline, fidelityPrompts(r.sample.fidelity_samples), { seed: r.sample.seed, lastStage, decode: source.decode });
      session.metrics.write(session.step, { fidelity: fidelity.score, ...Object.fromEntries(Object.entries(fidelity.accuracy).map(([a, v]) => [`fidelity_${a}`, v])) });
      session.tb.scalar('fidelity/score', fidelity.score, session.step);
    }
    modelFile = `${session.run.dir}/${NSP_MODEL_FILE}`;
    const precision = r.train.precision;
    await saveModule(modelFile, pipeline, {
      dtype: precision === 'bf16' ? 'BF16' : precision === 'fp16' ? 'F16' : 'F32',
      metadata: finalModelMetadata(opts.architecture, lastStage),
    });
  }
  return { globalStep: session.step, finalLoss: session.lastLoss, fidelity, modelFile, stoppedEarly: stopped };
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

async function writeStageSamples(
  pipeline: NspPipeline,
  prompts: string[],
  r: NspRecipe,
  session: TrainingSession<NspJobState>,
  step: number,
  stage: number,
  decode: TrainingSource['decode'],
): Promise<void> {
  const file = `${session.run.samples}/step-${String(step).padStart(6, '0')}-stage${stage}.png`;
  const grid = await saveChainGrid(file, pipeline, prompts, { seed: r.sample.seed, lastStage: stage, decode });
  await session.tb.image(`samples/stage${stage}`, { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
}
