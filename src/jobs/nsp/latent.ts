import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { loadRecipe } from '../../config/recipe.js';
import { Dataset } from '../../data/dataset.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../../io/safetensors.js';
import { type AutoencoderKL, loadVae, type VaeConfig, vaeDownsampleFactor, type LoadedVae } from '../../models/vae/index.js';
import { RECIPE_FILE, runBaseName } from '../../train/run_dir.js';
import { JobError, UsageError } from '../../util/errors.js';
import { Progress } from '../../util/progress.js';
import type { JobContext } from '../registry.js';
import { runVaeJob } from '../vae/index.js';
import { NspRecipe } from './schema.js';
import { latentSource, TrainingSource } from './data.js';

/** A latent-space source plus the VAE behind it (its location goes into the run's architecture). */
export interface LatentTrainingSource extends TrainingSource {
  /** What was passed to loadVae: a diffusers VAE folder or a .safetensors file. */
  readonly vaePath: string;
  readonly vae: LoadedVae;
}

export interface LatentSourceOptions {
  /** Use this VAE instead of resolving `vae.path` / `vae.recipe` (a resumed run keeps the VAE it started with). */
  vaePath?: string;
  /** Where cached latents live; default `<runsRoot>/.latent-cache`. */
  cacheDir?: string;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

/** What latent caching reads from a recipe (the NSP and DiT recipes both have these sections). */
export type LatentRecipe = Pick<NspRecipe, 'vae' | 'backend'> & {
  data: Pick<NspRecipe['data'], 'source' | 'folder' | 'allow_upscale'>;
  /** The generated side is the last entry (NSP's finest scale; DiT's input size). */
  model: { sizes: readonly number[] };
};

/** Bump when what the cache holds changes meaning (e.g. sampled instead of mean latents). */
const CACHE_VERSION = 1;
const CACHE_META_KEY = 'scaleforge.latent_cache';
const ENCODE_BATCH = 16;

/** Files of the diffusers folder the vae job writes. */
const VAE_FILES = ['config.json', 'diffusion_pytorch_model.safetensors'];

/**
 * The newest run of `recipe` under `runsRoot` that finished (has a complete `vae/` folder), by the
 * start time in the folder name; undefined when there is none.
 */
export function findFinishedVaeRun(runsRoot: string, recipe: string): string | undefined {
  const root = path.resolve(runsRoot);
  if (!fs.existsSync(root)) return undefined;
  const base = runBaseName(recipe).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^${base}-(\\d{8}-\\d{6})(?:-(\\d+))?$`);
  const finished = fs
    .readdirSync(root)
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter(({ name, m }) => m && fs.existsSync(path.join(root, name, RECIPE_FILE)) && VAE_FILES.every((f) => fs.existsSync(path.join(root, name, 'vae', f))))
    .map(({ name, m }) => ({ dir: path.join(root, name, 'vae'), stamp: m![1]!, n: m![2] ? Number(m![2]) : 1 }))
    .sort((a, b) => (a.stamp === b.stamp ? a.n - b.n : a.stamp < b.stamp ? -1 : 1));
  return finished.at(-1)?.dir;
}

/** The VAE location for a latent recipe: `vae.path`, else a finished run of `vae.recipe` (trained now if there is none). */
async function resolveVaeLocation(r: LatentRecipe, ctx: JobContext): Promise<string> {
  if (r.vae.path) return r.vae.path;
  const recipe = r.vae.recipe;
  if (!recipe) {
    throw new UsageError('space: latent needs a VAE: set vae.path (a diffusers AutoencoderKL folder or .safetensors, e.g. the SDXL VAE) or vae.recipe (e.g. vae-tiny)');
  }
  const runsRoot = ctx.runsRoot ?? 'checkpoints';
  const existing = findFinishedVaeRun(runsRoot, recipe);
  if (existing) {
    ctx.log(`vae: using ${existing} (newest finished run of ${recipe})`);
    return existing;
  }
  const loaded = loadRecipe(recipe);
  if (loaded.kind !== 'vae') throw new UsageError(`vae.recipe: ${recipe} is a recipe of kind '${loaded.kind}', expected kind 'vae'`);
  ctx.log(`vae: no finished run of ${recipe} under ${path.resolve(runsRoot)}/ — training it first (the same as: npx scaleforge train --recipe ${recipe})`);
  const backend = ctx.backend ?? r.backend;
  const result = await runVaeJob({ loaded, recipeArg: recipe, runsRoot, backend, log: (l) => ctx.log(`[vae] ${l}`) });
  if (!result.vaeDir) {
    throw new JobError(`training ${recipe} stopped at step ${result.step} before writing its vae/ folder; finish it with: npx scaleforge train --recipe ${recipe} --resume ${result.run.dir}, then start this job again`);
  }
  ctx.log(`vae: trained ${result.vaeDir}; NSP training continues`);
  return result.vaeDir;
}

/** Identity of the pixels the latents come from: count, size and a hash of every image. */
function datasetDigest(dataset: Dataset): string {
  const h = createHash('sha256');
  h.update(`${dataset.length}:${dataset.width}x${dataset.height}\n`);
  for (let i = 0; i < dataset.length; i++) h.update(dataset.get(i).image);
  return h.digest('hex');
}

/** What a cached latent file is valid for: the VAE weights file (path, size, mtime), its config, the pixels' digest and the image size. */
export function latentCacheKey(vaeWeightsPath: string, config: VaeConfig, pixelsDigest: string, imageSize: number): string {
  const st = fs.statSync(vaeWeightsPath);
  return JSON.stringify({
    v: CACHE_VERSION,
    weights: { path: fs.realpathSync(vaeWeightsPath), size: st.size, mtimeMs: st.mtimeMs },
    config,
    dataset: pixelsDigest,
    imageSize,
  });
}

function readCache(file: string, key: string, shape: number[]): Float32Array | null {
  if (!fs.existsSync(file)) return null;
  try {
    if (readSafetensorsHeader(file).metadata[CACHE_META_KEY] !== key) return null;
    const t = loadSafetensors(file).get('latents');
    if (!t || !(t.data instanceof Float32Array) || t.shape.join() !== shape.join()) return null;
    return t.data;
  } catch {
    // An unreadable cache is rebuilt, not fatal.
    return null;
  }
}

/**
 * Posterior-mean latents (scaled for the generator) of `count` square images of side `imageSize`,
 * `pixelsOf(i)` giving image i as HWC pixels in [-1, 1], in index order.
 */
export function encodeLatents(
  vae: AutoencoderKL,
  count: number,
  imageSize: number,
  pixelsOf: (i: number) => Float32Array,
  progressStream?: LatentSourceOptions['progressStream'],
): Float32Array {
  const s = imageSize;
  const latentSize = s / vaeDownsampleFactor(vae.config);
  const perImage = s * s * 3;
  const perLatent = latentSize * latentSize * vae.config.latentChannels;
  const out = new Float32Array(count * perLatent);
  const progress = new Progress({ total: count, label: 'encode', ...(progressStream ? { stream: progressStream } : {}) });
  for (let start = 0; start < count; start += ENCODE_BATCH) {
    const n = Math.min(ENCODE_BATCH, count - start);
    const pixels = new Float32Array(n * perImage);
    for (let i = 0; i < n; i++) pixels.set(pixelsOf(start + i), i * perImage);
    const x = tf.tensor4d(pixels, [n, s, s, 3]);
    const z = vae.encodeToLatents(x);
    x.dispose();
    out.set(z.dataSync(), start * perLatent);
    z.dispose();
    progress.update(start + n);
  }
  progress.finish();
  return out;
}

/**
 * The latents in the cache file when its key matches, else `encode()`d now and written there (atomically,
 * keyed), with a log line either way.
 */
export async function cachedLatents(o: { file: string; key: string; shape: number[]; what: string; log: (l: string) => void; encode: () => Float32Array }): Promise<Float32Array> {
  const [count, latentSize, , channels] = o.shape;
  const cached = readCache(o.file, o.key, o.shape);
  if (cached) {
    o.log(`latents: ${count} × ${latentSize}×${latentSize}×${channels} from the cache ${o.file}`);
    return cached;
  }
  const started = Date.now();
  o.log(`latents: encoding ${o.what} once with the VAE; later runs reuse the cache`);
  const all = o.encode();
  await saveSafetensors(o.file, { latents: { shape: o.shape, data: all } }, { [CACHE_META_KEY]: o.key });
  o.log(`latents: encoded in ${((Date.now() - started) / 1000).toFixed(1)} s, cached at ${o.file}`);
  return all;
}

/** `<runsRoot>/.latent-cache/<prefix>-<hash of key>.safetensors`. */
export function latentCacheFile(cacheDir: string, prefix: string, key: string): string {
  return path.join(cacheDir, `${prefix}-${createHash('sha256').update(key).digest('hex').slice(0, 16)}.safetensors`);
}

/**
 * The training source of a latent-space NSP run: the VAE (given, reused from a finished `vae.recipe`
 * run, or trained first), every dataset image encoded once (posterior mean × scaling factor) and
 * cached on disk keyed by the VAE weights file, its config, the dataset's pixels and the image size,
 * and a decoder that turns generated latents into RGB.
 */
export async function latentSourceFor(r: LatentRecipe, datasetIn: Dataset, ctx: JobContext, opts: LatentSourceOptions = {}): Promise<LatentTrainingSource> {
  const vaePath = opts.vaePath ?? (await resolveVaeLocation(r, ctx));
  const vae = loadVae(vaePath);
  try {
    const f = vaeDownsampleFactor(vae.config);
    const sizes = r.model.sizes;
    const finest = sizes[sizes.length - 1]!;
    let dataset = datasetIn;
    if (dataset instanceof ImageFolderDataset && dataset.width !== finest * f && r.data.folder) {
      ctx.log(`data: reloading ${r.data.folder} at ${finest * f}px (model.sizes ends at ${finest}, the VAE downsamples ×${f})`);
      dataset = await ImageFolderDataset.load({ root: r.data.folder, size: finest * f, allowUpscale: r.data.allow_upscale });
    }
    if (dataset.width !== dataset.height) throw new UsageError(`data: NSP needs square images, got ${dataset.width}×${dataset.height}`);
    if (dataset.width % f !== 0) {
      throw new UsageError(`data: ${dataset.width}px images are not a multiple of the VAE's downsampling factor ${f} (${vaePath})`);
    }
    const latentSize = dataset.width / f;
    const channels = vae.config.latentChannels;
    if (latentSize !== finest) {
      const sourceKey = r.data.source === 'procedural' ? 'data.procedural.size' : 'the image size';
      throw new UsageError(
        `model.sizes [${sizes.join(', ')}] must end at the latent size: ${dataset.width}px images encode to ` +
          `${latentSize}×${latentSize}×${channels} latents through the VAE at ${vaePath} (downsampling ×${f}); ` +
          `make model.sizes end at ${latentSize}, or set ${sourceKey} to ${finest * f}`,
      );
    }
    const key = latentCacheKey(vae.weightsPath, vae.config, datasetDigest(dataset), dataset.width);
    const cacheDir = opts.cacheDir ?? path.join(ctx.runsRoot ?? 'checkpoints', '.latent-cache');
    const ds = dataset;
    const all = await cachedLatents({
      file: latentCacheFile(cacheDir, 'latents', key),
      key,
      shape: [ds.length, latentSize, latentSize, channels],
      what: `${ds.length} images (${ds.width}px)`,
      log: ctx.log,
      encode: () => encodeLatents(vae.model, ds.length, ds.width, (i) => Float32Array.from(ds.get(i).image, (v) => v / 127.5 - 1), opts.progressStream),
    });
    const per = latentSize * latentSize * channels;
    const latents = Array.from({ length: dataset.length }, (_, i) => all.subarray(i * per, (i + 1) * per));
    const source = latentSource(dataset, latents, latentSize, channels, (z) => vae.model.decodeLatents(z));
    return Object.assign(source, { vaePath: path.resolve(vaePath), vae });
  } catch (e) {
    vae.model.dispose();
    throw e;
  }
}
