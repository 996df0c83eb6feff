import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { readMetricsLog } from '../src/io/metrics_log.js';
import { pixelSource } from '../src/jobs/nsp/data.js';
import { buildPipeline, loadNspForSampling, NspArchitecture, NspJobState, nspJobStateSchema, NspPipeline, pipelineFromArchitecture } from '../src/jobs/nsp/model.js';
import { generate } from '../src/jobs/nsp/sampling.js';
import { nspRecipeSchema, NspRecipe } from '../src/jobs/nsp/schema.js';
import { stagePlan, trainNspProgressive, withOwnOutputs } from '../src/jobs/nsp/train.js';
import { Rng } from '../src/util/rng.js';
import type { RunDir } from '../src/train/run_dir.js';
import type { ResumePoint } from '../src/train/session.js';
import { latestResumePoint, newRun, testSession } from './helpers/train.js';

function tinyRecipe(over: Record<string, unknown> = {}): NspRecipe {
  return nspRecipeSchema.parse({
    seed: 3,
    data: { source: 'procedural', procedural: { count: 24, size: 16, seed: 1 }, batch_size: 4 },
    model: {
      sizes: [8, 16],
      channels: [8],
      blocks_per_stage: [1],
      dense_layers: 2,
      growth_channels: 4,
      attention: { max_size: 8, heads: 2, kv_heads: 1 },
      cond_dim: 16,
      group_norm_groups: 4,
    },
    text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } },
    train: { steps_per_scale: [3, 3], schedule: { warmup_steps: 1 }, ema: { decay: 0.9 }, input_noise: 0.1, generated_inputs: 0.5 },
    log: { every: 1, sample_every: 100, checkpoint_every: 2, histogram_every: 100 },
    sample: { prompts: ['a red circle in the top left on a blue background'], fidelity_samples: 4 },
    ...over,
  });
}

/** Trains `pipeline` on the tiny procedural set through a session, as the job does. */
async function train(r: NspRecipe, built: { pipeline: NspPipeline; arch: NspArchitecture }, run: RunDir, resume: ResumePoint<NspJobState> | null, stopAfter?: number) {
  const dataset = await ProceduralDataset.create({ size: 16, count: 24, seed: 1, cacheDir: null });
  const source = pixelSource(dataset);
  const plan = stagePlan(r, source.length);
  const session = testSession<NspJobState>({
    kind: 'nsp-progressive',
    run,
    seed: r.seed,
    log: r.log,
    totalSteps: plan.steps.reduce((a, b) => a + b, 0),
    model: built.pipeline,
    jobState: () => ({ architecture: built.arch }),
    resume,
    ...(stopAfter !== undefined ? { stopAfterStep: stopAfter } : {}),
  });
  try {
    return await trainNspProgressive({ recipe: r, pipeline: built.pipeline, architecture: built.arch, source, session });
  } finally {
    session.close();
  }
}

async function runOnce(r: NspRecipe, dir: string, stopAfter?: number, resume = false) {
  if (resume) {
    const { run, resume: point } = latestResumePoint(dir, 'nsp-progressive', nspJobStateSchema);
    const arch = point.job.architecture;
    const built = { pipeline: pipelineFromArchitecture(arch, r.seed), arch };
    return { result: await train(r, built, run, point, stopAfter), pipeline: built.pipeline, run };
  }
  const run = newRun(dir, 'nsp-progressive');
  const dataset = await ProceduralDataset.create({ size: 16, count: 24, seed: 1, cacheDir: null });
  const built = buildPipeline(r, 3, pixelSource(dataset).captions());
  return { result: await train(r, built, run, null, stopAfter), pipeline: built.pipeline, run };
}

function weights(p: { stateDict(): Map<string, tf.Tensor> }): Map<string, Float32Array> {
  return new Map([...p.stateDict()].map(([k, v]) => [k, v.dataSync() as Float32Array]));
}

