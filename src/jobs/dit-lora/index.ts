import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../../backend/select.js';
import { parseRecipe } from '../../config/recipe.js';
import { checkTriggerWord } from '../../data/caption_ops.js';
import { writeLoraFile } from '../../lora/formats/index.js';
import { BuiltinTextEncoder } from '../../models/text/builtin_text_encoder.js';
import { vaeDownsampleFactor } from '../../models/vae/index.js';
import type { RunDir } from '../../train/run_dir.js';
import { createRun, findResumePoint, TrainingSession } from '../../train/session.js';
import { UsageError } from '../../util/errors.js';
import { type JobContext, type JobRunOptions, registerJob } from '../registry.js';
import type { DitPipeline } from '../dit/model.js';
import { encodeLoraLatents, loadLoraData, loraSampler, writeBucketReport } from './data.js';
import { ADAPTER_INFO_FILE, DIT_LORA_KIND, type DitLoraJobState, ditLoraJobStateSchema, injectAdapters, loadBase, resolveBase } from './model.js';
import { type BrandEvaluation, evaluateBrand, sampleDitLora } from './sampling.js';
import { ditLoraRecipeSchema } from './schema.js';
import { type DitLoraTrainResult, loraSampleSettings, trainDitLora } from './train.js';

export interface DitLoraJobResult extends DitLoraTrainResult {
  run: RunDir;
  exitCode: number;
  adapterFile: string | null;
  evaluation: BrandEvaluation | null;
  adapterBytes: number | null;
  baseBytes: number;
}

/** The trigger checked against the base's tokenizer: it must give at least one token. */
function checkedTrigger(trigger: string, pipeline: DitPipeline, log: (l: string) => void): string {
  const te = pipeline.textEncoder;
  if (!te) throw new UsageError('base: a class-conditioned DiT has no prompts to put a trigger word in; use a text-conditioned base');
  const tok = te instanceof BuiltinTextEncoder ? te.tokenizer : null;
  const t = checkTriggerWord(trigger, ',', tok ? (s) => tok.tokenize(s) : undefined);
  if (tok && tok.tokenize(t).every((id) => id === tok.unkId)) log(`trigger "${t}" is not in the base's vocabulary: it reaches the model as the unknown-word token, which no base caption used`);
  return t;
}

/**
 * `kind: dit-lora`: LoRA adapters on a frozen DiT (a dit run, trained first when none exists) —
 * base, brand images in one bucket of the base's size, adapters, the session, trainDitLora, then
 * the adapter file in the chosen layout and, for the built-in brand set, brand rate and prior kept.
 */
