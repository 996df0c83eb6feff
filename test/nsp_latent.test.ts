import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { main } from '../src/cli/main.js';
import { sampleCommand } from '../src/cli/commands/sample.js';
import { loadRecipe } from '../src/config/recipe.js';
import { BatchSampler } from '../src/data/batch.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { readImageRgb8 } from '../src/io/image.js';
import { readSafetensorsHeader, saveModule } from '../src/io/safetensors.js';
import '../src/jobs/index.js';
import { findFinishedVaeRun, latentSourceFor } from '../src/jobs/nsp/latent.js';
import { buildPipeline, loadNspForSampling } from '../src/jobs/nsp/model.js';
import { nspJob } from '../src/jobs/nsp/index.js';
import { generate } from '../src/jobs/nsp/sampling.js';
import { nspRecipeSchema, NspRecipe } from '../src/jobs/nsp/schema.js';
import { AutoencoderKL, saveVae, vaeConfig } from '../src/models/vae/index.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

// A [8, 16] VAE (×2 downsampling, 4 latent channels) on 16px images: 8×8×4 latents.
const VAE_CONFIG = { ...vaeConfig('tiny'), blockOutChannels: [8, 16], normNumGroups: 4, scalingFactor: 0.5, sampleSize: 16 };

const TINY_MODEL = {
  sizes: [4, 8],
  channels: [8],
  blocks_per_stage: [1],
  dense_layers: 2,
  growth_channels: 4,
  attention: { max_size: 4, heads: 2, kv_heads: 1 },
  cond_dim: 16,
  group_norm_groups: 4,
};

function tinyRecipe(over: Record<string, unknown> = {}): NspRecipe {
  return nspRecipeSchema.parse({
    seed: 1,
    backend: 'cpu',
    space: 'latent',
    data: { source: 'procedural', procedural: { count: 6, size: 16, seed: 4 }, batch_size: 3 },
    model: TINY_MODEL,
    text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } },
    ...over,
  });
}

