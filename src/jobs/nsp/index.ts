import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { createRun, findResumePoint, TrainingSession } from '../../train/session.js';
import { JobContext, JobRunOptions, registerJob } from '../registry.js';
import { loadNspDataset, pixelSource, TrainingSource } from './data.js';
import { latentSourceFor } from './latent.js';
import { buildPipeline, loadNspForSampling, NspJobState, nspJobStateSchema, nspLegacyState, pipelineFromArchitecture } from './model.js';
import { sampleNsp } from './sampling.js';
import { nspRecipeSchema } from './schema.js';
import { stagePlan, trainNspProgressive, NspTrainResult } from './train.js';

export const NSP_KIND = 'nsp-progressive';

/**
 * `train --recipe nsp-progressive`: read the recipe, find the checkpoint to resume (before any
 * data is built, so a wrong target fails fast), build the data and the pipeline, open a session
 * on the run folder, train, and print where everything is.
 */
export async function runNspJob(ctx: JobContext, opts: JobRunOptions = {}): Promise<NspTrainResult & { exitCode: number }> {
  const r = parseRecipe(nspRecipeSchema, ctx.loaded);
  const resume = findResumePoint(ctx, NSP_KIND, nspJobStateSchema, nspLegacyState);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);

  const dataset = await loadNspDataset(r, ctx.log);
  const resumedArch = resume?.job.architecture ?? null;
  // A resumed latent run keeps decoding through the VAE it started with, whatever vae.recipe finds now.
  const latent = r.space === 'latent' ? await latentSourceFor(r, dataset, ctx, resumedArch?.vae ? { vaePath: resumedArch.vae.path } : {}) : null;
  const source: TrainingSource = latent ?? pixelSource(dataset);

  const built = resumedArch
    ? { pipeline: pipelineFromArchitecture(resumedArch, r.seed), arch: resumedArch }
    : buildPipeline(r, source.channels, source.captions());
  if (!resumedArch && latent) built.arch.vae = { path: latent.vaePath };
  const { pipeline, arch } = built;
  const run = resume?.run ?? createRun(ctx, { kind: NSP_KIND, seed: r.seed, backend: backend.name });
  ctx.log(`run folder: ${run.dir}`);
  ctx.log(
    `model: ${pipeline.generator.numParameters().toLocaleString()} generator params, ` +
      `${pipeline.textEncoder.numParameters().toLocaleString()} text-encoder params (${arch.textEncoder.kind}); ` +
      `${r.space} space, scales ${r.model.sizes.join(' → ')}`,
  );
  const plan = stagePlan(r, source.length);
  const session = new TrainingSession<NspJobState>({
    kind: NSP_KIND,
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: plan.stages.reduce((a, k) => a + plan.steps[k]!, 0),
    model: pipeline,
    jobState: () => ({ architecture: arch }),
    precision: r.train.precision,
    resume,
    recipe: r,
    label: 'nsp',
    say: ctx.log,
    ...opts,
  });
  try {
    const result = await trainNspProgressive({ recipe: r, pipeline, architecture: arch, source, session });
    if (result.stoppedEarly) session.printStopped();
    else {
      const results: string[] = [];
      if (result.fidelity) {
        const f = result.fidelity;
        const acc = Object.entries(f.accuracy)
          .filter(([, v]) => v !== null)
          .map(([k, v]) => `${k} ${((v ?? 0) * 100).toFixed(0)}%`)
          .join(', ');
        results.push(`caption fidelity: ${(f.score * 100).toFixed(1)}% over ${f.count} prompts (${acc})`);
      }
      session.printSummary({
        results,
        outputs: result.modelFile ? [['final model', result.modelFile]] : [],
        samplesNote: 'rows = prompts, columns = scales',
        ...(result.modelFile ? { next: `npx scaleforge sample --checkpoint ${run.dir} --prompt "a red circle in the center on a white background"` } : {}),
      });
    }
    return { ...result, exitCode: session.exitCode };
  } finally {
    session.close();
    pipeline.dispose();
    latent?.vae.model.dispose();
  }
}

export const nspJob = registerJob({
  kind: NSP_KIND,
  describe: 'Next Scale Prediction: progressive per-scale training of a text-conditioned cascade',
  schema: nspRecipeSchema,
  run: async (ctx, opts) => (await runNspJob(ctx, opts)).exitCode,
  load: (target, opts) => ({ ...loadNspForSampling(target, opts), kind: NSP_KIND }),
  sample: (target, request) => sampleNsp(target, request),
});
