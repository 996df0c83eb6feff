import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../../backend/select.js';
import { aggregateFidelity, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { savePng, tensorToRgb8 } from '../../io/image.js';
import { CheckpointManager } from '../../train/checkpoint.js';
import { findLatestRun, runDirPaths, runStamp } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { createExtractor, extractFolder, type FeatureExtractor, type FeatureSet } from '../../eval/evaluate_features.js';
import { fromFeatureSet, loadEvalInput, type EvalInput } from '../../eval/evaluate_inputs.js';
import { clipScores, computeFid, computeIs, computeKid, type MetricValues } from '../../eval/evaluate_metrics.js';
import { writeReport, type ReportCheckpoint, type ReportData } from '../../eval/report.js';
import { loadNspForSampling } from '../nsp/load.js';
import { fidelityPrompts, generate } from '../nsp/sampling.js';
import type { EvaluateRecipe } from './schema.js';

/**
 * Evaluates every checkpoint of a run, as one story: find the run and its checkpoints; draw fixed
 * prompts and seeds; per checkpoint sample N images (saved with their prompts as sidecar captions),
 * score caption fidelity, and — where the networks' weights are present — FID/KID/IS against the
 * reference set and CLIP-score against the prompts; write metrics.json and report.html. A metric
 * whose weights are missing is skipped with the reason, and the report is still written.
 */

export interface EvaluateRunOptions {
  log: (line: string) => void;
  /** Overrides `run` (the `--run` flag). */
  run?: string;
  /** Overrides `out`. */
  out?: string;
  now?: Date;
}

export interface CheckpointResult {
  label: string;
  step?: number;
  file: string;
  metrics: MetricValues & { caption_fidelity?: number };
  samples: { image: string; prompt: string; seed: number; fidelity: number; clip_score?: number }[];
}

export interface EvaluateRunResult {
  outDir: string;
  checkpoints: CheckpointResult[];
  skippedMetrics: { metric: string; reason: string }[];
  warnings: string[];
  settings: Record<string, string | number | boolean>;
}

function checkpointsOf(runDir: string, which: 'all' | 'last'): { label: string; step?: number; file: string }[] {
  const run = runDirPaths(runDir);
  const list: { label: string; step?: number; file: string }[] = new CheckpointManager(run.checkpoints).list().map((c) => ({ label: `step ${c.step}`, step: c.step, file: c.file }));
  const finalModel = path.join(run.dir, 'model.safetensors');
  if (fs.existsSync(finalModel)) {
    const lastStep = list.length ? list[list.length - 1]!.step : undefined;
    list.push({ label: 'final model', ...(lastStep !== undefined ? { step: lastStep + 1 } : {}), file: finalModel });
  }
  if (!list.length) throw new UsageError(`${runDir}: no checkpoints (checkpoints/step-*.safetensors) and no model.safetensors to evaluate`);
  return which === 'last' ? list.slice(-1) : list;
}

export function resolveRunFolder(cfg: EvaluateRecipe, override?: string): string {
  const run = override ?? cfg.run;
  if (run !== 'latest') {
    if (!fs.existsSync(run)) throw new UsageError(`run: ${run} does not exist`);
    return path.resolve(run);
  }
  const found = findLatestRun(cfg.runs_root, cfg.recipe_name);
  if (!found) {
    throw new UsageError(
      `no run of '${cfg.recipe_name}' under ${cfg.runs_root}/ to evaluate; train one first (scaleforge train --recipe ${cfg.recipe_name}) or pass --run RUN_FOLDER`,
    );
  }
  return found;
}

/** A network for a metric, or the reason it cannot be had (missing weights say how to get them). */
async function tryExtractor(name: string, opts: { weightsPath?: string; resize?: 'clean' | 'legacy' }): Promise<FeatureExtractor | string> {
  try {
    return await createExtractor(name, { ...(opts.weightsPath ? { weightsPath: opts.weightsPath } : {}), ...(opts.resize ? { resize: opts.resize } : {}) });
  } catch (e) {
    if (e instanceof UsageError) return e.message;
    throw e;
  }
}

export async function evaluateRun(cfg: EvaluateRecipe, opts: EvaluateRunOptions): Promise<EvaluateRunResult> {
  const log = opts.log;
  const runDir = resolveRunFolder(cfg, opts.run);
  const checkpoints = checkpointsOf(runDir, cfg.checkpoints);
  const outDir = path.resolve(opts.out ?? cfg.out ?? path.join(runDir, `eval-${runStamp(opts.now ?? new Date())}`));
  fs.mkdirSync(outDir, { recursive: true });
  const backend = (await initBackend(cfg.backend ?? process.env.SCALEFORGE_BACKEND)).name;
  log(`evaluating ${checkpoints.length} checkpoint(s) of ${runDir} → ${outDir}`);

  const n = cfg.samples_per_checkpoint;
  const prompts = fidelityPrompts(n, cfg.prompt_seed);
  const skippedMetrics: EvaluateRunResult['skippedMetrics'] = [];
  const warnings: string[] = [];
  const wants = new Set(cfg.metrics);

  // The networks, once for all checkpoints; a missing one turns its metrics into reported skips.
  let inception: FeatureExtractor | undefined;
  if (wants.has('fid') || wants.has('kid') || wants.has('is')) {
    const r = await tryExtractor('inception-fid', { ...(cfg.inception.weights ? { weightsPath: cfg.inception.weights } : {}), resize: cfg.inception.resize });
    if (typeof r === 'string') for (const m of ['fid', 'kid', 'is'] as const) wants.has(m) && skippedMetrics.push({ metric: m, reason: r });
    else inception = r;
  }
  let clip: FeatureExtractor | undefined;
  if (wants.has('clip_score')) {
    const r = await tryExtractor(cfg.clip.model, cfg.clip.weights ? { weightsPath: cfg.clip.weights } : {});
    if (typeof r === 'string') skippedMetrics.push({ metric: 'clip_score', reason: r });
    else clip = r;
  }
  for (const s of skippedMetrics) log(`skipping ${s.metric}: ${s.reason.split('\n')[0]}`);

  let reference: EvalInput | undefined;
  if (inception && (wants.has('fid') || wants.has('kid'))) reference = await referenceInput(cfg, outDir, inception, log);

  const results: CheckpointResult[] = [];
  for (const ckpt of checkpoints) {
    log(`${ckpt.label}: sampling ${n} images`);
    const loaded = loadNspForSampling(ckpt.file, { ema: cfg.ema });
    const scales = generate(loaded.pipeline, prompts, { seed: cfg.seed, lastStage: loaded.lastStage, batchSize: cfg.batch_size });
    const finest = scales[scales.length - 1]!;
    scales.slice(0, -1).forEach((s) => s.dispose());
    const rgb = loaded.decode ? loaded.decode(finest) : finest;
    const images = await tensorToRgb8(rgb, { range: 'signed' });
    if (rgb !== finest) rgb.dispose();
    finest.dispose();
    loaded.pipeline.dispose();
    loaded.vae?.dispose();

    const slug = ckpt.step !== undefined ? `step-${String(ckpt.step).padStart(6, '0')}` : 'final';
    const sampleDir = path.join(outDir, 'samples', slug);
    fs.mkdirSync(sampleDir, { recursive: true });
    const samples: CheckpointResult['samples'] = [];
    const fidelity = images.map((img, i) => scoreCaptionFidelity(img, prompts[i]!));
    for (let i = 0; i < images.length; i++) {
      const name = `${String(i).padStart(4, '0')}.png`;
      await savePng(path.join(sampleDir, name), images[i]!.rgb, images[i]!.width, images[i]!.height);
      fs.writeFileSync(path.join(sampleDir, `${String(i).padStart(4, '0')}.txt`), `${prompts[i]}\n`);
      samples.push({ image: path.posix.join('samples', slug, name), prompt: prompts[i]!, seed: cfg.seed + i, fidelity: fidelity[i]!.score });
    }
    const metrics: CheckpointResult['metrics'] = {};
    if (wants.has('caption_fidelity')) metrics.caption_fidelity = aggregateFidelity(fidelity).score;

    if (inception) {
      const set = await extractFolder(sampleDir, inception, { batchSize: cfg.batch_size, label: `inception ${ckpt.label}` });
      const gen = fromFeatureSet(set);
      if (reference && wants.has('fid')) {
        const r = computeFid(gen, reference);
        metrics.frechet_inception_distance = r.value;
        for (const w of r.warnings) if (!warnings.includes(w.replace(sampleDir, 'samples'))) warnings.push(w.replace(sampleDir, 'samples'));
      }
      if (reference && wants.has('kid')) {
        const size = Math.min(cfg.kid.subset_size, set.n, reference.features?.n ?? 0);
        if (size < 2) skipOnce(skippedMetrics, 'kid', 'fewer than 2 images per side');
        else {
          if (size < cfg.kid.subset_size) noteOnce(warnings, `KID subsets of ${size} (kid.subset_size ${cfg.kid.subset_size} is more than the ${set.n} samples per checkpoint)`);
          const k = computeKid(gen, reference, { subsets: cfg.kid.subsets, subsetSize: size, seed: 2020 });
          metrics.kernel_inception_distance_mean = k.mean;
          metrics.kernel_inception_distance_std = k.std;
        }
      }
      if (wants.has('is')) {
        const r = computeIs(gen, { splits: cfg.is.splits, seed: 2020 });
        metrics.inception_score_mean = r.mean;
        metrics.inception_score_std = r.std;
      }
    }
    if (clip?.encodeTexts) {
      const set = await extractFolder(sampleDir, clip, { batchSize: cfg.batch_size, label: `clip ${ckpt.label}` });
      const text = await clip.encodeTexts(prompts.slice(0, set.n));
      const s = clipScores(set.features, text, set.n, set.featureDim);
      metrics.clip_score = s.clip_score;
      metrics.clip_score_hessel = s.clip_score_hessel;
      s.perImage.forEach((v, i) => (samples[i]!.clip_score = v));
    }
    log(`${ckpt.label}: ${Object.entries(metrics).map(([k, v]) => `${k} ${Number(v).toFixed(4)}`).join(', ')}`);
    results.push({ label: ckpt.label, ...(ckpt.step !== undefined ? { step: ckpt.step } : {}), file: ckpt.file, metrics, samples });
  }
  inception?.dispose();
  clip?.dispose();

  const settings: Record<string, string | number | boolean> = {
    run: runDir,
    samples_per_checkpoint: n,
    seeds: `${cfg.seed}..${cfg.seed + n - 1} (sample i: noise seed ${cfg.seed} + i)`,
    prompt_seed: cfg.prompt_seed,
    ema: cfg.ema,
    backend,
    metrics: cfg.metrics.join(', '),
    reference: cfg.reference.source === 'procedural' ? `procedural, ${cfg.reference.count} images, seed ${cfg.reference.seed}` : cfg.reference.source,
    kid: `${cfg.kid.subsets} subsets of ${cfg.kid.subset_size}`,
    is_splits: cfg.is.splits,
  };
  for (const [k, v] of Object.entries(inception?.settings ?? {})) settings[`inception.${k}`] = v;
  for (const [k, v] of Object.entries(clip?.settings ?? {})) settings[`clip.${k}`] = v;

  const result: EvaluateRunResult = { outDir, checkpoints: results, skippedMetrics, warnings, settings };
  await writeFileAtomic(path.join(outDir, 'metrics.json'), `${JSON.stringify(metricsJson(result), null, 2)}\n`);
  await writeReport(path.join(outDir, 'report.html'), reportData(`Evaluation of ${path.basename(runDir)}`, result, opts.now ?? new Date()));
  log(`wrote ${path.join(outDir, 'metrics.json')} and ${path.join(outDir, 'report.html')}`);
  return result;
}

function skipOnce(list: { metric: string; reason: string }[], metric: string, reason: string): void {
  if (!list.some((s) => s.metric === metric)) list.push({ metric, reason });
}
function noteOnce(list: string[], w: string): void {
  if (!list.includes(w)) list.push(w);
}

async function referenceInput(cfg: EvaluateRecipe, outDir: string, inception: FeatureExtractor, log: (l: string) => void): Promise<EvalInput> {
  if (cfg.reference.source !== 'procedural') return loadEvalInput(cfg.reference.source, async () => inception, { batchSize: cfg.batch_size });
  const dir = path.join(outDir, 'reference');
  const ds = await ProceduralDataset.create({ size: 64, count: cfg.reference.count, seed: cfg.reference.seed });
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i < ds.length; i++) {
    const s = ds.get(i);
    const f = path.join(dir, `${String(i).padStart(5, '0')}.png`);
    if (!fs.existsSync(f)) await savePng(f, s.image, ds.width, ds.height);
  }
  log(`reference: ${ds.length} procedural images in ${dir}`);
  const set: FeatureSet = await extractFolder(dir, inception, { batchSize: cfg.batch_size, label: 'inception reference' });
  return fromFeatureSet(set);
}

/** metrics.json: torch-fidelity's key names per checkpoint, the settings, what was skipped and why. */
export function metricsJson(r: EvaluateRunResult): Record<string, unknown> {
  return {
    checkpoints: r.checkpoints.map((c) => ({ label: c.label, step: c.step ?? null, file: c.file, ...c.metrics })),
    settings: r.settings,
    skipped_metrics: r.skippedMetrics,
    warnings: r.warnings,
  };
}

export function reportData(title: string, r: EvaluateRunResult, now: Date): ReportData {
  const checkpoints: ReportCheckpoint[] = r.checkpoints.map((c) => ({
    label: c.label,
    ...(c.step !== undefined ? { step: c.step } : {}),
    metrics: { ...c.metrics },
    samples: c.samples.map((s) => ({ image: s.image, prompt: s.prompt, fidelity: s.fidelity, ...(s.clip_score !== undefined ? { clipScore: s.clip_score } : {}) })),
  }));
  return { title, createdAt: now.toISOString(), settings: r.settings, checkpoints, skippedMetrics: r.skippedMetrics, warnings: r.warnings, skippedImages: [] };
}