let tmp: string;
let vaeDir: string;
const stderr = vi.spyOn(process.stderr, 'write');
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nsp-latent-'));
  vaeDir = path.join(tmp, 'my-vae');
  const vae = new AutoencoderKL(VAE_CONFIG, { rng: new Rng(9) });
  await saveVae(vaeDir, vae);
  vae.dispose();
});
afterAll(() => {
  stderr.mockRestore();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function context(runsRoot: string) {
  const lines: string[] = [];
  return { lines, ctx: { loaded: undefined as never, recipeArg: 'latent-test', runsRoot, backend: 'cpu', log: (l: string) => lines.push(l) } };
}

describe('latent source', () => {
  it('encodes every image once (posterior mean × scaling factor), caches it and reuses the cache', async () => {
    const runsRoot = path.join(tmp, 'cache-runs');
    const dataset = await ProceduralDataset.create({ size: 16, count: 6, seed: 4, cacheDir: null });
    const r = tinyRecipe({ vae: { path: vaeDir } });
    const first = context(runsRoot);
    const src = await latentSourceFor(r, dataset, first.ctx);
    expect([src.channels, src.size, src.length]).toEqual([4, 8, 6]);
    expect(src.vaePath).toBe(path.resolve(vaeDir));
    expect(first.lines.some((l) => l.startsWith('latents: encoding 6 images'))).toBe(true);
    const cacheFiles = fs.readdirSync(path.join(runsRoot, '.latent-cache'));
    expect(cacheFiles).toHaveLength(1);
    const cacheFile = path.join(runsRoot, '.latent-cache', cacheFiles[0]!);
    const mtime = fs.statSync(cacheFile).mtimeMs;

    // Independently: the VAE's posterior mean of image 2, times the scaling factor 0.5.
    const x = tf.tensor4d(Float32Array.from(dataset.get(2).image, (v) => v / 127.5 - 1), [1, 16, 16, 3]);
    const post = src.vae.model.encode(x);
    const expected = post.mean.mul(0.5).dataSync();
    post.dispose();
    x.dispose();
    const sampler = new BatchSampler(dataset, { shuffle: false });
    const batch = src.nextBatch(sampler, 3);
    expect(batch.x.shape).toEqual([3, 8, 8, 4]);
    expect(batch.captions).toEqual([0, 1, 2].map((i) => dataset.get(i).caption));
    const got = batch.x.slice([2, 0, 0, 0], [1, 8, 8, 4]).dataSync();
    batch.x.dispose();
    let maxDiff = 0;
    for (let i = 0; i < got.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i]! - expected[i]!));
    expect(maxDiff).toBeLessThan(1e-5);

    // The decoder maps latents back to RGB at image size.
    const z = tf.zeros([2, 8, 8, 4]) as tf.Tensor4D;
    const rgb = src.decode!(z);
    expect(rgb.shape).toEqual([2, 16, 16, 3]);
    tf.dispose([z, rgb]);
    src.vae.model.dispose();

    const second = context(runsRoot);
    const again = await latentSourceFor(r, dataset, second.ctx);
    expect(second.lines.some((l) => l.includes('from the cache'))).toBe(true);
    expect(second.lines.some((l) => l.startsWith('latents: encoding'))).toBe(false);
    expect(fs.statSync(cacheFile).mtimeMs).toBe(mtime);
    const b2 = again.nextBatch(new BatchSampler(dataset, { shuffle: false }), 3);
    expect([...b2.x.slice([2, 0, 0, 0], [1, 8, 8, 4]).dataSync()]).toEqual([...got]);
    b2.x.dispose();
    again.vae.model.dispose();

    // Other pixels are another cache entry.
    const other = await ProceduralDataset.create({ size: 16, count: 6, seed: 5, cacheDir: null });
    const third = await latentSourceFor(r, other, context(runsRoot).ctx);
    third.vae.model.dispose();
    expect(fs.readdirSync(path.join(runsRoot, '.latent-cache'))).toHaveLength(2);
  });

  it("refuses a model whose finest size is not the latent size, naming model.sizes and the latent size", async () => {
    const dataset = await ProceduralDataset.create({ size: 16, count: 2, seed: 4, cacheDir: null });
    const r = tinyRecipe({ vae: { path: vaeDir }, model: { ...TINY_MODEL, sizes: [8, 16] } });
    const err = await latentSourceFor(r, dataset, context(path.join(tmp, 'r2')).ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/model\.sizes \[8, 16\] must end at the latent size: 16px images encode to 8×8×4 latents/);
    expect((err as Error).message).toMatch(/data\.procedural\.size to 32/);
  });

  it('needs vae.path or vae.recipe', async () => {
    const dataset = await ProceduralDataset.create({ size: 16, count: 2, seed: 4, cacheDir: null });
    await expect(latentSourceFor(tinyRecipe(), dataset, context(path.join(tmp, 'r3')).ctx)).rejects.toThrow(/set vae\.path .* or vae\.recipe/);
  });

  it('finds the newest finished run of a vae recipe, ignoring unfinished ones', async () => {
    const root = path.join(tmp, 'find');
    const make = (name: string, finished: boolean): void => {
      fs.mkdirSync(path.join(root, name, 'vae'), { recursive: true });
      fs.writeFileSync(path.join(root, name, 'recipe.resolved.yaml'), 'kind: vae\n');
      if (finished) for (const f of ['config.json', 'diffusion_pytorch_model.safetensors']) fs.writeFileSync(path.join(root, name, 'vae', f), '');
    };
    expect(findFinishedVaeRun(root, 'vae-tiny')).toBeUndefined();
    make('vae-tiny-20260101-100000', true);
    make('vae-tiny-20260102-100000', true);
    make('vae-tiny-20260102-100000-2', true);
    make('vae-tiny-20260103-100000', false);
    make('vae-tiny-extra-20260104-100000', true);
    expect(findFinishedVaeRun(root, 'recipes/vae-tiny.yaml')).toBe(path.join(root, 'vae-tiny-20260102-100000-2', 'vae'));
  });
});

