import fs from 'node:fs';
import sharp from 'sharp';
import { tf } from '../../backend/tf.js';
import { brandSample } from '../../data/brand_signature.js';
import { type BrandItem, readBrandImage, scanBrandFolder, tagFrequency } from '../../data/brand_folder.js';
import { type BucketOptions, BucketSampler, assignBuckets, formatBucketReport } from '../../data/buckets.js';
import { UsageError } from '../../util/errors.js';
import type { DitLoraRecipe } from './schema.js';

/** One training image at the model's size, pixels in [-1, 1], with its caption and repeats per epoch. */
export interface LoraItem {
  id: string;
  pixels: Float32Array;
  caption: string;
  folder: string;
  repeats: number;
}

export interface LoraData {
  items: LoraItem[];
  size: number;
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
    items.push({ id: `brand-${i}`, pixels: toSigned(s.image), caption: s.caption, folder: s.branded ? `${r.data.repeats}_${trigger}` : '1_prior', repeats: s.branded ? r.data.repeats : 1 });
  }
  const report = assignBuckets(items.map((it) => ({ id: it.id, width: size, height: size })), bucketOptionsFor(r, size));
  return { items, size, report: formatBucketReport(report), tagFrequency: tagFrequency(items) };
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
  for (const it of items) out.push({ id: it.id, pixels: await decodeItem(it, size), caption: it.caption, folder: it.folder, repeats: it.repeats });
  return { items: out, size, report: lines.join('\n'), tagFrequency: tagFrequency(items) };
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

export function batchPixels(data: LoraData, indices: readonly number[]): tf.Tensor4D {
  const s = data.size;
  const all = new Float32Array(indices.length * s * s * 3);
  indices.forEach((i, k) => all.set(data.items[i]!.pixels, k * s * s * 3));
  return tf.tensor4d(all, [indices.length, s, s, 3]);
}