export async function runDitLoraJob(ctx: JobContext, opts: JobRunOptions = {}): Promise<DitLoraJobResult> {
  const r = parseRecipe(ditLoraRecipeSchema, ctx.loaded);
  const resume = findResumePoint(ctx, DIT_LORA_KIND, ditLoraJobStateSchema);
  const backend = await initBackend(ctx.backend ?? r.backend);
  ctx.log(`backend: ${backend.name}`);
  const basePath = resume?.job.base ?? (await resolveBase(r, ctx));
  const base = loadBase(basePath);
  try {
    const arch = base.pipeline.architecture;
    const trigger = checkedTrigger(r.data.trigger, base.pipeline, ctx.log);
    // Latent-space bases: images at the size the VAE encodes to the base's latent grid, then cached latents.
    const imageSize = arch.model.inputSize * (base.vae ? vaeDownsampleFactor(base.vae.config) : 1);
    const images = await loadLoraData(r, imageSize, trigger);
    const data = base.vae ? await encodeLoraLatents(images, base.vae, base.vaeWeightsPath!, path.join(ctx.runsRoot ?? 'checkpoints', '.latent-cache'), ctx.log) : images;
    const loraConfig = resume?.job.lora ?? r.lora;
    const lora = injectAdapters(base.pipeline, loraConfig, r.seed);
    const sampler = loraSampler(data, r.data.batch_size, r.seed);
    if (resume) sampler.setState(resume.job.sampler);
    const run = resume?.run ?? createRun(ctx, { kind: DIT_LORA_KIND, seed: r.seed, backend: backend.name });
    writeBucketReport(path.join(run.dir, 'buckets.txt'), data);
    const adapterParams = [...lora.trainableParameters().values()].reduce((n, v) => n + v.size, 0);
    ctx.log(`run folder: ${run.dir}`);
    ctx.log(`base: ${basePath} (${base.pipeline.numParameters().toLocaleString()} params, frozen)`);
    ctx.log(`lora: ${lora.adapters.size} adapters (r ${loraConfig.r}, alpha ${loraConfig.alpha ?? loraConfig.r}${loraConfig.dora ? ', DoRA' : ''}), ${adapterParams.toLocaleString()} trainable params`);
    ctx.log(`data: ${data.items.length} images${base.vae ? ` (${imageSize}px → ${data.size}×${data.size}×${data.channels} latents)` : ''}, trigger "${trigger}"; bucket report in ${path.join(run.dir, 'buckets.txt')}`);
    const session = new TrainingSession<DitLoraJobState>({
      kind: DIT_LORA_KIND,
      run,
      seed: r.seed,
      log: r.log,
      totalSteps: r.train.steps,
      model: base.pipeline,
      jobState: () => ({ base: basePath, lora: loraConfig, sampler: sampler.getState() }),
      resume,
      recipe: r,
      label: 'dit-lora',
      say: ctx.log,
      ...opts,
    });
    try {
      const result = await trainDitLora({ recipe: r, base, lora, data, sampler, trigger, session });
      const baseBytes = fs.statSync(fs.statSync(basePath).isDirectory() ? path.join(basePath, 'model.safetensors') : basePath).size;
      if (result.stoppedEarly) {
        session.printStopped();
        return { ...result, run, exitCode: session.exitCode, adapterFile: null, evaluation: null, adapterBytes: null, baseBytes };
      }
      const adapterFile = path.join(run.dir, `${r.output.name}.safetensors`);
      const weights = lora.toWeights();
      await writeLoraFile(adapterFile, weights, r.output.format, {
        baseModel: basePath,
        outputName: r.output.name,
        tagFrequency: data.tagFrequency,
        trainingComment: `trigger: ${trigger}`,
      });
      fs.writeFileSync(path.join(run.dir, ADAPTER_INFO_FILE), `${JSON.stringify({ base: basePath, file: path.basename(adapterFile), format: r.output.format }, null, 2)}\n`);
      const adapterBytes = fs.statSync(adapterFile).size;
      const results = [`speed: ${result.stepsPerSecond.toFixed(2)} steps/s (batch ${r.data.batch_size})`];
      let evaluation: BrandEvaluation | null = null;
      if (r.data.source === 'brand') {
        evaluation = await evaluateBrand(base, lora, trigger, r.sample.eval_samples, loraSampleSettings(r, base));
        const e = evaluation;
        const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
        results.push(`brand rate: ${pct(e.brandRateWithTrigger)} with trigger, ${pct(e.brandRateWithoutTrigger)} without (base with trigger: ${pct(e.brandRateBase)}) over ${r.sample.eval_samples} held-out prompts`);
        results.push(`prior kept: caption fidelity of non-trigger prompts ${pct(e.fidelityAfter.score)} after vs ${pct(e.fidelityBefore.score)} before (${((e.fidelityAfter.score - e.fidelityBefore.score) * 100).toFixed(1)} points)`);
        session.metrics.write(session.step, { brand_rate_trigger: e.brandRateWithTrigger, brand_rate_plain: e.brandRateWithoutTrigger, fidelity_before: e.fidelityBefore.score, fidelity_after: e.fidelityAfter.score });
      }
      results.push(`adapter: ${(adapterBytes / 1024).toFixed(1)} KiB (${r.output.format}) vs base ${(baseBytes / 1024).toFixed(1)} KiB (${((100 * adapterBytes) / baseBytes).toFixed(1)}%)`);
      session.printSummary({
        results,
        outputs: [['adapter', adapterFile, r.output.format], ['bucket report', path.join(run.dir, 'buckets.txt')]],
        next: `npx scaleforge sample --checkpoint ${basePath} --lora ${adapterFile}:1 --prompt "${trigger}, a red circle in the center on a white background"`,
      });
      return { ...result, run, exitCode: session.exitCode, adapterFile, evaluation, adapterBytes, baseBytes };
    } finally {
      session.close();
    }
  } finally {
    base.dispose();
  }
}

export const ditLoraJob = registerJob({
  kind: DIT_LORA_KIND,
  describe: 'LoRA / DoRA fine-tuning of a frozen DiT on a brand set (trigger word, buckets), saved as PEFT / kohya / ComfyUI / diffusers files',
  schema: ditLoraRecipeSchema,
  run: async (ctx, opts) => (await runDitLoraJob(ctx, opts)).exitCode,
  load: (target) => {
    throw new UsageError(`${target}: a dit-lora run is an adapter, not a model; load its base with the adapter (scaleforge sample --lora)`);
  },
  sample: (target, request) => sampleDitLora(target, request),
});