describe('latent NSP job', () => {
  let runsRoot: string;
  let runDir: string;
  let lines: string[];
  beforeAll(async () => {
    runsRoot = path.join(tmp, 'job-runs');
    const vaeRecipe = path.join(tmp, 'vae-small.yaml');
    fs.writeFileSync(
      vaeRecipe,
      `kind: vae
seed: 2
model: { block_out_channels: [8, 16], norm_num_groups: 4 }
data: { procedural: { count: 4, size: 16, seed: 1 }, crop: 8, batch_size: 2 }
train: { steps: 2, schedule: { warmup_steps: 0 } }
log: { every: 1, sample_every: 10, checkpoint_every: 10 }
eval: { count: 2, grid: 2 }
`,
    );
    const nspRecipe = path.join(tmp, 'nsp-latent.yaml');
    fs.writeFileSync(
      nspRecipe,
      `kind: nsp-progressive
seed: 1
space: latent
vae: { recipe: ${JSON.stringify(vaeRecipe)} }
data: { procedural: { count: 6, size: 16, seed: 4 }, batch_size: 3 }
model: ${JSON.stringify(TINY_MODEL)}
text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } }
train: { steps_per_scale: [2, 2], schedule: { warmup_steps: 0 } }
log: { every: 1, sample_every: 100, checkpoint_every: 100 }
sample: { prompts: ['a red circle in the top left on a blue background'], fidelity_samples: 2 }
`,
    );
    lines = [];
    const code = await nspJob.run({ loaded: loadRecipe(nspRecipe), recipeArg: nspRecipe, runsRoot, backend: 'cpu', log: (l) => lines.push(l) });
    expect(code).toBe(0);
    runDir = fs.readdirSync(runsRoot).map((n) => path.join(runsRoot, n)).find((d) => path.basename(d).startsWith('nsp-latent-'))!;
  }, 120_000);

  it('trains the VAE recipe first when no finished run exists, and records the VAE in the model', () => {
    expect(lines.some((l) => l.includes('training it first'))).toBe(true);
    const vaeRun = findFinishedVaeRun(runsRoot, 'vae-small');
    expect(vaeRun).toBeDefined();
    const meta = readSafetensorsHeader(path.join(runDir, 'model.safetensors')).metadata;
    const arch = JSON.parse(meta['scaleforge.architecture']!) as { vae?: { path: string }; model: { imageChannels: number } };
    expect(arch.vae?.path).toBe(vaeRun);
    expect(arch.model.imageChannels).toBe(4);
  });

  it('writes sample grids of decoded RGB at image size, not latents', async () => {
    const grids = fs.readdirSync(path.join(runDir, 'samples')).filter((f) => f.endsWith('.png')).sort();
    expect(grids.length).toBeGreaterThan(0);
    // Last grid: one prompt, two scales, each cell the decoded 16px image (not the 8px latent) at scale 128/16 = 8.
    const grid = await readImageRgb8(path.join(runDir, 'samples', grids[grids.length - 1]!));
    expect(grid.width).toBe(2 + 2 * (16 * 8 + 2));
  });

  it('loadNspForSampling decodes a latent run through its VAE', () => {
    const loaded = loadNspForSampling(runDir);
    expect(loaded.decode).toBeDefined();
    const scales = generate(loaded.pipeline, ['a red circle in the top left on a blue background'], { seed: 0, lastStage: loaded.lastStage });
    expect(scales[scales.length - 1]!.shape).toEqual([1, 8, 8, 4]);
    const rgb = loaded.decode!(scales[scales.length - 1]!);
    expect(rgb.shape).toEqual([1, 16, 16, 3]);
    tf.dispose([...scales, rgb]);
    loaded.pipeline.dispose();
    loaded.vae!.dispose();
  });

  it('the sample command writes decoded 16px RGB PNGs for a latent run', async () => {
    const out = path.join(tmp, 'sampled');
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      await sampleCommand.handler({
        checkpoint: runDir,
        prompt: ['a blue cross in the top right on a yellow background'],
        seed: 3,
        n: 1,
        out,
        'save-intermediates': true,
        ema: true,
        backend: 'cpu',
        _: [],
        $0: 'scaleforge',
      } as never);
    } finally {
      write.mockRestore();
    }
    // The 4×4 intermediate latent decodes to 8px, the final 8×8 latent to 16px.
    const files = fs.readdirSync(out).sort();
    expect(files).toEqual(['a-blue-cross-in-the-top-right-on-a-yellow-background-seed3-8px.png', 'a-blue-cross-in-the-top-right-on-a-yellow-background-seed3.png']);
    const sides = await Promise.all(files.map(async (f) => (await readImageRgb8(path.join(out, f))).width));
    expect(sides).toEqual([8, 16]);
  });

  it('reuses the finished VAE run on the next latent run', async () => {
    const nspRecipe = path.join(tmp, 'nsp-latent.yaml');
    const again: string[] = [];
    // Only the data stage matters here: stop before training by resolving the source directly.
    const r = loadRecipe(nspRecipe);
    const dataset = await ProceduralDataset.create({ size: 16, count: 6, seed: 4, cacheDir: null });
    const src = await latentSourceFor(r.config as NspRecipe, dataset, { loaded: r, recipeArg: nspRecipe, runsRoot, backend: 'cpu', log: (l) => again.push(l) });
    src.vae.model.dispose();
    expect(again.some((l) => l.includes('training it first'))).toBe(false);
    expect(again.some((l) => l.startsWith('vae: using'))).toBe(true);
    expect(again.some((l) => l.includes('from the cache'))).toBe(true);
  });
});

