import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { readMetricsLog } from '../src/io/metrics_log.js';
import { pixelSource } from '../src/jobs/nsp/data.js';
import { buildDitPipeline, type DitJobState, ditJobStateSchema, type DitPipeline, loadDitModel, pipelineFromArchitecture } from '../src/jobs/dit/model.js';
import { generateDit, sampleDit } from '../src/jobs/dit/sampling.js';
import { type DitRecipe, ditRecipeSchema } from '../src/jobs/dit/schema.js';
import { trainDit } from '../src/jobs/dit/train.js';
import { createTextEncoder } from '../src/models/text/registry.js';
import type { RunDir } from '../src/train/run_dir.js';
import type { ResumePoint } from '../src/train/session.js';
import { UsageError } from '../src/util/errors.js';
import { latestResumePoint, newRun, testSession } from './helpers/train.js';

const PROMPT = 'a red circle in the top left on a blue background';

function tinyRecipe(over: Record<string, unknown> = {}): DitRecipe {
  return ditRecipeSchema.parse({
    seed: 5,
    data: { source: 'procedural', procedural: { count: 16, size: 16, seed: 1 }, batch_size: 4 },
    model: { patch_size: 4, hidden_size: 16, depth: 1, num_heads: 2 },
    text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } },
    train: { steps: 4, schedule: { warmup_steps: 1 }, ema: { decay: 0.9 } },
    log: { every: 1, sample_every: 100, checkpoint_every: 2 },
    sample: { prompts: [PROMPT], steps: 2, fidelity_samples: 2 },
    ...over,
  });
}

async function source() {
  return pixelSource(await ProceduralDataset.create({ size: 16, count: 16, seed: 1, cacheDir: null }));
}

async function train(r: DitRecipe, pipeline: DitPipeline, run: RunDir, resume: ResumePoint<DitJobState> | null, stopAfter?: number) {
  const session = testSession<DitJobState>({
    kind: 'dit',
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: r.train.steps,
    model: pipeline,
    jobState: () => ({ architecture: pipeline.architecture }),
    resume,
    ...(stopAfter !== undefined ? { stopAfterStep: stopAfter } : {}),
  });
  try {
    return await trainDit({ recipe: r, pipeline, source: await source(), labels: null, session });
  } finally {
    session.close();
  }
}

async function runOnce(r: DitRecipe, dir: string, stopAfter?: number, resume = false) {
  if (resume) {
    const { run, resume: point } = latestResumePoint(dir, 'dit', ditJobStateSchema);
    const pipeline = pipelineFromArchitecture(point.job.architecture, r.seed);
    return { result: await train(r, pipeline, run, point, stopAfter), pipeline, run };
  }
  const run = newRun(dir, 'dit');
  const src = await source();
  const pipeline = buildDitPipeline(r, src.size, src.channels, src.captions());
  return { result: await train(r, pipeline, run, null, stopAfter), pipeline, run };
}

