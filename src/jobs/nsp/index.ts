import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { Dataset } from '../../data/dataset.js';
import { CheckpointManager, LoadedCheckpoint } from '../../train/checkpoint.js';
import { createRunDir, findLatestRun, openRunDir, RunDir } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { JobContext, registerJob } from '../registry.js';
import { buildPipeline, NspArchitecture, pipelineFromArchitecture } from './pipeline.js';
import { nspRecipeSchema, NspRecipe } from './schema.js';
import { latentSourceFor } from './latent.js';
import { pixelSource, TrainingSource } from './source.js';
import { trainNspProgressive, NspTrainState } from './train.js';

export async function loadNspDataset(r: NspRecipe, log: (l: string) => void): Promise<Dataset> {
  const finest = r.model.sizes[r.model.sizes.length - 1]!;
  const imageSize = r.space === 'latent' ? undefined : finest;
  if (r.data.source === 'procedural') {
    const size = imageSize ?? r.data.procedural.size;
    if (imageSize !== undefined && r.data.procedural.size !== imageSize) {
      log(`data.procedural.size ${r.data.procedural.size} → ${imageSize} to match model.sizes`);
    }
    return ProceduralDataset.create({ size, count: r.data.procedural.count, seed: r.data.procedural.seed });
  }
  if (!r.data.folder) throw new UsageError('data.folder: required when data.source is "folder"');
  const ds = await ImageFolderDataset.load({ root: r.data.folder, size: imageSize ?? finest * 8, allowUpscale: r.data.allow_upscale });
  if (ds.skipped.length) {
    log(`data: skipped ${ds.skipped.length} file(s):`);
    for (const s of ds.skipped.slice(0, 20)) log(`  ${s.path}: ${s.reason}`);
    if (ds.skipped.length > 20) log(`  … and ${ds.skipped.length - 20} more`);
  }
  log(`data: ${ds.length} images from ${r.data.folder}`);
  return ds;
}

/** Where a `--resume` points: the latest run of this recipe, a run folder, or a checkpoint file. */
export function resolveResume(ctx: JobContext, runsRoot: string): { run: RunDir; checkpoint: LoadedCheckpoint } {
  let dir: string;
  let file: string | null = null;
  if (ctx.resume === true) {
    const latest = findLatestRun(runsRoot, ctx.recipeArg);
    if (!latest) throw new UsageError(`--resume: no earlier run of ${ctx.recipeArg} under ${runsRoot}/`);
    dir = latest;
  } else {
    const p = path.resolve(ctx.resume!);
    if (!fs.existsSync(p)) throw new UsageError(`--resume: ${ctx.resume} does not exist`);
    if (fs.statSync(p).isDirectory()) dir = path.basename(p) === 'checkpoints' ? path.dirname(p) : p;
    else {
      file = p;
      dir = path.dirname(path.dirname(p));
    }
  }
  const run = openRunDir(dir);
  const mgr = new CheckpointManager(run.checkpoints);
  const checkpoint = file ? mgr.load(file) : mgr.loadLatest();
  if (!checkpoint) throw new UsageError(`--resume: ${run.checkpoints} holds no checkpoint yet`);
  if (checkpoint.fellBackFrom) ctx.log(`warning: ${checkpoint.fellBackFrom} was unreadable; using ${checkpoint.file}`);
  return { run, checkpoint };
}

async function runNsp(ctx: JobContext): Promise<number> {
  const r = parseRecipe(nspRecipeSchema, ctx.loaded);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const runsRoot = ctx.runsRoot ?? 'checkpoints';
  const dataset = await loadNspDataset(r, ctx.log);
  const resumed = ctx.resume ? resolveResume(ctx, runsRoot) : null;
  const resumedArch = resumed ? (resumed.checkpoint.extra as unknown as NspTrainState).architecture : null;
  // A resumed latent run keeps decoding through the VAE it started with, whatever vae.recipe finds now.
  const latent = r.space === 'latent' ? await latentSourceFor(r, dataset, ctx, resumedArch?.vae ? { vaePath: resumedArch.vae.path } : {}) : null;
  const source: TrainingSource = latent ?? pixelSource(dataset);

  let run: RunDir;
  let resumeFrom: LoadedCheckpoint | null = null;
  let pipelineAndArch: { pipeline: ReturnType<typeof pipelineFromArchitecture>; arch: NspArchitecture };
  if (resumed && resumedArch) {
    run = resumed.run;
    resumeFrom = resumed.checkpoint;
    pipelineAndArch = { pipeline: pipelineFromArchitecture(resumedArch, r.seed), arch: resumedArch };
  } else {
    pipelineAndArch = buildPipeline(r, source.channels, source.captions());
    if (latent) pipelineAndArch.arch.vae = { path: latent.vaePath };
    run = createRunDir({
      recipeName: ctx.recipeArg,
      resolvedYaml: ctx.loaded.resolvedYaml,
      root: runsRoot,
      ...(ctx.out ? { out: ctx.out } : {}),
      info: { kind: 'nsp-progressive', seed: r.seed, backend: backend.name, recipe: ctx.loaded.sourcePath },
    });
  }
  const { pipeline, arch } = pipelineAndArch;
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: ${pipeline.generator.numParameters().toLocaleString()} generator params, ` +
      `${pipeline.textEncoder.numParameters().toLocaleString()} text-encoder params (${arch.textEncoder.kind}); ` +
      `${r.space} space, scales ${r.model.sizes.join(' → ')}`,
  );
  const started = Date.now();
  const result = await trainNspProgressive({ recipe: r, pipeline, architecture: arch, source, run, resumeFrom, log: ctx.log });
  const minutes = ((Date.now() - started) / 60000).toFixed(1);
  ctx.log('');
  ctx.log(`done in ${minutes} min, ${result.globalStep} steps, final loss ${result.finalLoss?.toFixed(4) ?? 'n/a'}`);
  if (result.fidelity) {
    const f = result.fidelity;
    const acc = Object.entries(f.accuracy)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `${k} ${((v as number) * 100).toFixed(0)}%`)
      .join(', ');
    ctx.log(`caption fidelity: ${(f.score * 100).toFixed(1)}% over ${f.count} prompts (${acc})`);
  }
  ctx.log(`  checkpoints:  ${run.checkpoints}  (continue with --resume ${run.dir})`);
  if (result.modelFile) ctx.log(`  final model:  ${result.modelFile}`);
  ctx.log(`  samples:      ${run.samples}/*.png  (rows = prompts, columns = scales)`);
  ctx.log(`  metrics:      ${run.metricsFile}`);
  ctx.log(`  TensorBoard:  tensorboard --logdir ${run.tb}`);
  if (result.modelFile) ctx.log(`  sample more:  npx scaleforge sample --checkpoint ${run.dir} --prompt "a red circle in the center on a white background"`);
  pipeline.dispose();
  latent?.vae.model.dispose();
  return 0;
}

export const nspJob = registerJob({
  kind: 'nsp-progressive',
  describe: 'Next Scale Prediction: progressive per-scale training of a text-conditioned cascade',
  schema: nspRecipeSchema,
  run: runNsp,
});