describe('NSP progressive training', () => {
  it('plans stages and steps from steps_per_scale or epochs_per_scale', () => {
    const r = tinyRecipe();
    expect(stagePlan(r, 24)).toEqual({ stages: [0, 1], steps: [3, 3] });
    const e = tinyRecipe({ train: { epochs_per_scale: [1, 2], grad_accum: 2 } });
    // ceil(epochs · 24 / (4 · 2))
    expect(stagePlan(e, 24).steps).toEqual([3, 6]);
    const only1 = tinyRecipe({ train: { start_scale: 1, steps_per_scale: [5] } });
    expect(stagePlan(only1, 24)).toEqual({ stages: [1], steps: [5, 5] });
    expect(() => stagePlan(tinyRecipe({ train: { start_scale: 2 } }), 24)).toThrow(/start_scale/);
  });

  it('resumes mid-stage and reproduces the uninterrupted run exactly', async () => {
    const r = tinyRecipe();
    const a = fs.mkdtempSync(path.join(os.tmpdir(), 'nsp-a-'));
    const b = fs.mkdtempSync(path.join(os.tmpdir(), 'nsp-b-'));
    const full = await runOnce(r, a);
    expect(full.result.globalStep).toBe(6);
    const first = await runOnce(r, b, 4); // "crash" after step 4: inside stage 1
    expect(first.result.stoppedEarly).toBe(true);
    first.pipeline.dispose();
    const second = await runOnce(r, b, undefined, true);
    expect(second.result.globalStep).toBe(6);
    const wa = weights(full.pipeline);
    const wb = weights(second.pipeline);
    expect([...wb.keys()]).toEqual([...wa.keys()]);
    for (const [k, v] of wa) expect(Array.from(wb.get(k)!), k).toEqual(Array.from(v));
    // The metrics log of the resumed run continues without duplicated steps.
    const steps = readMetricsLog(second.run.metricsFile).map((m) => m.step);
    expect(steps.filter((s, i) => steps.indexOf(s) !== i && s <= 6)).toEqual([6]); // step 6 loss + fidelity record
    expect(fs.existsSync(path.join(second.run.dir, 'model.safetensors'))).toBe(true);
    full.pipeline.dispose();
    second.pipeline.dispose();
  });

  it('samples deterministically for a seed, independent of the other prompts in the batch', async () => {
    const r = tinyRecipe();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsp-s-'));
    const { pipeline, run } = await runOnce(r, dir);
    const p1 = 'a red circle in the top left on a blue background';
    const p2 = 'a small green square in the center on a white background';
    const a = generate(pipeline, [p1, p2], { seed: 7 });
    const b = generate(pipeline, [p1], { seed: 7 });
    const c = generate(pipeline, [p1], { seed: 8 });
    const last = (xs: tf.Tensor4D[]) => xs[xs.length - 1]!;
    expect(Array.from(last(b).dataSync())).toEqual(Array.from(last(a).slice([0, 0, 0, 0], [1, 16, 16, 3]).dataSync()));
    expect(tf.tidy(() => last(b).sub(last(c)).abs().max().dataSync()[0]!)).toBeGreaterThan(0);
    // The saved model reloads to the same samples.
    const loaded = loadNspForSampling(run.dir);
    const d = generate(loaded.pipeline, [p1], { seed: 7 });
    expect(Array.from(last(d).dataSync())).toEqual(Array.from(last(b).dataSync()));
    pipeline.dispose();
    loaded.pipeline.dispose();
  });

  it("replaces the first samples of a stage's input by the cascade's own output from fresh noise", async () => {
    const r = tinyRecipe();
    const dataset = await ProceduralDataset.create({ size: 16, count: 24, seed: 1, cacheDir: null });
    const { pipeline } = buildPipeline(r, 3, pixelSource(dataset).captions());
    const g = pipeline.generator;
    const captions = ['a red circle in the top left on a blue background', 'a small green square in the center on a white background'];
    const truth = tf.randomNormal([3, 8, 8, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
    const rng = new Rng(11);
    const mixed = withOwnOutputs(pipeline, truth, captions, 1, rng);
    // The same noise drawn by hand, then the base stage alone.
    const noise = tf.tensor4d(new Rng(11).fillNormal(new Float32Array(2 * 8 * 8 * 3), 0, g.config.baseNoiseStd), [2, 8, 8, 3]);
    const own = g.predict(0, noise, pipeline.textEncoder.encode(captions));
    expect(mixed.shape).toEqual([3, 8, 8, 3]);
    expect(Array.from(mixed.slice([0, 0, 0, 0], [2, -1, -1, -1]).dataSync())).toEqual(Array.from(own.dataSync()));
    expect(Array.from(mixed.slice([2, 0, 0, 0], [1, -1, -1, -1]).dataSync())).toEqual(Array.from(truth.slice([2, 0, 0, 0], [1, -1, -1, -1]).dataSync()));
    // The shared noise stream moved on by exactly what was drawn.
    const after = new Rng(11);
    after.fillNormal(new Float32Array(2 * 8 * 8 * 3));
    expect(rng.nextU32()).toBe(after.nextU32());
    tf.dispose([truth, mixed, noise, own]);
    pipeline.dispose();
  });

  it('keeps the tensor count flat across training steps', async () => {
    const r = tinyRecipe({ train: { steps_per_scale: [2, 6], ema: { decay: 0.9 } } });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsp-m-'));
    const counts: number[] = [];
    const dataset = await ProceduralDataset.create({ size: 16, count: 24, seed: 1, cacheDir: null });
    const run = newRun(dir, 'nsp-progressive');
    const built = buildPipeline(r, 3, pixelSource(dataset).captions());
    for (const stop of [4, 5, 6, 7]) {
      // Each call trains one step more from the previous checkpoint; count live tensors after each.
      const resume = stop === 4 ? null : latestResumePoint(dir, 'nsp-progressive', nspJobStateSchema).resume;
      await train(r, built, run, resume, stop);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts.slice(1)).size).toBe(1);
    built.pipeline.dispose();
  });
});
