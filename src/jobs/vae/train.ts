import path from 'node:path';
import { Dataset } from '../../data/dataset.js';
import { AutoencoderKL, saveVae, vaeLoss } from '../../models/vae/index.js';
import { EMA } from '../../train/ema.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import { TrainingSession } from '../../train/session.js';
import { StepFunction } from '../../train/step.js';
import { EvalImages, randomCrops } from './data.js';
import { VAE_OUTPUT_DIR, VaeJobState } from './model.js';
import { latentScalingFactor, reconstructionPsnr, saveReconstructionGrid } from './sampling.js';
import { VaeRecipe } from './schema.js';

export interface VaeTrainOptions {
  recipe: VaeRecipe;
  model: AutoencoderKL;
  dataset: Dataset;
  evalImages: EvalImages;
  /** An open session on the run folder (resumed or new) whose model is `model`. */
  session: TrainingSession<VaeJobState>;
}

export interface VaeTrainResult {
  step: number;
  finalLoss: number | null;
  /** Reconstruction PSNR (dB, images in [0, 1]) of the posterior mean over the eval images; null when stopped early. */
  psnr: number | null;
  /** The diffusers-layout folder written at the end; null when stopped early. */
  vaeDir: string | null;
  stoppedEarly: boolean;
}

/**
 * Trains the autoencoder on reconstruction (L1/MSE) + β·KL. Everything that decides the next step —
 * weights, optimizer and EMA state, sampler position, RNG state — is in each checkpoint, so a resumed
 * run continues exactly as the uninterrupted one would have.
 */
export async function trainVae(opts: VaeTrainOptions): Promise<VaeTrainResult> {
  const { recipe: r, model, session, evalImages } = opts;
  const sampler = session.dataCursor(opts.dataset, { shuffle: true, flip: r.data.flip });
  // Posterior samples and crop offsets.
  const rng = session.rng('vae');
  const params = model.trainableParameters();
  const optimizer = makeOptimizer(r.train.optimizer, params);
  const ema = r.train.ema.enabled ? new EMA(model, { decay: r.train.ema.decay }) : null;
  const stepFn = new StepFunction({ params, optimizer, ema, gradAccum: r.train.grad_accum, clip: r.train.grad_clip, lossScaler: session.lossScaler });
  const writeGrid = async (step: number): Promise<void> => {
    const file = path.join(session.run.samples, `step-${String(step).padStart(6, '0')}-reconstructions.png`);
    const grid = await saveReconstructionGrid(file, model, evalImages, r.eval.grid);
    await session.tb.image('reconstructions', { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
  };

  const microBatch = () => {
    const x = randomCrops(sampler.nextBatch(r.data.batch_size).images, r.data.crop, rng);
    return {
      loss: () => {
        const { reconstruction, posterior } = model.forward(x, r.train.sample_posterior ? rng : undefined);
        const l = vaeLoss(x, reconstruction, posterior, r.train.loss);
        posterior.dispose();
        return { total: l.total, parts: { l1: l.l1, mse: l.mse, kl: l.kl } };
      },
      done: () => x.dispose(),
    };
  };
  const outcome = await session.runPhase({
    id: 0,
    steps: r.train.steps,
    lr: phaseSchedule(r.train.schedule, r.train.optimizer.lr, r.train.steps),
    optimizer,
    ema,
    step: (lr) => stepFn.run(lr, microBatch),
    sample: writeGrid,
  });
  session.endTraining();

  let psnrDb: number | null = null;
  let vaeDir: string | null = null;
  if (outcome === 'done') {
    // The averaged weights are the result; the checkpoint keeps the raw ones with the EMA beside them.
    await session.checkpoint();
    ema?.copyTo();
    await session.writeSamples(() => writeGrid(session.step));
    psnrDb = reconstructionPsnr(model, evalImages);
    if (r.model.scaling_factor === 'auto') {
      // The config object is the model's own copy; the factor only affects encodeToLatents/decodeLatents.
      model.config.scalingFactor = latentScalingFactor(model, evalImages);
      session.say(`latent scaling factor: ${model.config.scalingFactor} (1 / std of the latent means over ${evalImages.count} images)`);
    }
    session.metrics.write(session.step, { psnr: psnrDb, scaling_factor: model.config.scalingFactor });
    session.tb.scalar('eval/psnr', psnrDb, session.step);
    vaeDir = path.join(session.run.dir, VAE_OUTPUT_DIR);
    await saveVae(vaeDir, model);
  }
  optimizer.dispose();
  ema?.dispose();
  return { step: session.step, finalLoss: session.lastLoss, psnr: psnrDb, vaeDir, stoppedEarly: outcome === 'stopped' };
}
