import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { tf } from '../src/backend/tf.js';
import { loadRecipe } from '../src/config/recipe.js';
import { BRAND_COLORS, BRAND_STRIPES, brandRate, brandSample, detectBrandSignature, paintBrandSignature } from '../src/data/brand_signature.js';
import { renderProcedural, sampleProceduralMeta } from '../src/data/procedural.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import '../src/jobs/index.js';
import { runDitLoraJob } from '../src/jobs/dit-lora/index.js';
import { injectAdapters, loadBase } from '../src/jobs/dit-lora/model.js';
import { ditLoraRecipeSchema } from '../src/jobs/dit-lora/schema.js';
import { loadLoraData } from '../src/jobs/dit-lora/data.js';
import { sampleDitLora } from '../src/jobs/dit-lora/sampling.js';
import sharp from 'sharp';
import { sampleDit } from '../src/jobs/dit/sampling.js';
import { applyLoraFiles } from '../src/lora/files.js';
import { writeLoraFile } from '../src/lora/formats/index.js';
import { CheckpointManager } from '../src/train/checkpoint.js';
import { UsageError } from '../src/util/errors.js';
import { tinyBase } from './helpers/dit_lora.js';
import { expectClose } from './helpers/close.js';
import { AutoencoderKL, saveVae, vaeConfig } from '../src/models/vae/index.js';
import { Rng } from '../src/util/rng.js';
import { quietStream } from './helpers/train.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `ditlora-${name}-`));

function recipeFile(dir: string, base: string, over: string = ''): string {
  const file = path.join(dir, 'dit-lora-test.yaml');
  fs.writeFileSync(
    file,
    `kind: dit-lora
seed: 1
backend: cpu
base: { path: ${JSON.stringify(base)} }
lora: { r: 2, alpha: 4 }
data: { source: brand, brand: { count: 8, seed: 2 }, trigger: sfbrand, batch_size: 4, caption_dropout: 0.25 }
train: { steps: 4, schedule: { warmup_steps: 1 } }
log: { every: 1, sample_every: 100, checkpoint_every: 2 }
sample: { steps: 2, strengths: [1], eval_samples: 4, prompts: ["a red circle in the center on a white background"] }
${over}`,
  );
  return file;
}

async function runJob(recipe: string, runsRoot: string, extra: { stopAfterStep?: number; resume?: string | true } = {}) {
  const loaded = loadRecipe(recipe);
  return runDitLoraJob(
    { loaded, recipeArg: recipe, runsRoot, log: () => undefined, ...(extra.resume ? { resume: extra.resume } : {}) },
    { progressStream: quietStream, ...(extra.stopAfterStep !== undefined ? { stopAfterStep: extra.stopAfterStep } : {}) },
  );
}

