import fs from 'node:fs';
import path from 'node:path';
import fg from 'fast-glob';
import sharp from 'sharp';
import { findCaption, readCaptionManifest, withTrigger } from '../curate/captions.js';
import { UsageError } from '../util/errors.js';
import { type BucketOptions, type BucketReport, assignBuckets } from './buckets.js';
import { checkTriggerWord } from './caption_ops.js';
import { IMAGE_EXTENSIONS } from './image_folder.js';
import { readShardSamples } from './webdataset_read.js';

/**
 * A LoRA training folder in kohya's DreamBooth layout: sub-folders `N_name` repeat their images N
 * times per epoch (`10_brandx logo` → 10 repeats, class words "brandx logo"); images directly in the
 * root repeat once. Captions come from a sidecar `name.txt`/`name.caption` or a `metadata.jsonl`
 * (Hugging Face imagefolder: {"file_name", "text"}) in the image's folder, else the folder's class
 * words (kohya's fallback); the trigger word is put first. Images are sized (header only) and
 * bucketed; every file found is either an item or a skip with its reason.
 */
export interface BrandFolderOptions {
  root: string;
  trigger?: string;
  buckets: BucketOptions;
}

export interface BrandItem {
  file: string;
  /** Path relative to the root, forward slashes. */
  id: string;
  folder: string;
  repeats: number;
  caption: string;
  captionSource: 'sidecar' | 'manifest' | 'folder';
  /** Set when the image lives in a WebDataset shard: `file` is then `<shard>#<key>.<ext>`. */
  shard?: { file: string; key: string; ext: string };
  width: number;
  height: number;
  bucket: { width: number; height: number };
  resized: { width: number; height: number };
}

export interface BrandFolderReport {
  folders: { folder: string; repeats: number; images: number; note?: string }[];
  skipped: { file: string; reason: string }[];
  buckets: BucketReport;
}

const FOLDER = /^(\d+)_(.+)$/;

async function imageSize(file: string | Uint8Array): Promise<{ width: number; height: number } | { reason: string }> {
  try {
    const meta = await sharp(file).metadata();
    if (!meta.width || !meta.height) return { reason: 'image has no size' };
    const swap = (meta.orientation ?? 1) >= 5;
    return swap ? { width: meta.height, height: meta.width } : { width: meta.width, height: meta.height };
  } catch (e) {
    return { reason: `cannot read the image: ${(e as Error).message.split('\n')[0]}` };
  }
}

