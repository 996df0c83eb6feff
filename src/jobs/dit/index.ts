import fs from 'node:fs';
import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { vaeDownsampleFactor, vaeConfigFromDiffusers } from '../../models/vae/index.js';
import { type LoadedCheckpoint } from '../../train/checkpoint.js';
import { createRunDir, type RunDir } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { resolveResume } from '../nsp/index.js';
import { type JobContext, registerJob } from '../registry.js';
import { ditSourceFor, folderClasses, loadDitDataset } from './data.js';
import { loadDitWeights } from '../../models/dit/load.js';
import { buildDitPipeline, type DitPipeline, pipelineFromArchitecture } from './model.js';
import { ditRecipeSchema } from './schema.js';
import { type DitTrainState, trainDit } from './train.js';

/**
 * `kind: dit`: a Diffusion Transformer trained as a text- or class-conditioned generator — the
 * data (pixels or cached VAE latents), the pipeline (DiT + text encoder), then trainDit's loop, and
 * at the end the caption-fidelity score of samples for held-out prompts on procedural data.
 */
async function runDit(ctx: JobContext): Promise<number> {
  const r = parseRecipe(ditRecipeSchema, ctx.loaded);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const runsRoot = ctx.runsRoot ?? 'checkpoints';
  const resumed = ctx.resume ? resolveResume(ctx, runsRoot) : null;
  const resumedState = resumed ? (resumed.checkpoint.extra as Partial<DitTrainState>) : null;
  if (resumed && resumedState?.kind !== 'dit') throw new UsageError(`--resume: ${resumed.checkpoint.file} is not a dit checkpoint`);
  const resumedArch = resumedState?.architecture ?? null;

  const latentFactor = r.space === 'latent' && r.vae.path ? latentFactorOf(r.vae.path) : r.space === 'latent' ? 8 : null;
  const dataset = await loadDitDataset(r, latentFactor, ctx.log);
  const source = await ditSourceFor(r, dataset, ctx, resumedArch?.vae?.path);
  const classes = r.conditioning.type === 'class' ? folderClasses(dataset) : null;
  if (classes && classes.names.length > r.conditioning.num_classes) {
    throw new UsageError(`conditioning.num_classes ${r.conditioning.num_classes} is smaller than the ${classes.names.length} class folders in ${r.data.folder}`);
  }

  let run: RunDir;
  let resumeFrom: LoadedCheckpoint | null = null;
  let pipeline: DitPipeline;
  if (resumed && resumedArch) {
    run = resumed.run;
    resumeFrom = resumed.checkpoint;
    pipeline = pipelineFromArchitecture(resumedArch, r.seed);
  } else {
    pipeline = buildDitPipeline(r, source.size, source.channels, source.captions(), {
      ...(source.latent ? { vae: { path: source.latent.vaePath } } : {}),
      ...(classes ? { classNames: classes.names } : {}),
    });
    if (r.model.init_from) {
      const report = loadDitWeights(r.model.init_from, pipeline.dit);
      ctx.log(`model: initialised from ${r.model.init_from} (${report.layout} layout, ${report.loaded} tensors)`);
    }
    run = createRunDir({
      recipeName: ctx.recipeArg,
      resolvedYaml: ctx.loaded.resolvedYaml,
      root: runsRoot,
      ...(ctx.out ? { out: ctx.out } : {}),
      info: { kind: 'dit', seed: r.seed, backend: backend.name, recipe: ctx.loaded.sourcePath },
    });
  }
  const m = pipeline.architecture.model;
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: DiT ${m.depth}×${m.hiddenSize} (${m.numHeads} heads, patch ${m.patchSize}, ${(m.inputSize / m.patchSize) ** 2} tokens), ` +
      `${pipeline.dit.numParameters().toLocaleString()} params; ` +
      (pipeline.textEncoder
        ? `text-conditioned (${pipeline.textEncoder.kind}, ${pipeline.textEncoder.numParameters().toLocaleString()} params${m.crossAttention ? ', cross-attention' : ''})`
        : `class-conditioned (${m.numClasses} classes)`) +
      `; ${r.space} space ${m.inputSize}×${m.inputSize}×${m.inChannels}; objective ${pipeline.architecture.objective.type}`,
  );
  const started = Date.now();
  const result = await trainDit({ recipe: r, pipeline, source, labels: classes?.labels ?? null, run, resumeFrom, log: ctx.log });
  const minutes = ((Date.now() - started) / 60000).toFixed(1);
  ctx.log('');
  ctx.log(`done in ${minutes} min, ${result.step} steps (${result.stepsPerSecond.toFixed(2)} steps/s), final loss ${result.finalLoss?.toFixed(4) ?? 'n/a'}`);
  if (result.fidelity) {
    const f = result.fidelity;
    const acc = Object.entries(f.accuracy)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `${k} ${((v as number) * 100).toFixed(0)}%`)
      .join(', ');
    ctx.log(`caption fidelity: ${(f.score * 100).toFixed(1)}% over ${f.count} held-out prompts (${acc})`);
  }
  ctx.log(`  checkpoints:  ${run.checkpoints}  (continue with --resume ${run.dir})`);
  if (result.modelFile) ctx.log(`  final model:  ${result.modelFile}`);
  ctx.log(`  samples:      ${run.samples}/*.png`);
  ctx.log(`  metrics:      ${run.metricsFile}`);
  ctx.log(`  TensorBoard:  tensorboard --logdir ${run.tb}`);
  if (result.modelFile) {
    const what = pipeline.isText ? '--prompt "a red circle in the center on a white background"' : '--class 0';
    ctx.log(`  sample more:  npx scaleforge sample --checkpoint ${run.dir} ${what} --steps ${r.sample.steps} --cfg ${r.sample.cfg}`);
  }
  pipeline.dispose();
  source.latent?.vae.model.dispose();
  return 0;
}

/** The VAE's downsampling factor, from its diffusers config when the path is a folder (8 otherwise). */
function latentFactorOf(vaePath: string): number {
  try {
    return vaeDownsampleFactor(vaeConfigFromDiffusers(JSON.parse(fs.readFileSync(`${vaePath}/config.json`, 'utf8')), vaePath));
  } catch {
    return 8;
  }
}

export const ditJob = registerJob({
  kind: 'dit',
  describe: 'Diffusion Transformer: text- or class-conditioned DDPM / rectified-flow training with classifier-free guidance',
  schema: ditRecipeSchema,
  run: runDit,
});