describe('brand signature detector', () => {
  it('finds the painted signature and nothing on plain procedural images', () => {
    const positives = Array.from({ length: 40 }, (_, i) => {
      const rgb = renderProcedural(sampleProceduralMeta(11, i), 32, 32);
      return { rgb: paintBrandSignature(rgb, 32, 32), width: 32, height: 32 };
    });
    const negatives = Array.from({ length: 400 }, (_, i) => ({ rgb: renderProcedural(sampleProceduralMeta(12, i), 32, 32), width: 32, height: 32 }));
    expect(brandRate(positives)).toBe(1);
    expect(brandRate(negatives)).toBe(0);
  });

  it('needs both alternating colours: a band of one brand colour, or stripes in the wrong order, is not the signature', () => {
    const one = new Uint8Array(32 * 32 * 3);
    for (let i = 0; i < 32 * 32; i++) one.set(BRAND_COLORS.magenta, 3 * i);
    expect(detectBrandSignature({ rgb: one, width: 32, height: 32 }).present).toBe(false);
    const swapped = paintBrandSignature(new Uint8Array(32 * 32 * 3), 32, 32);
    const flipped = new Uint8Array(swapped.length);
    // Shifted by one stripe: every column gets the other colour.
    const stripe = 32 / BRAND_STRIPES;
    for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) for (let c = 0; c < 3; c++) flipped[3 * (y * 32 + x) + c] = swapped[3 * (y * 32 + ((x + stripe) % 32)) + c]!;
    const d = detectBrandSignature({ rgb: flipped, width: 32, height: 32 });
    expect(d.present).toBe(false);
    expect(d.matched).toBe(0);
  });

  it('judges each stripe by its inner columns: soft stripe edges still count, a wrong inner colour does not', () => {
    const size = 16;
    const w = size / BRAND_STRIPES;
    const soft = paintBrandSignature(renderProcedural(sampleProceduralMeta(3, 0), size, size), size, size);
    const band = Math.round(size * 0.125);
    // Each stripe's edge columns become the 50/50 mix of both brand colours, as a blurry sample draws them.
    const mix = BRAND_COLORS.magenta.map((v, c) => Math.round((v + BRAND_COLORS.teal[c]!) / 2));
    for (let y = size - band; y < size; y++) for (let x = 0; x < size; x++) if (x % w === 0 || x % w === w - 1) soft.set(mix, 3 * (y * size + x));
    expect(detectBrandSignature({ rgb: soft, width: size, height: size })).toEqual({ present: true, matched: 1 });
    // Two of the stripes' inner columns in the wrong colour: half the stripes match, below the 75 % bar.
    const wrong = paintBrandSignature(renderProcedural(sampleProceduralMeta(3, 0), size, size), size, size);
    for (let y = size - band; y < size; y++) for (const x of [1, 2, w + 1, w + 2]) wrong.set(x < w ? BRAND_COLORS.teal : BRAND_COLORS.magenta, 3 * (y * size + x));
    expect(detectBrandSignature({ rgb: wrong, width: size, height: size })).toEqual({ present: false, matched: 0.5 });
  });

  it('tolerates noise of the size samples have', () => {
    const rgb = paintBrandSignature(renderProcedural(sampleProceduralMeta(1, 0), 32, 32), 32, 32);
    let s = 7;
    const noisy = Uint8Array.from(rgb, (v) => {
      s = (s * 1103515245 + 12345) >>> 0;
      return Math.max(0, Math.min(255, v + ((s >>> 16) % 61) - 30));
    });
    expect(detectBrandSignature({ rgb: noisy, width: 32, height: 32 }).present).toBe(true);
  });

  it('brand set: the branded share carries signature and trigger, the rest is plain', () => {
    const items = Array.from({ length: 10 }, (_, i) => brandSample(2, i, 16, 'sfbrand', 0.5));
    expect(items.filter((s) => s.branded).length).toBe(5);
    for (const s of items) {
      expect(s.caption.startsWith('sfbrand, ')).toBe(s.branded);
      expect(detectBrandSignature({ rgb: s.image, width: 16, height: 16 }).present).toBe(s.branded);
    }
  });
});