export async function scanBrandFolder(opts: BrandFolderOptions): Promise<{ items: BrandItem[]; report: BrandFolderReport }> {
  const root = path.resolve(opts.root);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new UsageError(`${opts.root}: no such folder`);
  const trigger = opts.trigger === undefined ? undefined : checkTriggerWord(opts.trigger);
  const files = (await fg(`**/*.{${[...IMAGE_EXTENSIONS, 'tar'].join(',')}}`, { cwd: root, onlyFiles: true, caseSensitiveMatch: false })).sort();
  const folders = new Map<string, { repeats: number; classWords: string; files: string[]; note?: string }>();
  for (const d of fs.readdirSync(root, { withFileTypes: true })) {
    if (!d.isDirectory()) continue;
    const m = FOLDER.exec(d.name);
    folders.set(d.name, m ? { repeats: Number(m[1]), classWords: m[2]!.trim(), files: [] } : { repeats: 1, classWords: d.name, files: [], note: `no N_ prefix: repeats 1` });
    if (m && Number(m[1]) < 1) throw new UsageError(`${path.join(opts.root, d.name)}: repeat count must be at least 1`);
  }
  folders.set('.', { repeats: 1, classWords: '', files: [] });
  for (const f of files) {
    const top = f.includes('/') ? f.slice(0, f.indexOf('/')) : '.';
    folders.get(top)!.files.push(f);
  }
  // Keyed by absolute image path; file names are relative to each manifest's own folder.
  const manifest = new Map<string, string>();
  for (const m of (await fg('**/metadata.jsonl', { cwd: root, onlyFiles: true })).sort()) {
    for (const [k, v] of await readCaptionManifest(path.join(root, m))) manifest.set(k, v);
  }

  const skipped: BrandFolderReport['skipped'] = [];
  const pending: Omit<BrandItem, 'bucket' | 'resized'>[] = [];
  const folderReport: BrandFolderReport['folders'] = [];
  for (const [folder, info] of [...folders].sort(([a], [b]) => a.localeCompare(b))) {
    if (folder === '.' && info.files.length === 0) continue;
    if (info.files.length === 0) {
      folderReport.push({ folder, repeats: info.repeats, images: 0, note: `no images (${IMAGE_EXTENSIONS.join('/')})` });
      continue;
    }
    let used = 0;
    for (const id of info.files) {
      const file = path.join(root, id);
      if (id.toLowerCase().endsWith('.tar')) {
        used += await scanShard(file, id, folder, info, trigger, pending, skipped);
        continue;
      }
      const cap = await findCaption({ abs: file, id }, ['txt', 'caption'], manifest);
      if (cap.error) {
        skipped.push({ file, reason: cap.error });
        continue;
      }
      const size = await imageSize(file);
      if ('reason' in size) {
        skipped.push({ file, reason: size.reason });
        continue;
      }
      const text = cap.text.replace(/\s+/g, ' ').trim();
      const source = cap.source === 'none' ? 'folder' : cap.source;
      const base = source === 'folder' ? info.classWords : text;
      pending.push({ file, id, folder, repeats: info.repeats, caption: withTrigger(base, trigger), captionSource: source, ...size });
      used++;
    }
    folderReport.push({ folder, repeats: info.repeats, images: used, ...(info.note ? { note: info.note } : {}) });
  }
  const buckets = assignBuckets(pending, opts.buckets);
  for (const s of buckets.skipped) skipped.push({ file: pending[s.index]!.file, reason: s.reason });
  const items = buckets.assigned.map((a) => ({ ...pending[a.index]!, bucket: a.bucket, resized: a.resized }));
  if (items.length === 0) {
    const why = skipped.slice(0, 3).map((s) => `${s.file}: ${s.reason}`).join('; ');
    throw new UsageError(`${opts.root}: no usable training images (${files.length} found${why ? `; ${why}` : ''})`);
  }
  return { items, report: { folders: folderReport, skipped, buckets } };
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The samples of one WebDataset shard as items (image field jpg/jpeg/png/webp, caption from txt or json). */
async function scanShard(
  file: string,
  id: string,
  folder: string,
  info: { repeats: number; classWords: string },
  trigger: string | undefined,
  pending: Omit<BrandItem, 'bucket' | 'resized'>[],
  skipped: BrandFolderReport['skipped'],
): Promise<number> {
  let used = 0;
  for (const sample of readShardSamples(file)) {
    const where = `${file}#${sample.key}`;
    const ext = IMAGE_EXTENSIONS.find((e) => sample.fields.has(e));
    if (!ext) {
      skipped.push({ file: where, reason: `no image field (${IMAGE_EXTENSIONS.join('/')}) in the sample` });
      continue;
    }
    let text: string | undefined;
    try {
      const txt = sample.fields.get('txt');
      const json = sample.fields.get('json');
      if (txt) text = strictUtf8.decode(txt);
      else if (json) {
        const rec = JSON.parse(strictUtf8.decode(json)) as Record<string, unknown>;
        const v = rec.caption ?? rec.text;
        if (typeof v === 'string') text = v;
      }
    } catch {
      skipped.push({ file: where, reason: 'caption (txt/json) is not valid UTF-8 text / JSON' });
      continue;
    }
    const size = await imageSize(sample.fields.get(ext)!);
    if ('reason' in size) {
      skipped.push({ file: where, reason: size.reason });
      continue;
    }
    const caption = text === undefined ? info.classWords : text.replace(/\s+/g, ' ').trim();
    pending.push({
      file: `${where}.${ext}`,
      id: `${id}#${sample.key}`,
      folder,
      repeats: info.repeats,
      caption: withTrigger(caption, trigger),
      captionSource: text === undefined ? 'folder' : 'sidecar',
      shard: { file, key: sample.key, ext },
      ...size,
    });
    used++;
  }
  return used;
}

/** The encoded bytes of an item's image, from its file or its shard. */
export async function readBrandImage(item: Pick<BrandItem, 'file' | 'shard'>): Promise<Uint8Array> {
  if (!item.shard) return new Uint8Array(await fs.promises.readFile(item.file));
  const sample = readShardSamples(item.shard.file).find((s) => s.key === item.shard!.key);
  const bytes = sample?.fields.get(item.shard.ext);
  if (!bytes) throw new UsageError(`${item.shard.file}: sample '${item.shard.key}' has no ${item.shard.ext} any more`);
  return bytes;
}

/**
 * kohya's `ss_tag_frequency`: per dataset folder, how many images carry each comma-separated tag
 * (each image counted once per tag, tags trimmed, as train_util counts them).
 */
export function tagFrequency(items: readonly Pick<BrandItem, 'folder' | 'caption'>[]): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const it of items) {
    const dir = (out[it.folder] ??= {});
    for (const tag of new Set(it.caption.split(',').map((t) => t.trim()).filter(Boolean))) dir[tag] = (dir[tag] ?? 0) + 1;
  }
  return out;
}

/** kohya's `ss_bucket_info`: buckets by index with resolution and image count, and the mean |aspect error|. */
export function kohyaBucketInfo(report: BucketReport): string {
  const buckets: Record<string, { resolution: [number, number]; count: number }> = {};
  report.counts
    .map((c) => c.bucket.split('x').map(Number) as [number, number])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .forEach((res, i) => {
      buckets[String(i)] = { resolution: res, count: report.assigned.filter((a) => a.bucket.width === res[0] && a.bucket.height === res[1]).length };
    });
  const n = report.assigned.length;
  const mean = n ? report.assigned.reduce((s, a) => s + Math.abs(a.aspectError), 0) / n : 0;
  return JSON.stringify({ buckets, mean_img_ar_error: mean });
}
