import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../../backend/select.js';
import { aggregateFidelity, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { readImageRgb8, savePng } from '../../io/image.js';
import type { RgbImage } from '../../data/dataset.js';
import { CheckpointManager } from '../../train/checkpoint.js';
import { findLatestRun, runDirPaths, runStamp } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import '../../eval/evaluate_extractors.js';
import { createExtractor, extractFolder, type FeatureExtractor, type FeatureSet } from '../../eval/evaluate_features.js';
import { fromFeatureSet, loadEvalInput, type EvalInput } from '../../eval/evaluate_inputs.js';
import { computeClipScore, computeFid, computeIs, computeKid, type MetricValues } from '../../eval/evaluate_metrics.js';
import { writeReport, type ReportCheckpoint, type ReportData } from '../../eval/report.js';
import '../index.js';
import { detectModelKind, getJob } from '../registry.js';
import { fidelityPrompts } from '../nsp/sampling.js';
import type { EvaluateRecipe } from './schema.js';

/**
 * Evaluates every checkpoint of a run, as one story: find the run and its checkpoints; draw fixed
 * prompts and seeds; per checkpoint sample N images (saved with their prompts as sidecar captions),
 * score caption fidelity, and — where the networks' weights are present — FID/KID/IS against the
 * reference set and CLIP-score against the prompts; write metrics.json and report.html. A metric
 * whose weights are missing is skipped with the reason, and the report is still written.
 */

/** The smallest side caption fidelity reads (data/caption_fidelity.ts). */
const MIN_FIDELITY_SIDE = 16;

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
  const prompts = distinctPrompts(n, cfg.prompt_seed);
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
    const slug = ckpt.step !== undefined ? `step-${String(ckpt.step).padStart(6, '0')}` : 'final';
    const sampleDir = path.join(outDir, 'samples', slug);
    const images = await sampleThroughJob(ckpt.file, prompts, sampleDir, cfg);
    const samples: CheckpointResult['samples'] = [];
    const side = images[0]!.width;
    const fidelity = images.map((img, i) => scoreCaptionFidelity(enlargeForFidelity(img), prompts[i]!));
    images.forEach((_, i) => {
      samples.push({ image: path.posix.join('samples', slug, `${String(i).padStart(4, '0')}.png`), prompt: prompts[i]!, seed: cfg.seed, fidelity: fidelity[i]!.score });
    });
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
    if (clip) {
      const set = await extractFolder(sampleDir, clip, { batchSize: cfg.batch_size, label: `clip ${ckpt.label}` });
      const s = await computeClipScore(clip, set.features, prompts.slice(0, set.n));
      metrics.clip_score = s.clip_score;
      metrics.clip_score_hessel = s.clip_score_hessel;
      s.perImage.forEach((v, i) => (samples[i]!.clip_score = v));
    }
    if (side < MIN_FIDELITY_SIDE) noteOnce(warnings, `${ckpt.label} samples at ${side}×${side} px (its stage in progress); enlarged to ${MIN_FIDELITY_SIDE} px (nearest) for scoring`);
    results.push({ label: ckpt.label, ...(ckpt.step !== undefined ? { step: ckpt.step } : {}), file: ckpt.file, metrics, samples });
  }
  inception?.dispose();
  clip?.dispose();

  const settings: Record<string, string | number | boolean> = {
    run: runDir,
    samples_per_checkpoint: n,
    seeds: `noise seed ${cfg.seed} for every prompt (distinct prompts drawn from prompt_seed), the same at every checkpoint`,
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

/** `count` different prompts of the procedural grammar: equal prompts would share a sample file name. */
export function distinctPrompts(count: number, seed: number): string[] {
  const seen = new Set<string>();
  for (let pool = count * 2; seen.size < count; pool *= 2) {
    for (const p of fidelityPrompts(pool, seed)) if (seen.size < count) seen.add(p);
    if (pool > count * 64) throw new UsageError(`the procedural grammar has fewer than ${count} distinct prompts; lower samples_per_checkpoint`);
  }
  return [...seen];
}

/**
 * Samples through the job interface (`sample` of the checkpoint's kind), then renames the files to
 * 0000.png… with the prompt beside each as 0000.txt (so `evaluate clip-score` reads them as captions).
 */
async function sampleThroughJob(file: string, prompts: string[], dir: string, cfg: EvaluateRecipe): Promise<RgbImage[]> {
  const kind = detectModelKind(file);
  const job = getJob(kind);
  if (!job) throw new UsageError(`${file}: no job of kind '${kind}' in this build to sample it`);
  const raw = path.join(dir, '.raw');
  fs.rmSync(raw, { recursive: true, force: true });
  const files = await job.sample(file, { prompts, n: 1, seed: cfg.seed, out: raw, saveIntermediates: false, ema: cfg.ema, log: () => undefined });
  if (files.length !== prompts.length) throw new UsageError(`${file}: the '${kind}' job wrote ${files.length} samples for ${prompts.length} prompts`);
  const images: RgbImage[] = [];
  for (let i = 0; i < files.length; i++) {
    const stem = path.join(dir, String(i).padStart(4, '0'));
    fs.renameSync(files[i]!, `${stem}.png`);
    fs.writeFileSync(`${stem}.txt`, `${prompts[i]}\n`);
    images.push(await readImageRgb8(`${stem}.png`));
  }
  fs.rmSync(raw, { recursive: true, force: true });
  return images;
}

/** Caption fidelity reads images of at least 16 px; early-stage checkpoints sample smaller (nearest enlargement). */
function enlargeForFidelity(img: RgbImage): RgbImage {
  if (img.width >= MIN_FIDELITY_SIDE && img.height >= MIN_FIDELITY_SIDE) return img;
  const f = Math.ceil(MIN_FIDELITY_SIDE / Math.min(img.width, img.height));
  const w = img.width * f;
  const h = img.height * f;
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (Math.floor(y / f) * img.width + Math.floor(x / f)) * 3;
      rgb.set(img.rgb.subarray(s, s + 3), (y * w + x) * 3);
    }
  }
  return { rgb, width: w, height: h };
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
