import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { AutoencoderKL, vaeDownsampleFactor } from '../../models/vae/index.js';
import { RunDir } from '../../train/run_dir.js';
import { createRun, findResumePoint, TrainingSession } from '../../train/session.js';
import { Rng } from '../../util/rng.js';
import { JobContext, JobRunOptions, registerJob } from '../registry.js';
import { loadVaeData } from './data.js';
import { loadVaeModel, VAE_KIND, vaeConfigFromRecipe, VaeJobState, vaeJobStateSchema, vaeLegacyState } from './model.js';
import { sampleVae } from './sampling.js';
import { vaeRecipeSchema } from './schema.js';
import { trainVae, VaeTrainResult } from './train.js';

export interface VaeJobResult extends VaeTrainResult {
  run: RunDir;
  exitCode: number;
}

/**
 * Runs a `vae` recipe end to end (also used by latent-space NSP to train its autoencoder first):
 * returns where the run and its final `vae/` folder are.
 */
export async function runVaeJob(ctx: JobContext, opts: JobRunOptions = {}): Promise<VaeJobResult> {
  const r = parseRecipe(vaeRecipeSchema, ctx.loaded);
  const resume = findResumePoint(ctx, VAE_KIND, vaeJobStateSchema, vaeLegacyState);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const { train, evalImages, evalNote } = await loadVaeData(r, ctx.log);

  const config = resume?.job.config ?? vaeConfigFromRecipe(r);
  const model = new AutoencoderKL(config, { rng: new Rng(r.seed).fork('init') });
  const run = resume?.run ?? createRun(ctx, { kind: VAE_KIND, seed: r.seed, backend: backend.name });
  const f = vaeDownsampleFactor(config);
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: AutoencoderKL ${model.numParameters().toLocaleString()} params, block_out_channels [${config.blockOutChannels}], ` +
      `${config.latentChannels} latent channels, ${train.width}px images → ${train.width / f}×${train.width / f}×${config.latentChannels} latents`,
  );
  ctx.log(`training ${r.train.steps} steps on ${train.length} images${r.data.crop ? ` (random ${r.data.crop}px crops)` : ''}; PSNR on ${evalNote}`);
  const session = new TrainingSession<VaeJobState>({
    kind: VAE_KIND,
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: r.train.steps,
    model,
    jobState: () => ({ config: model.config }),
    precision: r.train.precision,
    resume,
    recipe: r,
    label: 'vae',
    say: ctx.log,
    ...opts,
  });
  try {
    const result = await trainVae({ recipe: r, model, dataset: train, evalImages, session });
    if (result.stoppedEarly) session.printStopped();
    else {
      session.printSummary({
        results: [`reconstruction PSNR: ${result.psnr!.toFixed(2)} dB (posterior mean, ${evalNote})`],
        outputs: [['VAE', result.vaeDir!, 'diffusers layout: use it as vae.path in a latent recipe']],
        samplesNote: 'top row originals, bottom row reconstructions',
      });
    }
    return { ...result, run, exitCode: session.exitCode };
  } finally {
    session.close();
    model.dispose();
  }
}

export const vaeJob = registerJob({
  kind: VAE_KIND,
  describe: 'AutoencoderKL (diffusers layout): reconstruction + KL training, for latent-space generators',
  schema: vaeRecipeSchema,
  run: async (ctx, opts) => (await runVaeJob(ctx, opts)).exitCode,
  load: (target, opts) => loadVaeModel(target, opts),
  sample: (target, request) => sampleVae(target, request),
});