function weights(p: { stateDict(): Map<string, tf.Tensor> }): Map<string, Float32Array> {
  return new Map([...p.stateDict()].map(([k, v]) => [k, v.dataSync() as Float32Array]));
}

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dit-${name}-`));

describe('DiT job', () => {
  for (const objective of ['flow', 'ddpm'] as const) {
    it(`${objective}: resumes mid-run and reproduces the uninterrupted run exactly`, async () => {
      const r = tinyRecipe({ objective: { type: objective, min_snr_gamma: objective === 'ddpm' ? 5 : undefined }, model: { patch_size: 4, hidden_size: 16, depth: 1, num_heads: 2, learn_sigma: objective === 'ddpm' } });
      const a = tmp('a');
      const b = tmp('b');
      const full = await runOnce(r, a);
      expect(full.result.stoppedEarly).toBe(false);
      const first = await runOnce(r, b, 3);
      expect(first.result.stoppedEarly).toBe(true);
      first.pipeline.dispose();
      const second = await runOnce(r, b, undefined, true);
      const wa = weights(full.pipeline);
      const wb = weights(second.pipeline);
      expect([...wb.keys()]).toEqual([...wa.keys()]);
      for (const [k, v] of wa) expect(Array.from(wb.get(k)!), k).toEqual(Array.from(v));
      const log = readMetricsLog(second.run.metricsFile);
      expect(log.some((m) => 'fidelity' in m)).toBe(true);
      if (objective === 'ddpm') expect(log.some((m) => 'vb' in m && 'mse' in m)).toBe(true);
      full.pipeline.dispose();
      second.pipeline.dispose();
    });
  }

  it('samples deterministically for a seed through scaleforge sample, and rejects what the model cannot take (exit 2)', async () => {
    const dir = tmp('s');
    const { pipeline, run } = await runOnce(tinyRecipe(), dir);
    pipeline.dispose();
    const req = (out: string, seed = 3) => ({ prompts: [PROMPT], n: 2, seed, out, saveIntermediates: false, ema: true, log: () => {} });
    const f1 = await sampleDit(run.dir, req(path.join(dir, 's1')));
    const f2 = await sampleDit(run.dir, req(path.join(dir, 's2')));
    expect(f1.length).toBe(2);
    f1.forEach((f, i) => expect(fs.readFileSync(f).equals(fs.readFileSync(f2[i]!))).toBe(true));
    // Sample j uses seed + j: seed 4's first image is seed 3's second.
    const f3 = await sampleDit(run.dir, req(path.join(dir, 's3'), 4));
    expect(fs.readFileSync(f3[0]!).equals(fs.readFileSync(f1[1]!))).toBe(true);
    // Every sampler and guidance 1 run; DDIM/DDPM need an ε model.
    await expect(sampleDit(run.dir, { ...req(path.join(dir, 's4')), sampler: 'ddim' })).rejects.toThrow(/needs a model that predicts eps; this flow model predicts velocity/);
    await expect(sampleDit(run.dir, { ...req(path.join(dir, 's5')), prompts: [], classes: [1] })).rejects.toThrow(UsageError);
    await expect(sampleDit(run.dir, { ...req(path.join(dir, 's6')), steps: 0 })).rejects.toThrow(/--steps/);

    // Guidance 1 is the conditional model alone: identical to sampling with the batched guidance machinery at s = 1.
    const loaded = loadDitModel(run.dir);
    const plain = generateDit(loaded.pipeline, { prompts: [PROMPT] }, { sampler: 'euler', steps: 2, cfg: 1, eta: 0, seed: 0 });
    const guided = generateDit(loaded.pipeline, { prompts: [PROMPT] }, { sampler: 'euler', steps: 2, cfg: 1.0000001, eta: 0, seed: 0 });
    expect(guided.sub(plain).abs().max().dataSync()[0]).toBeLessThan(1e-4);
    loaded.dispose();
  });

  it('leaves no tensors behind: training, sampling and the fidelity check free what they allocate', async () => {
    const r = (steps: number) => tinyRecipe({ train: { steps, schedule: { warmup_steps: 1 } } });
    // A first run warms one-off caches (kernel constants); a second, longer one must add nothing.
    (await runOnce(r(2), tmp('m1'))).pipeline.dispose();
    const before = tf.memory().numTensors;
    (await runOnce(r(4), tmp('m2'))).pipeline.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a CLIP text encoder that is absent, and recipe mistakes, are usage errors', () => {
    expect(() => createTextEncoder({ kind: 'clip', path: '/nonexistent/clip-folder' })).toThrow(UsageError);
    expect(() => tinyRecipe({ text_encoder: { type: 'clip' } })).toThrow(/clip_path/);
    expect(() => tinyRecipe({ objective: { type: 'flow' }, model: { learn_sigma: true } })).toThrow(/learn_sigma needs objective.type: ddpm/);
    expect(() => tinyRecipe({ conditioning: { type: 'class' } })).toThrow(/procedural dataset has captions/);
    expect(() => tinyRecipe({ sample: { sampler: 'heun' } })).toThrow(/unknown sampler 'heun'/);
  });
});