describe('dit-lora job', () => {
  it('zero-initialised adapters leave the base output bit-identical at step 0', async () => {
    const dir = tmp('zero');
    const base = loadBase(await tinyBase(dir));
    const r = ditLoraRecipeSchema.parse({ lora: { r: 2, extra_targets: ['adaln', 'cross_attn'] } });
    const x = tf.randomNormal([2, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const t = tf.tensor1d([100, 700]);
    const cond = base.pipeline.encodePrompts(['a red circle in the center on a white background', 'sfbrand, a blue cross']);
    const before = base.pipeline.dit.forward(x, t, cond).dataSync().slice();
    const lora = injectAdapters(base.pipeline, r.lora, 0);
    expect(lora.adapters.size).toBeGreaterThan(4);
    const after = base.pipeline.dit.forward(x, t, cond).dataSync();
    expect(Array.from(after)).toEqual(Array.from(before));
    base.dispose();
  });

  it('latent-space base: images encoded once through its VAE (cached, keyed by VAE and pixels), adapters trained on the latents', async () => {
    const dir = tmp('latent');
    const vaeDir = path.join(dir, 'vae');
    // Downsamples ×2: 16 px brand images → 8×8×4 latents, the base's grid.
    const vaeConfigTiny = { ...vaeConfig('tiny'), blockOutChannels: [8, 16], normNumGroups: 4, scalingFactor: 0.5, sampleSize: 16 };
    const vae = new AutoencoderKL(vaeConfigTiny, { rng: new Rng(9) });
    await saveVae(vaeDir, vae);
    const baseFile = await tinyBase(dir, { vaeDir, size: 8 });
    const recipe = recipeFile(dir, baseFile);
    const runs = path.join(dir, 'runs');
    const logs: string[] = [];
    const run = async () => runDitLoraJob({ loaded: loadRecipe(recipe), recipeArg: recipe, runsRoot: runs, log: (l) => logs.push(l) }, { progressStream: quietStream });
    const first = await run();
    expect(first.exitCode).toBe(0);
    expect(logs.join('\n')).toMatch(/8 images \(16px → 8×8×4 latents\)/);
    const cacheFiles = fs.readdirSync(path.join(runs, '.latent-cache')).filter((f) => f.startsWith('lora-latents-'));
    expect(cacheFiles).toHaveLength(1);
    // The cache holds posterior-mean latents × scaling factor of exactly the brand images, computed here independently.
    const cached = loadSafetensors(path.join(runs, '.latent-cache', cacheFiles[0]!)).get('latents')!;
    expect(cached.shape).toEqual([8, 8, 8, 4]);
    const pixels = Array.from({ length: 8 }, (_, i) => Array.from(brandSample(2, i, 16, 'sfbrand', 0.5).image, (v) => v / 127.5 - 1)).flat();
    const mean = vae.encode(tf.tensor4d(pixels, [8, 16, 16, 3])).mean.sub(vaeConfigTiny.shiftFactor).mul(vaeConfigTiny.scalingFactor);
    expectClose(cached.data as Float32Array, mean.dataSync(), 1e-5);
    expect(first.evaluation!.brandRateWithTrigger).toBeGreaterThanOrEqual(0);
    logs.length = 0;
    const second = await run();
    expect(second.exitCode).toBe(0);
    expect(logs.join('\n')).toMatch(/latents: 8 × 8×8×4 from the cache/);
    vae.dispose();
    mean.dispose();
  });

  it('trains only the adapters: base tensors bit-identical, adapters changed; adapter written in the chosen format; resume is exact', async () => {
    const dir = tmp('train');
    const baseFile = await tinyBase(dir);
    const recipe = recipeFile(dir, baseFile, 'output: { format: kohya, name: brand }');
    const full = await runJob(recipe, path.join(dir, 'runs-a'));
    expect(full.exitCode).toBe(0);
    expect(full.adapterFile).toMatch(/brand\.safetensors$/);
    expect(fs.readFileSync(path.join(full.run.dir, 'buckets.txt'), 'utf8')).toMatch(/8 image\(s\) in 1 bucket\(s\), 0 skipped/);
    expect(full.evaluation).not.toBeNull();
    expect(full.adapterBytes!).toBeLessThan(full.baseBytes);

    // The last checkpoint holds base + adapters: every base tensor equals the base file's.
    const baseTensors = loadSafetensors(baseFile);
    const ckpt = new CheckpointManager(full.run.checkpoints).load(new CheckpointManager(full.run.checkpoints).latestPath()!);
    let adapters = 0;
    for (const [name, t] of ckpt.model) {
      if (name.includes('lora_')) {
        adapters++;
        continue;
      }
      expect(Array.from(t.data), name).toEqual(Array.from(baseTensors.get(name)!.data));
    }
    expect(adapters).toBeGreaterThan(0);
    const kohya = loadSafetensors(full.adapterFile!);
    const ups = [...kohya].filter(([k]) => k.endsWith('.lora_up.weight'));
    expect(ups.length).toBeGreaterThan(0);
    expect(ups.some(([, t]) => t.data.some((v) => v !== 0))).toBe(true);
    expect([...kohya.keys()].every((k) => k.startsWith('lora_unet_'))).toBe(true);

    // Stop after 2 steps, resume to 4: the same adapter file, bit for bit.
    const part = await runJob(recipe, path.join(dir, 'runs-b'), { stopAfterStep: 2 });
    expect(part.adapterFile).toBeNull();
    const resumed = await runJob(recipe, path.join(dir, 'runs-b'), { resume: part.run.dir });
    const a = loadSafetensors(full.adapterFile!);
    const b = loadSafetensors(resumed.adapterFile!);
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, t] of a) expect(Array.from(b.get(k)!.data), k).toEqual(Array.from(t.data));

    // `scaleforge sample --checkpoint <dit-lora run>`: the base with the run's adapter.
    const files = await sampleDitLora(full.run.dir, { prompts: ['sfbrand, a red circle in the center on a white background'], n: 2, seed: 0, out: path.join(dir, 'out'), saveIntermediates: false, ema: true, log: () => undefined, steps: 2 });
    expect(files.length).toBe(2);
  }, 120_000);

  it("prior_loss: target base anchors prior images to the frozen base's prediction (loss 0 and untouched adapters at step 0 on plain data); weight scales their loss; resume stays exact", async () => {
    const dir = tmp('prior');
    const baseFile = await tinyBase(dir);
    const run = async (name: string, brandedShare: number, priorLoss: string, extra: { stopAfterStep?: number; resume?: string } = {}) => {
      const sub = path.join(dir, name);
      fs.mkdirSync(sub, { recursive: true });
      const file = recipeFile(sub, baseFile);
      const text = fs
        .readFileSync(file, 'utf8')
        .replace('brand: { count: 8, seed: 2 }', `brand: { count: 8, seed: 2, branded_share: ${brandedShare} }`)
        .replace('train: { steps: 4, schedule: { warmup_steps: 1 } }', `train: { steps: 4, schedule: { warmup_steps: 1 }, prior_loss: ${priorLoss} }`);
      fs.writeFileSync(file, text);
      return runJob(file, path.join(sub, 'runs'), extra);
    };
    const ups = (file: string) => [...loadSafetensors(file)].filter(([k]) => k.endsWith('.lora_B.weight'));
    const losses = (runDir: string) => fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss?: number }).filter((m) => m.loss !== undefined).map((m) => m.loss!);

    // Only prior images: with adapters at zero the adapted model is the base, so the anchored loss and every
    // gradient are exactly 0 and B stays zero; regressing the data instead moves it.
    const anchored = await run('anchored', 0, '{ target: base }');
    expect(losses(anchored.run.dir).length).toBe(4);
    expect(losses(anchored.run.dir).every((l) => l === 0)).toBe(true);
    expect(ups(anchored.adapterFile!).every(([, t]) => t.data.every((v) => v === 0))).toBe(true);
    const onData = await run('data', 0, '{ target: data }');
    expect(losses(onData.run.dir).every((l) => l > 0)).toBe(true);
    expect(ups(onData.adapterFile!).some(([, t]) => t.data.some((v) => v !== 0))).toBe(true);
    const weightless = await run('weight0', 0, '{ target: data, weight: 0 }');
    expect(losses(weightless.run.dir).every((l) => l === 0)).toBe(true);

    // Brand and prior images together: the brand moves the adapters; the frozen prediction draws no random
    // numbers, so stopping at 2 and resuming to 4 gives the same adapter bit for bit.
    const full = await run('mixed-full', 0.5, '{ target: base }');
    expect(ups(full.adapterFile!).some(([, t]) => t.data.some((v) => v !== 0))).toBe(true);
    const part = await run('mixed-part', 0.5, '{ target: base }', { stopAfterStep: 2 });
    const resumed = await run('mixed-part', 0.5, '{ target: base }', { resume: part.run.dir });
    const a = loadSafetensors(full.adapterFile!);
    const b = loadSafetensors(resumed.adapterFile!);
    for (const [k, t] of a) expect(Array.from(b.get(k)!.data), k).toEqual(Array.from(t.data));
  }, 180_000);

  it('prior_loss: target base with trained base parameters is refused at recipe load', () => {
    expect(() => ditLoraRecipeSchema.parse({ lora: { trainable: ['adaLN_modulation.1.bias'] }, train: { prior_loss: { target: 'base' } } })).toThrow(/prior_loss.target: base needs lora.trainable empty/);
  });

  it('sample --lora at strength 0 is the base exactly; at strength 1 it differs', async () => {
    const dir = tmp('sample');
    const baseFile = await tinyBase(dir);
    // A non-zero adapter on every attention projection, written as PEFT.
    const base = loadBase(baseFile);
    const lora = injectAdapters(base.pipeline, ditLoraRecipeSchema.parse({}).lora, 0);
    for (const a of lora.adapters.values()) a.loraB.weight.assign(tf.randomNormal(a.loraB.weight.shape, 0, 0.5, 'float32', 3));
    const file = path.join(dir, 'l.safetensors');
    await writeLoraFile(file, lora.toWeights(), 'peft');
    base.dispose();
    const req = (out: string, loras?: string[]) => ({ prompts: ['a red circle in the center on a white background'], n: 1, seed: 0, out: path.join(dir, out), saveIntermediates: false, ema: true, log: () => undefined, steps: 2, ...(loras ? { loras } : {}) });
    const [plain] = await sampleDit(baseFile, req('plain'));
    const [zero] = await sampleDit(baseFile, req('zero', [`${file}:0`]));
    const [one] = await sampleDit(baseFile, req('one', [`${file}:1`]));
    expect(fs.readFileSync(zero!).equals(fs.readFileSync(plain!))).toBe(true);
    expect(fs.readFileSync(one!).equals(fs.readFileSync(plain!))).toBe(false);
  }, 60_000);

  it('a LoRA that does not fit the base is a usage error naming the module and both shapes', async () => {
    const dir = tmp('bad');
    const base = loadBase(await tinyBase(dir));
    const host = (shape: number[]) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    const file = path.join(dir, 'bad.safetensors');
    await writeLoraFile(
      file,
      {
        modules: new Map([
          ['blocks.0.attn.qkv', { down: host([2, 32]), up: host([48, 2]), alpha: 2 }],
          ['blocks.7.mlp.fc1', { down: host([2, 16]), up: host([64, 2]), alpha: 2 }],
        ]),
        metadata: {},
      },
      'peft',
    );
    let err: unknown;
    try {
      applyLoraFiles(base.pipeline.dit, [file]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    const msg = (err as Error).message;
    expect(msg).toMatch(/blocks\.0\.attn\.qkv: base weight is \[48, 16\] but the LoRA .* needs \[48, 32\]/);
    expect(msg).toMatch(/blocks\.7\.mlp\.fc1: no such module in the base/);
    base.dispose();

    // The same through the command line: exit 2, message on stderr, nothing written.
    const se = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const so = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    let code: number;
    let stderr = '';
    try {
      code = await main(['sample', '--checkpoint', path.join(dir, 'model.safetensors'), '--lora', `${file}:0.5`, '--prompt', 'a red circle', '--out', path.join(dir, 'out'), '--backend', 'cpu']);
      stderr = se.mock.calls.map((c) => String(c[0])).join('');
    } finally {
      so.mockRestore();
      se.mockRestore();
      process.exitCode = undefined;
    }
    expect(code).toBe(2);
    expect(stderr).toMatch(/blocks\.0\.attn\.qkv: base weight is \[48, 16\]/);
    expect(fs.existsSync(path.join(dir, 'out')) ? fs.readdirSync(path.join(dir, 'out')) : []).toEqual([]);
  });

  it('a trigger word that tokenises to nothing is refused at recipe load, exit 2', async () => {
    const dir = tmp('trig');
    const recipe = recipeFile(dir, '/nonexistent', '');
    fs.writeFileSync(recipe, fs.readFileSync(recipe, 'utf8').replace('trigger: sfbrand', 'trigger: "!!"'));
    let err: unknown;
    try {
      await runJob(recipe, path.join(dir, 'runs'));
    } catch (e) {
      err = e;
    }
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(/data\.trigger.*tokenise to nothing/s);
  });
});

