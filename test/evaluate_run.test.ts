import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProceduralDataset } from '../src/data/procedural.js';
import { registerExtractor } from '../src/eval/evaluate_features.js';
import { pixelSource } from '../src/jobs/nsp/data.js';
import { buildPipeline, type NspJobState } from '../src/jobs/nsp/model.js';
import { nspRecipeSchema } from '../src/jobs/nsp/schema.js';
import { stagePlan, trainNspProgressive } from '../src/jobs/nsp/train.js';
import { evaluateRecipeSchema, evaluateRun } from '../src/jobs/evaluate/index.js';
import { pixelStatsSpec } from './helpers/eval_fixtures.js';
import { newRun, testSession } from './helpers/train.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-evalrun-'));
const runDir = path.join(tmp, 'tiny-run');

beforeAll(async () => {
  const r = nspRecipeSchema.parse({
    seed: 3,
    data: { source: 'procedural', procedural: { count: 24, size: 16, seed: 1 }, batch_size: 4 },
    model: { sizes: [8, 16], channels: [8], blocks_per_stage: [1], dense_layers: 2, growth_channels: 4, attention: { max_size: 8, heads: 2, kv_heads: 1 }, cond_dim: 16, group_norm_groups: 4 },
    text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } },
    train: { steps_per_scale: [2, 2], schedule: { warmup_steps: 1 } },
    log: { every: 1, sample_every: 100, checkpoint_every: 2, histogram_every: 100 },
    sample: { prompts: ['a red circle in the top left on a blue background'], fidelity_samples: 2 },
  });
  const dataset = await ProceduralDataset.create({ size: 16, count: 24, seed: 1, cacheDir: null });
  const source = pixelSource(dataset);
  const run = newRun(runDir, 'nsp-progressive');
  const built = buildPipeline(r, 3, source.captions());
  const plan = stagePlan(r, source.length);
  const session = testSession<NspJobState>({
    kind: 'nsp-progressive',
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: plan.steps.reduce((a, b) => a + b, 0),
    model: built.pipeline,
    jobState: () => ({ architecture: built.arch }),
  });
  try {
    await trainNspProgressive({ recipe: r, pipeline: built.pipeline, architecture: built.arch, source, session });
  } finally {
    session.close();
  }
  built.pipeline.dispose();
}, 240_000);

describe('evaluate --run', () => {
  it('without weights: caption fidelity per checkpoint, FID/KID/IS/CLIP-score skipped with the reason, report and metrics.json written', async () => {
    process.env.SCALEFORGE_CACHE = path.join(tmp, 'empty-cache');
    const cfg = evaluateRecipeSchema.parse({ run: runDir, samples_per_checkpoint: 10, batch_size: 8, backend: 'cpu' });
    const logs: string[] = [];
    const r = await evaluateRun(cfg, { log: (l) => logs.push(l), out: path.join(tmp, 'eval1') });
    expect(r.checkpoints.map((c) => c.label).slice(0, 2)).toEqual(['step 2', 'step 4']);
    for (const c of r.checkpoints) {
      expect(c.metrics.caption_fidelity).toBeGreaterThanOrEqual(0);
      expect(c.metrics.caption_fidelity).toBeLessThanOrEqual(1);
      expect(c.samples).toHaveLength(10);
      expect(c.metrics.frechet_inception_distance).toBeUndefined();
    }
    expect(r.skippedMetrics.map((s) => s.metric)).toEqual(['fid', 'kid', 'is', 'clip_score']);
    expect(r.skippedMetrics[0]!.reason).toMatch(/weights are not in .*Get them with: scaleforge weights fetch inception-fid/s);
    const m = JSON.parse(fs.readFileSync(path.join(tmp, 'eval1', 'metrics.json'), 'utf8')) as { checkpoints: { caption_fidelity: number }[]; skipped_metrics: unknown[] };
    expect(m.checkpoints).toHaveLength(r.checkpoints.length);
    expect(m.skipped_metrics).toHaveLength(4);
    const html = fs.readFileSync(path.join(tmp, 'eval1', 'report.html'), 'utf8');
    expect(html).toContain('Skipped metrics');
    expect(fs.existsSync(path.join(tmp, 'eval1', 'samples', 'step-000002', '0000.png'))).toBe(true);
    // Fixed prompts and seeds: the same checkpoint sampled twice gives the same images.
    const again = await evaluateRun({ ...cfg, checkpoints: 'last', metrics: ['caption_fidelity'] }, { log: () => {}, out: path.join(tmp, 'eval2') });
    const last = r.checkpoints[r.checkpoints.length - 1]!;
    expect(again.checkpoints[0]!.metrics.caption_fidelity).toBe(last.metrics.caption_fidelity);
    expect(fs.readFileSync(path.join(tmp, 'eval2', last.samples[3]!.image))).toEqual(fs.readFileSync(path.join(tmp, 'eval1', last.samples[3]!.image)));
    expect(fs.readFileSync(path.join(tmp, 'eval1', last.samples[3]!.image.replace(/\.png$/, '.txt')), 'utf8').trim()).toBe(last.samples[3]!.prompt);
    expect(new Set(last.samples.map((s) => s.prompt)).size).toBe(10);
  }, 240_000);

  it('with a feature network configured: FID, KID (subset capped at N, with a warning), IS per checkpoint', async () => {
    const weights = path.join(tmp, 'stand-in.safetensors');
    fs.writeFileSync(weights, 'stand-in network weights');
    registerExtractor('inception-fid', pixelStatsSpec('inception-fid', { images: 0 }));
    const cfg = evaluateRecipeSchema.parse({
      run: runDir,
      checkpoints: 'all',
      samples_per_checkpoint: 10,
      metrics: ['caption_fidelity', 'fid', 'kid', 'is'],
      reference: { count: 16 },
      inception: { weights },
      kid: { subsets: 5 },
      is: { splits: 2 },
      batch_size: 8,
      backend: 'cpu',
    });
    const r = await evaluateRun(cfg, { log: () => {}, out: path.join(tmp, 'eval3') });
    expect(r.skippedMetrics).toEqual([]);
    for (const c of r.checkpoints) {
      expect(c.metrics.frechet_inception_distance).toBeGreaterThan(0);
      expect(Number.isFinite(c.metrics.kernel_inception_distance_mean)).toBe(true);
      expect(c.metrics.inception_score_mean).toBeGreaterThanOrEqual(1);
    }
    expect(r.warnings.join('\n')).toMatch(/KID subsets of 10/);
    expect(r.settings['inception.weights_sha256']).toMatch(/^[0-9a-f]{64}$/);
    expect(r.settings.reference).toBe('procedural, 16 images, seed 1');
  }, 240_000);
});
