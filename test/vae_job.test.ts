import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadRecipe } from '../src/config/recipe.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { readImageRgb8 } from '../src/io/image.js';
import { readMetricsLog } from '../src/io/metrics_log.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import '../src/jobs/index.js';
import { runVaeJob, type VaeJobResult } from '../src/jobs/vae/index.js';
import { psnr } from '../src/jobs/vae/psnr.js';
import { vaeRecipeSchema } from '../src/jobs/vae/schema.js';
import { vaeConfigFromRecipe } from '../src/jobs/vae/model.js';
import { loadVae } from '../src/models/vae/index.js';
import { CheckpointManager } from '../src/train/checkpoint.js';

const quiet = { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream;

// 16px procedural images, trained on random 8px crops with posterior sampling, flips and EMA, so
// every random stream and every piece of state has to survive a resume.
const TINY_VAE_YAML = `kind: vae
seed: 5
backend: cpu
model: { preset: tiny, block_out_channels: [8, 16], norm_num_groups: 4, scaling_factor: auto }
data: { source: procedural, procedural: { count: 8, size: 16, seed: 2 }, crop: 8, flip: true, batch_size: 2 }
train:
  steps: 4
  optimizer: { lr: 0.003 }
  schedule: { warmup_steps: 1 }
  ema: { enabled: true, decay: 0.5 }
  loss: { l1: 1, mse: 0.5, kl: 0.001 }
log: { every: 1, sample_every: 2, checkpoint_every: 2, keep_last: 5 }
eval: { count: 3, grid: 2 }
`;

let tmp: string;
let recipeFile: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-job-'));
  recipeFile = path.join(tmp, 'vae-t.yaml');
  fs.writeFileSync(recipeFile, TINY_VAE_YAML);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function ctx(extra: { out?: string; resume?: string }) {
  const lines: string[] = [];
  return {
    lines,
    ctx: { loaded: loadRecipe(recipeFile), recipeArg: recipeFile, runsRoot: path.join(tmp, 'runs'), log: (l: string) => lines.push(l), ...extra },
  };
}

describe('psnr', () => {
  it('is 10·log10(peak²/MSE), worked by hand', () => {
    // MSE = (0.1² + 0 + 0.2²) / 3 = 0.05 / 3 → 10·log10(60) = 17.7815 dB
    expect(psnr([0, 0.5, 1], [0.1, 0.5, 0.8])).toBeCloseTo(10 * Math.log10(60), 10);
    // peak 255, one value off by 255 in four → MSE = 255²/4 → 10·log10(4)
    expect(psnr([0, 0, 0, 0], [255, 0, 0, 0], 255)).toBeCloseTo(6.0206, 4);
    expect(psnr([1, 2], [1, 2])).toBe(Infinity);
    expect(() => psnr([1], [1, 2])).toThrow(/1 and 2 values/);
  });
});

describe('vae recipe → config', () => {
  it('starts from the preset and applies explicit keys', () => {
    const r = vaeRecipeSchema.parse({ model: { preset: 'tiny', block_out_channels: [8, 16, 32], latent_channels: 2, scaling_factor: 0.5 }, data: { procedural: { size: 32 } } });
    const c = vaeConfigFromRecipe(r);
    expect(c.blockOutChannels).toEqual([8, 16, 32]);
    expect(c.latentChannels).toBe(2);
    expect(c.scalingFactor).toBe(0.5);
    expect(c.sampleSize).toBe(32);
    expect(c.layersPerBlock).toBe(1); // from the tiny preset
    expect(c.midBlockAddAttention).toBe(true);
  });
});

describe('vae job', () => {
  let full: VaeJobResult;
  let fullLines: string[];
  beforeAll(async () => {
    const { ctx: c, lines } = ctx({ out: path.join(tmp, 'full') });
    full = await runVaeJob(c, { progressStream: quiet as never });
    fullLines = lines;
  }, 60_000);

  it('writes checkpoints, metrics, reconstruction grids and a diffusers vae/ folder', async () => {
    expect(full.stoppedEarly).toBe(false);
    expect(full.step).toBe(4);
    const run = full.run;
    expect(new CheckpointManager(run.checkpoints).list().map((c) => c.step)).toEqual([2, 4]);
    const grids = fs.readdirSync(run.samples).sort();
    expect(grids).toEqual(['step-000002-reconstructions.png', 'step-000004-reconstructions.png']);
    // Two rows (originals, reconstructions) of two 16px images at scale 4 with 2px padding.
    const grid = await readImageRgb8(path.join(run.samples, grids[1]!));
    expect([grid.width, grid.height]).toEqual([2 + 2 * (64 + 2), 2 + 2 * (64 + 2)]);
    const metrics = readMetricsLog(run.metricsFile);
    expect(metrics.filter((m) => typeof m.loss === 'number').map((m) => m.step)).toEqual([1, 2, 3, 4]);
    for (const m of metrics.filter((m) => typeof m.loss === 'number')) {
      // loss = l1 + 0.5·mse + 0.001·kl, each logged separately.
      expect(m.loss as number).toBeCloseTo((m.l1 as number) + 0.5 * (m.mse as number) + 0.001 * (m.kl as number), 5);
    }
    expect(fs.readdirSync(run.tb).some((f) => f.startsWith('events.out.tfevents'))).toBe(true);
    expect(fullLines.some((l) => /reconstruction PSNR: \d+\.\d\d dB/.test(l))).toBe(true);
  });

  it('saves a VAE that loads like a user-supplied one, with PSNR and scaling factor matching an independent computation', async () => {
    const vae = loadVae(full.vaeDir!);
    try {
      expect(vae.config.blockOutChannels).toEqual([8, 16]);
      const held = await ProceduralDataset.create({ size: 16, count: 3, seed: (2 + 1_000_003) >>> 0, cacheDir: null });
      const x = tf.tensor4d(
        Float32Array.from(Array.from({ length: 3 }, (_, i) => [...held.get(i).image]).flat(), (v) => v / 127.5 - 1),
        [3, 16, 16, 3],
      );
      const post = vae.model.encode(x);
      const mean = post.mean.dataSync() as Float32Array;
      const rec = vae.model.decode(post.mean).clipByValue(-1, 1).dataSync();
      post.dispose();
      const orig = x.dataSync();
      x.dispose();
      let se = 0;
      for (let i = 0; i < orig.length; i++) se += ((orig[i]! - rec[i]!) / 2) ** 2;
      const expectedPsnr = 10 * Math.log10(1 / (se / orig.length));
      expect(full.psnr!).toBeCloseTo(expectedPsnr, 3);
      const mu = mean.reduce((a, b) => a + b, 0) / mean.length;
      const sd = Math.sqrt(mean.reduce((a, b) => a + (b - mu) ** 2, 0) / mean.length);
      expect(vae.config.scalingFactor).toBeCloseTo(1 / sd, 3);
    } finally {
      vae.model.dispose();
    }
  });

  it('resumes exactly: stop after 2 steps, resume, end with the uninterrupted weights', async () => {
    const part = ctx({ out: path.join(tmp, 'part') });
    const stopped = await runVaeJob(part.ctx, { progressStream: quiet as never, stopAfterStep: 2 });
    expect(stopped.stoppedEarly).toBe(true);
    expect(stopped.vaeDir).toBeNull();
    const rest = ctx({ resume: path.join(tmp, 'part') });
    const resumed = await runVaeJob(rest.ctx, { progressStream: quiet as never });
    expect(rest.lines.some((l) => l.includes('resuming from') && l.includes('step 2/4'))).toBe(true);
    expect(resumed.step).toBe(4);
    const a = loadSafetensors(path.join(full.vaeDir!, 'diffusion_pytorch_model.safetensors'));
    const b = loadSafetensors(path.join(resumed.vaeDir!, 'diffusion_pytorch_model.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [name, t] of a) {
      const u = b.get(name)!;
      const same = t.data.length === u.data.length && t.data.every((v, i) => v === u.data[i]);
      if (!same) throw new Error(`${name} differs after resume`);
    }
    expect(resumed.psnr).toBe(full.psnr);
    const metrics = readMetricsLog(resumed.run.metricsFile).filter((m) => typeof m.loss === 'number');
    const fullMetrics = readMetricsLog(full.run.metricsFile).filter((m) => typeof m.loss === 'number');
    expect(metrics.map((m) => m.loss)).toEqual(fullMetrics.map((m) => m.loss));
  }, 60_000);

  it('refuses crops that do not fit the images when the recipe loads, with file:line', () => {
    const bad = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(bad, TINY_VAE_YAML.replace('crop: 8', 'crop: 7'));
    // data: is on line 5 of the recipe.
    expect(() => loadRecipe(bad)).toThrow(/bad\.yaml:5:\d+: data\.crop: crops of 7px must be multiples of the VAE's downsampling factor 2/);
    fs.writeFileSync(bad, TINY_VAE_YAML.replace('crop: 8', 'crop: 32'));
    expect(() => loadRecipe(bad)).toThrow(/data\.crop: 32 is larger than the 16×16 images/);
  });
});
