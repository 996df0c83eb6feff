import { createHash } from 'node:crypto';
import fs from 'node:fs';
import sharp from 'sharp';
import { tf } from '../../backend/tf.js';
import { brandSample } from '../../data/brand_signature.js';
import { type BrandItem, readBrandImage, scanBrandFolder, tagFrequency } from '../../data/brand_folder.js';
import { type BucketOptions, BucketSampler, assignBuckets, formatBucketReport } from '../../data/buckets.js';
import { type AutoencoderKL, vaeDownsampleFactor } from '../../models/vae/index.js';
import { UsageError } from '../../util/errors.js';
import { cachedLatents, encodeLatents, latentCacheFile, latentCacheKey } from '../nsp/latent.js';
import type { DitLoraRecipe } from './schema.js';

/**
 * One training item with its caption and repeats per epoch: `x` is what the DiT learns to generate,
 * the image's HWC pixels in [-1, 1] (pixel-space bases) or its cached VAE latents (latent-space bases).
 */
export interface LoraItem {
  id: string;
  x: Float32Array;
  caption: string;
  folder: string;
  repeats: number;
}

export interface LoraData {
  items: LoraItem[];
  /** Side and channels of every item's `x`: the image (3) or latent grid. */
  size: number;
  channels: number;
  /** The bucket report as written to the run folder (every image: its bucket or why it was skipped). */
  report: string;
  tagFrequency: Record<string, Record<string, number>>;
}

/**
 * The DiT has one token grid, so every image goes to the one bucket of the base's input size: the
 * kohya bucketing with min = max side = that size (cover-resize, centre crop; with no_upscale,
 * images smaller than it are reported as skipped, never dropped silently).
 */
export function bucketOptionsFor(r: DitLoraRecipe, size: number): BucketOptions {
  if (size % r.data.buckets.step !== 0) throw new UsageError(`data.buckets.step ${r.data.buckets.step} does not divide the base input size ${size}`);
  return { step: r.data.buckets.step, maxArea: size * size, minSide: size, maxSide: size, noUpscale: r.data.buckets.no_upscale };
}

function toSigned(rgb: Uint8Array): Float32Array {
  return Float32Array.from(rgb, (v) => v / 127.5 - 1);
}

/** The built-in procedural brand set (src/data/brand_signature.ts). */
function brandSet(r: DitLoraRecipe, size: number, trigger: string): LoraData {
  const b = r.data.brand;
  const items: LoraItem[] = [];
  for (let i = 0; i < b.count; i++) {
    const s = brandSample(b.seed, i, size, trigger, b.branded_share);
    items.push({ id: `brand-${i}`, x: toSigned(s.image), caption: s.caption, folder: s.branded ? `${r.data.repeats}_${trigger}` : '1_prior', repeats: s.branded ? r.data.repeats : 1 });
  }
  const report = assignBuckets(items.map((it) => ({ id: it.id, width: size, height: size })), bucketOptionsFor(r, size));
  return { items, size, channels: 3, report: formatBucketReport(report), tagFrequency: tagFrequency(items) };
}

async function decodeItem(item: BrandItem, size: number): Promise<Float32Array> {
  const bytes = await readBrandImage(item);
  const { data } = await sharp(bytes).rotate().resize(size, size, { fit: 'cover', position: 'centre' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return toSigned(new Uint8Array(data.buffer, data.byteOffset, data.length));
}

/** An image folder (kohya `N_name` repeats, sidecar captions or metadata.jsonl) or `scaleforge curate` output. */
async function folderSet(r: DitLoraRecipe, size: number, trigger: string): Promise<LoraData> {
  const root = r.data.folder!;
  const { items, report } = await scanBrandFolder({ root, trigger, buckets: bucketOptionsFor(r, size) });
  const lines = [formatBucketReport(report.buckets)];
  for (const f of report.folders) lines.push(`folder ${f.folder}: ${f.images} image(s) × ${f.repeats} repeats${f.note ? ` (${f.note})` : ''}`);
  for (const s of report.skipped) lines.push(`SKIPPED ${s.file}: ${s.reason}`);
  if (items.length === 0) throw new UsageError(`data.folder: ${root} has no usable image:\n${lines.join('\n')}`);
  const out: LoraItem[] = [];
  for (const it of items) out.push({ id: it.id, x: await decodeItem(it, size), caption: it.caption, folder: it.folder, repeats: it.repeats });
  return { items: out, size, channels: 3, report: lines.join('\n'), tagFrequency: tagFrequency(items) };
}

export async function loadLoraData(r: DitLoraRecipe, size: number, trigger: string): Promise<LoraData> {
  return r.data.source === 'brand' ? brandSet(r, size, trigger) : folderSet(r, size, trigger);
}

export function writeBucketReport(file: string, data: LoraData): void {
  fs.writeFileSync(file, `${data.report}\n`);
}

/** Batches that never mix buckets, the order a function of (seed, epoch): the state is two integers. */
export function loraSampler(data: LoraData, batchSize: number, seed: number): BucketSampler {
  const bucket = { width: data.size, height: data.size };
  return new BucketSampler(
    data.items.map((it) => ({ bucket, repeats: it.repeats })),
    batchSize,
    seed,
  );
}

/** The items' `x` stacked into a batch [n, size, size, channels]. */
export function batchX(data: LoraData, indices: readonly number[]): tf.Tensor4D {
  const per = data.size * data.size * data.channels;
  const all = new Float32Array(indices.length * per);
  indices.forEach((i, k) => all.set(data.items[i]!.x, k * per));
  return tf.tensor4d(all, [indices.length, data.size, data.size, data.channels]);
}

/**
 * For a latent-space base: every item's pixels encoded once through the base's VAE (posterior mean ×
 * scaling factor, as the NSP and DiT jobs train on) and cached in `cacheDir`, keyed by the VAE weights
 * and config and the pixels themselves, so a second run on the same images skips the VAE.
 */
export async function encodeLoraLatents(data: LoraData, vae: AutoencoderKL, vaeWeightsPath: string, cacheDir: string, log: (l: string) => void): Promise<LoraData> {
  const f = vaeDownsampleFactor(vae.config);
  if (data.size % f !== 0) throw new UsageError(`data: ${data.size}px images are not a multiple of the VAE's downsampling factor ${f}`);
  const latentSize = data.size / f;
  const channels = vae.config.latentChannels;
  const digest = createHash('sha256');
  digest.update(`${data.items.length}:${data.size}\n`);
  for (const it of data.items) digest.update(new Uint8Array(it.x.buffer, it.x.byteOffset, it.x.byteLength));
  const key = latentCacheKey(vaeWeightsPath, vae.config, digest.digest('hex'), data.size);
  const all = await cachedLatents({
    file: latentCacheFile(cacheDir, 'lora-latents', key),
    key,
    shape: [data.items.length, latentSize, latentSize, channels],
    what: `${data.items.length} images (${data.size}px)`,
    log,
    encode: () => encodeLatents(vae, data.items.length, data.size, (i) => data.items[i]!.x),
  });
  const per = latentSize * latentSize * channels;
  return { ...data, size: latentSize, channels, items: data.items.map((it, i) => ({ ...it, x: all.subarray(i * per, (i + 1) * per) })) };
}