describe('dit-lora folder data', () => {
  async function folder(): Promise<string> {
    const root = tmp('folder');
    fs.mkdirSync(path.join(root, '3_logo'));
    const png = (w: number, h: number) => sharp(Buffer.alloc(w * h * 3, 200), { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
    fs.writeFileSync(path.join(root, '3_logo', 'a.png'), await png(24, 16));
    fs.writeFileSync(path.join(root, '3_logo', 'a.txt'), 'logo, red');
    fs.writeFileSync(path.join(root, '3_logo', 'b.png'), await png(8, 8));
    return root;
  }

  it('puts the trigger first, keeps folder repeats, buckets every image to the base size and reports it', async () => {
    const r = ditLoraRecipeSchema.parse({ data: { source: 'folder', folder: await folder() } });
    const d = await loadLoraData(r, 16, 'sfbrand');
    expect(d.items.map((i) => [i.id, i.caption, i.repeats])).toEqual([
      ['3_logo/a.png', 'sfbrand, logo, red', 3],
      ['3_logo/b.png', 'sfbrand, logo', 3],
    ]);
    expect(d.items[0]!.x.length).toBe(16 * 16 * 3);
    expect(d.channels).toBe(3);
    expect(d.report).toMatch(/2 image\(s\) in 1 bucket\(s\), 0 skipped/);
    expect(d.report).toMatch(/16x16: 2/);
  });

  it('with no_upscale, an image below the bucket is reported as skipped, not dropped silently', async () => {
    const root = await folder();
    fs.writeFileSync(path.join(root, '3_logo', 'c.png'), await sharp(Buffer.alloc(32 * 32 * 3, 90), { raw: { width: 32, height: 32, channels: 3 } }).png().toBuffer());
    const r = ditLoraRecipeSchema.parse({ data: { source: 'folder', folder: root, buckets: { no_upscale: true } } });
    const d = await loadLoraData(r, 16, 'sfbrand');
    expect(d.items.map((i) => i.id)).toEqual(['3_logo/c.png']);
    expect(d.report).toMatch(/SKIPPED 3_logo\/b\.png 8x8: .*below the smallest bucket/);
  });
});
