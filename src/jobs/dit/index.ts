import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { loadDitWeights } from '../../models/dit/load.js';
import { vaeConfigFromDiffusers, vaeDownsampleFactor } from '../../models/vae/index.js';
import type { RunDir } from '../../train/run_dir.js';
import { createRun, findResumePoint, TrainingSession } from '../../train/session.js';
import { UsageError } from '../../util/errors.js';
import { type JobContext, type JobRunOptions, registerJob } from '../registry.js';
import { ditSourceFor, folderClasses, loadDitDataset } from './data.js';
import { buildDitPipeline, DIT_KIND, type DitJobState, ditJobStateSchema, loadDitModel, pipelineFromArchitecture } from './model.js';
import { sampleDit } from './sampling.js';
import { ditRecipeSchema } from './schema.js';
import { type DitTrainResult, trainDit } from './train.js';

export interface DitJobResult extends DitTrainResult {
  run: RunDir;
  exitCode: number;
}

/**
 * `kind: dit`: a Diffusion Transformer trained as a text- or class-conditioned generator — data
 * (pixels, or VAE latents cached once), the pipeline (DiT + text encoder), the session, trainDit,
 * and for procedural data the caption-fidelity score of samples for held-out prompts.
 */
export async function runDitJob(ctx: JobContext, opts: JobRunOptions = {}): Promise<DitJobResult> {
  const r = parseRecipe(ditRecipeSchema, ctx.loaded);
  const resume = findResumePoint(ctx, DIT_KIND, ditJobStateSchema);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const dataset = await loadDitDataset(r, r.space === 'latent' ? latentFactorOf(r.vae.path) : null, ctx.log);
  const source = await ditSourceFor(r, dataset, ctx, resume?.job.architecture.vae?.path);
  const classes = r.conditioning.type === 'class' ? folderClasses(dataset) : null;
  if (classes && classes.names.length > r.conditioning.num_classes) {
    throw new UsageError(`conditioning.num_classes ${r.conditioning.num_classes} is smaller than the ${classes.names.length} class folders in ${r.data.folder}`);
  }
  const pipeline = resume
    ? pipelineFromArchitecture(resume.job.architecture, r.seed)
    : buildDitPipeline(r, source.size, source.channels, source.captions(), {
        ...(source.latent ? { vae: { path: source.latent.vaePath } } : {}),
        ...(classes ? { classNames: classes.names } : {}),
      });
  if (!resume && r.model.init_from) {
    const report = loadDitWeights(r.model.init_from, pipeline.dit);
    ctx.log(`model: initialised from ${report.file} (${report.layout} layout, ${report.loaded} tensors)`);
  }
  const run = resume?.run ?? createRun(ctx, { kind: DIT_KIND, seed: r.seed, backend: backend.name });
  const arch = pipeline.architecture;
  const m = arch.model;
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: DiT ${m.depth}×${m.hiddenSize} (${m.numHeads} heads, patch ${m.patchSize}, ${(m.inputSize / m.patchSize) ** 2} tokens), ` +
      `${pipeline.dit.numParameters().toLocaleString()} params; ` +
      (pipeline.textEncoder
        ? `text-conditioned (${pipeline.textEncoder.kind} encoder, ${pipeline.textEncoder.numParameters().toLocaleString()} params${m.crossAttention ? ', cross-attention' : ''})`
        : `class-conditioned (${m.numClasses} classes)`) +
      `; ${r.space} space ${m.inputSize}×${m.inputSize}×${m.inChannels}; ${arch.objective.type === 'flow' ? 'rectified flow' : 'DDPM ε'} objective`,
  );
  const session = new TrainingSession<DitJobState>({
    kind: DIT_KIND,
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: r.train.steps,
    model: pipeline,
    jobState: () => ({ architecture: arch }),
    precision: r.train.precision,
    resume,
    recipe: r,
    label: 'dit',
    say: ctx.log,
    ...opts,
  });
  try {
    const result = await trainDit({ recipe: r, pipeline, source, labels: classes?.labels ?? null, session });
    if (result.stoppedEarly) session.printStopped();
    else {
      const results = [`speed: ${result.stepsPerSecond.toFixed(2)} steps/s (batch ${r.data.batch_size})`];
      if (result.fidelity) {
        const f = result.fidelity;
        const acc = Object.entries(f.accuracy)
          .filter(([, v]) => v !== null)
          .map(([k, v]) => `${k} ${((v as number) * 100).toFixed(0)}%`)
          .join(', ');
        results.push(`caption fidelity: ${(f.score * 100).toFixed(1)}% over ${f.count} held-out prompts (${acc})`);
      }
      const what = pipeline.isText ? '--prompt "a red circle in the center on a white background"' : '--class 0';
      session.printSummary({
        results,
        outputs: [['final model', result.modelFile!, 'EMA weights']],
        next: `npx scaleforge sample --checkpoint ${run.dir} ${what} --n 4 --steps ${r.sample.steps} --cfg ${r.sample.cfg}`,
      });
    }
    return { ...result, run, exitCode: session.exitCode };
  } finally {
    session.close();
    pipeline.dispose();
    source.latent?.vae.model.dispose();
  }
}

/** The VAE's downsampling factor from its diffusers config (8, the SD VAEs', when it cannot be read yet). */
function latentFactorOf(vaePath: string | undefined): number {
  const config = vaePath ? path.join(vaePath, 'config.json') : null;
  if (!config || !fs.existsSync(config)) return 8;
  return vaeDownsampleFactor(vaeConfigFromDiffusers(JSON.parse(fs.readFileSync(config, 'utf8')), config));
}

export const ditJob = registerJob({
  kind: DIT_KIND,
  describe: 'Diffusion Transformer: text- or class-conditioned DDPM / rectified-flow training with classifier-free guidance',
  schema: ditRecipeSchema,
  run: async (ctx, opts) => (await runDitJob(ctx, opts)).exitCode,
  load: (target, opts) => loadDitModel(target, opts),
  sample: (target, request) => sampleDit(target, request),
});