describe('resuming a latent run', () => {
  it('keeps the VAE recorded in the checkpoint even when a newer run of vae.recipe exists', async () => {
    const runsRoot = path.join(tmp, 'job-runs');
    const nspRecipe = path.join(tmp, 'nsp-latent.yaml');
    const runDir = fs.readdirSync(runsRoot).map((n) => path.join(runsRoot, n)).find((d) => path.basename(d).startsWith('nsp-latent-'))!;
    const recorded = findFinishedVaeRun(runsRoot, 'vae-small')!;
    const newer = path.join(runsRoot, 'vae-small-29991231-235959');
    fs.mkdirSync(newer);
    fs.writeFileSync(path.join(newer, 'recipe.resolved.yaml'), 'kind: vae\n');
    fs.cpSync(vaeDir, path.join(newer, 'vae'), { recursive: true });
    expect(findFinishedVaeRun(runsRoot, 'vae-small')).toBe(path.join(newer, 'vae'));
    const lines: string[] = [];
    const code = await nspJob.run({ loaded: loadRecipe(nspRecipe), recipeArg: nspRecipe, runsRoot, backend: 'cpu', resume: runDir, log: (l) => lines.push(l) });
    expect(code).toBe(0);
    expect(lines.some((l) => l.startsWith('vae: using'))).toBe(false);
    expect(lines.some((l) => l.includes('from the cache'))).toBe(true);
    const arch = JSON.parse(readSafetensorsHeader(path.join(runDir, 'model.safetensors')).metadata['scaleforge.architecture']!) as { vae: { path: string } };
    expect(arch.vae.path).toBe(recorded);
  }, 60_000);
});

describe('pixel runs', () => {
  it('are never decoded through a VAE', async () => {
    const r = tinyRecipe({ space: 'pixel', model: { ...TINY_MODEL, sizes: [8, 16] } });
    const { pipeline, arch } = buildPipeline(r, 3, ['a red circle in the top left on a blue background']);
    const file = path.join(tmp, 'pixel-model.safetensors');
    await saveModule(file, pipeline, { metadata: { 'scaleforge.kind': 'nsp-progressive', 'scaleforge.architecture': JSON.stringify(arch), 'scaleforge.last_stage': '1' } });
    pipeline.dispose();
    const loaded = loadNspForSampling(file);
    expect(loaded.decode).toBeUndefined();
    expect(loaded.vae).toBeUndefined();
    loaded.pipeline.dispose();
  });
});

describe('a VAE that does not match its config', () => {
  it('fails the train command with exit 2, naming the tensor and both shapes', async () => {
    const broken = path.join(tmp, 'broken-vae');
    fs.cpSync(vaeDir, broken, { recursive: true });
    const cfgFile = path.join(broken, 'config.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), latent_channels: 2 }));
    const recipe = path.join(tmp, 'nsp-broken.yaml');
    fs.writeFileSync(
      recipe,
      `kind: nsp-progressive
backend: cpu
space: latent
vae: { path: ${JSON.stringify(broken)} }
data: { procedural: { count: 2, size: 16, seed: 4 }, batch_size: 2 }
model: ${JSON.stringify(TINY_MODEL)}
`,
    );
    stderr.mockClear();
    stderr.mockImplementation(() => true);
    const code = await main(['train', '--recipe', recipe, '--out', path.join(tmp, 'never')]);
    const written = stderr.mock.calls.map((c) => String(c[0])).join('');
    stderr.mockReset();
    expect(code).toBe(2);
    // The file's encoder.conv_out has 2·4 = 8 output channels; a 2-latent-channel config expects 4.
    expect(written).toMatch(/'encoder\.conv_out\.weight': file has \[8,16,3,3\], model expects \[4,16,3,3\]/);
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });
});
