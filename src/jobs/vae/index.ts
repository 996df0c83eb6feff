import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { Dataset } from '../../data/dataset.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { AutoencoderKL, vaeDownsampleFactor, type VaeConfig } from '../../models/vae/index.js';
import { LoadedCheckpoint } from '../../train/checkpoint.js';
import { createRunDir, RunDir } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { resolveResume } from '../nsp/index.js';
import { JobContext, registerJob } from '../registry.js';
import { vaeRecipeSchema, VaeRecipe } from './schema.js';
import { datasetImages, EvalImages, trainVae, vaeConfigFromRecipe, VaeTrainResult, VaeTrainState } from './train.js';

export interface VaeJobResult extends VaeTrainResult {
  run: RunDir;
}

export interface VaeJobOptions {
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stopAfterStep?: number;
}

async function loadVaeData(r: VaeRecipe, log: (l: string) => void): Promise<{ train: Dataset; evalImages: EvalImages; evalNote: string }> {
  if (r.data.source === 'procedural') {
    const p = r.data.procedural;
    const train = await ProceduralDataset.create({ size: p.size, count: p.count, seed: p.seed });
    // Scored on images the autoencoder never saw: the same generator under another seed.
    const heldOut = await ProceduralDataset.create({ size: p.size, count: r.eval.count, seed: (p.seed + 1_000_003) >>> 0 });
    return { train, evalImages: datasetImages(heldOut, r.eval.count), evalNote: `${r.eval.count} held-out procedural images` };
  }
  if (!r.data.folder) throw new UsageError('data.folder: required when data.source is "folder"');
  const ds = await ImageFolderDataset.load({ root: r.data.folder, size: r.data.size, allowUpscale: r.data.allow_upscale, missingCaption: 'empty' });
  if (ds.skipped.length) {
    log(`data: skipped ${ds.skipped.length} file(s):`);
    for (const s of ds.skipped.slice(0, 20)) log(`  ${s.path}: ${s.reason}`);
  }
  if (ds.length === 0) throw new UsageError(`data.folder: ${r.data.folder} holds no usable images`);
  log(`data: ${ds.length} images from ${r.data.folder}`);
  const evalImages = datasetImages(ds, r.eval.count);
  return { train: ds, evalImages, evalNote: `the first ${evalImages.count} training images` };
}

function checkSizes(r: VaeRecipe, config: VaeConfig, imageSize: number): void {
  const f = vaeDownsampleFactor(config);
  const trained = r.data.crop > 0 ? r.data.crop : imageSize;
  if (r.data.crop > imageSize) throw new UsageError(`data.crop: ${r.data.crop} is larger than the ${imageSize}×${imageSize} images`);
  if (imageSize % f !== 0 || trained % f !== 0) {
    throw new UsageError(
      `data: images of ${imageSize}px${r.data.crop > 0 ? ` cropped to ${r.data.crop}px` : ''} must be multiples of the VAE's downsampling factor ${f} ` +
        `(2^(len(model.block_out_channels) − 1))`,
    );
  }
}

/**
 * Runs a `vae` recipe end to end (also used by latent-space NSP to train its autoencoder first):
 * returns where the run and its final `vae/` folder are.
 */
export async function runVaeJob(ctx: JobContext, opts: VaeJobOptions = {}): Promise<VaeJobResult> {
  const r = parseRecipe(vaeRecipeSchema, ctx.loaded);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const runsRoot = ctx.runsRoot ?? 'checkpoints';
  const { train, evalImages, evalNote } = await loadVaeData(r, ctx.log);

  let run: RunDir;
  let resumeFrom: LoadedCheckpoint | null = null;
  let config: VaeConfig;
  if (ctx.resume) {
    const res = resolveResume(ctx, runsRoot);
    run = res.run;
    resumeFrom = res.checkpoint;
    config = (resumeFrom.extra as unknown as VaeTrainState).config;
    if (!config) throw new UsageError(`--resume: ${resumeFrom.file} is not a vae checkpoint`);
  } else {
    config = vaeConfigFromRecipe(r);
    checkSizes(r, config, train.width);
    run = createRunDir({
      recipeName: ctx.recipeArg,
      resolvedYaml: ctx.loaded.resolvedYaml,
      root: runsRoot,
      ...(ctx.out ? { out: ctx.out } : {}),
      info: { kind: 'vae', seed: r.seed, backend: backend.name, recipe: ctx.loaded.sourcePath },
    });
  }
  if (ctx.resume) checkSizes(r, config, train.width);
  const model = new AutoencoderKL(config, { rng: new Rng(r.seed).fork('init') });
  const f = vaeDownsampleFactor(config);
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: AutoencoderKL ${model.numParameters().toLocaleString()} params, block_out_channels [${config.blockOutChannels}], ` +
      `${config.latentChannels} latent channels, ${train.width}px images → ${train.width / f}×${train.width / f}×${config.latentChannels} latents`,
  );
  ctx.log(`training ${r.train.steps} steps on ${train.length} images${r.data.crop ? ` (random ${r.data.crop}px crops)` : ''}; PSNR on ${evalNote}`);
  const started = Date.now();
  const result = await trainVae({
    recipe: r,
    model,
    dataset: train,
    evalImages,
    run,
    resumeFrom,
    log: ctx.log,
    ...(opts.progressStream ? { progressStream: opts.progressStream } : {}),
    ...(opts.stopAfterStep !== undefined ? { stopAfterStep: opts.stopAfterStep } : {}),
  });
  model.dispose();
  const minutes = ((Date.now() - started) / 60000).toFixed(1);
  ctx.log('');
  if (result.stoppedEarly) {
    ctx.log(`stopped at step ${result.step}; continue with --resume ${run.dir}`);
    return { ...result, run };
  }
  ctx.log(`done in ${minutes} min, ${result.step} steps, final loss ${result.finalLoss?.toFixed(4) ?? 'n/a'}`);
  ctx.log(`reconstruction PSNR: ${result.psnr!.toFixed(2)} dB (posterior mean, ${evalNote})`);
  ctx.log(`  VAE (diffusers layout): ${result.vaeDir}  (use it as vae.path in a latent recipe)`);
  ctx.log(`  checkpoints:  ${run.checkpoints}  (continue with --resume ${run.dir})`);
  ctx.log(`  samples:      ${run.samples}/*.png  (top row originals, bottom row reconstructions)`);
  ctx.log(`  metrics:      ${run.metricsFile}`);
  ctx.log(`  TensorBoard:  tensorboard --logdir ${run.tb}`);
  return { ...result, run };
}

export const vaeJob = registerJob({
  kind: 'vae',
  describe: 'AutoencoderKL (diffusers layout): reconstruction + KL training, for latent-space generators',
  schema: vaeRecipeSchema,
  run: async (ctx) => {
    await runVaeJob(ctx);
    return 0;
  },
});
