import fs from 'node:fs';
import path from 'node:path';
import fg from 'fast-glob';
import type { RgbImage } from '../data/dataset.js';
import { IMAGE_EXTENSIONS } from '../data/image_folder.js';
import { shardOf, type ShardSpec } from '../curate/scan.js';
import { readImageRgb8 } from '../io/image.js';
import { Progress, type ProgressStream } from '../util/progress.js';
import { UsageError } from '../util/errors.js';
import { FeatureCache, sha256Bytes } from './feature_cache.js';
import { resolveWeights, type ResolvedWeights } from './weights.js';

/**
 * Networks that turn images into feature vectors (and, for Inception, class logits), behind one
 * interface so the evaluation pipeline (listing, decoding, caching, sharding, batching, progress)
 * is written once. Each network registers a factory under the name `--model` uses.
 */

export type ResizeMode = 'clean' | 'legacy';

export interface FeatureExtractor {
  /** `inception-fid`, `clip-vit-b32`, … */
  name: string;
  /** Everything that changes the outputs (name, weights hash, preprocessing): the cache key. */
  cacheKey: string;
  featureDim: number;
  /** 0 when the network has no classifier head. */
  logitDim: number;
  /** For the report and metrics.json: weights file hash, resize mode, … */
  settings: Record<string, string | number>;
  /** Row-major outputs for a batch: [n × featureDim] and [n × logitDim]. */
  extract(images: readonly RgbImage[]): Promise<{ features: Float32Array; logits?: Float32Array }>;
  /** Text embeddings in the image feature space (CLIP only). */
  encodeTexts?(texts: readonly string[]): Promise<Float32Array>;
  dispose(): void;
}

export interface ExtractorFactoryOptions {
  weights: ResolvedWeights;
  resize: ResizeMode;
}

export interface ExtractorSpec {
  /** Which weight set (`scaleforge weights fetch <id>`) the network loads. */
  weightsId: string;
  describe: string;
  create(opts: ExtractorFactoryOptions): Promise<FeatureExtractor>;
}

const extractors = new Map<string, ExtractorSpec>();

/** A network module registers itself here (src/eval/evaluate_extractors.ts, tests register small ones). */
export function registerExtractor(name: string, spec: ExtractorSpec): void {
  extractors.set(name, spec);
}

export function extractorNames(): string[] {
  return [...extractors.keys()];
}

export function getExtractorSpec(name: string): ExtractorSpec | undefined {
  return extractors.get(name);
}

/** Short names `--model` also accepts. */
const ALIASES: Record<string, string> = { clip: 'clip-vit-b32', inception: 'inception-fid' };

export async function createExtractor(requested: string, opts: { resize?: ResizeMode; weightsPath?: string; cacheDir?: string } = {}): Promise<FeatureExtractor> {
  const name = ALIASES[requested] ?? requested;
  const spec = extractors.get(name);
  if (!spec) {
    throw new UsageError(`no feature network '${name}' in this build; available: ${extractorNames().join(', ') || '(none)'}`);
  }
  const weights = resolveWeights(spec.weightsId, { explicit: opts.weightsPath, cacheDir: opts.cacheDir });
  return spec.create({ weights, resize: opts.resize ?? 'clean' });
}

// --------------------------------------------------------------------------------- image folders

export interface SkippedImage {
  file: string;
  reason: string;
}

export interface FeatureSet {
  /** What the features came from (a folder, an .npz). */
  source: string;
  /** Paths relative to the source folder, forward slashes, in row order. */
  files: string[];
  hashes: string[];
  n: number;
  featureDim: number;
  logitDim: number;
  features: Float32Array;
  logits?: Float32Array;
  skipped: SkippedImage[];
  /** How many rows came from the cache versus the network. */
  cached: number;
  computed: number;
  settings: Record<string, string | number>;
}

/** Image files of a folder, sorted; a shard keeps the files whose path hashes to it (curate's rule). */
export async function listImages(dir: string, shard?: ShardSpec): Promise<string[]> {
  if (!fs.existsSync(dir)) throw new UsageError(`${dir}: no such folder`);
  if (!fs.statSync(dir).isDirectory()) throw new UsageError(`${dir}: expected a folder of images, an .npz of statistics or a feature file`);
  const found = (await fg(`**/*.{${IMAGE_EXTENSIONS.join(',')}}`, { cwd: dir, onlyFiles: true, caseSensitiveMatch: false })).sort();
  return shard && shard.count > 1 ? found.filter((f) => shardOf(f, shard.count) === shard.index) : found;
}

export interface ExtractOptions {
  batchSize?: number;
  cache?: FeatureCache | null;
  shard?: ShardSpec;
  /** Only the first `limit` images (sorted). */
  limit?: number;
  progress?: ProgressStream;
  label?: string;
}

/**
 * Features of every image in a folder: decoded, hashed, looked up in the cache, the misses run through
 * the network in batches with a progress bar. Unreadable images are skipped and reported, not fatal.
 */
export async function extractFolder(dir: string, extractor: FeatureExtractor, opts: ExtractOptions = {}): Promise<FeatureSet> {
  let files = await listImages(dir, opts.shard);
  if (opts.limit !== undefined) files = files.slice(0, opts.limit);
  const cache = opts.cache === undefined ? new FeatureCache(FeatureCache.defaultRoot(), extractor.cacheKey, extractor.featureDim, extractor.logitDim) : opts.cache;
  const batchSize = opts.batchSize ?? 32;
  const fd = extractor.featureDim;
  const ld = extractor.logitDim;
  const rows: { file: string; hash: string; features: Float32Array; logits?: Float32Array }[] = [];
  const skipped: SkippedImage[] = [];
  let cached = 0;
  let computed = 0;
  const progress = new Progress({ total: files.length, label: opts.label ?? `features ${path.basename(dir)}`, ...(opts.progress ? { stream: opts.progress } : {}) });
  let pending: { file: string; hash: string; image: RgbImage }[] = [];
  const flush = async () => {
    if (!pending.length) return;
    const out = await extractor.extract(pending.map((p) => p.image));
    pending.forEach((p, i) => {
      const features = out.features.slice(i * fd, (i + 1) * fd);
      const logits = ld && out.logits ? out.logits.slice(i * ld, (i + 1) * ld) : undefined;
      cache?.put(p.hash, features, logits);
      rows.push({ file: p.file, hash: p.hash, features, ...(logits ? { logits } : {}) });
    });
    computed += pending.length;
    progress.update(rows.length + skipped.length, { cached, computed });
    pending = [];
  };
  for (const file of files) {
    const full = path.join(dir, file);
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(full);
    } catch (e) {
      skipped.push({ file, reason: `unreadable: ${(e as Error).message}` });
      continue;
    }
    const hash = sha256Bytes(bytes);
    const hit = cache?.get(hash);
    if (hit) {
      rows.push({ file, hash, ...hit });
      cached++;
      progress.update(rows.length + skipped.length + pending.length, { cached, computed });
      continue;
    }
    let image: RgbImage;
    try {
      image = await readImageRgb8(full);
    } catch (e) {
      skipped.push({ file, reason: `cannot decode: ${(e as Error).message.split('\n')[0]}` });
      continue;
    }
    pending.push({ file, hash, image });
    if (pending.length >= batchSize) await flush();
  }
  await flush();
  progress.finish({ cached, computed });
  // Rows in file order whatever mix of cache hits and batches produced them.
  const order = new Map(files.map((f, i) => [f, i]));
  rows.sort((a, b) => order.get(a.file)! - order.get(b.file)!);
  const features = new Float32Array(rows.length * fd);
  const logits = ld ? new Float32Array(rows.length * ld) : undefined;
  rows.forEach((r, i) => {
    features.set(r.features, i * fd);
    if (logits && r.logits) logits.set(r.logits, i * ld);
  });
  return {
    source: dir,
    files: rows.map((r) => r.file),
    hashes: rows.map((r) => r.hash),
    n: rows.length,
    featureDim: fd,
    logitDim: ld,
    features,
    ...(logits ? { logits } : {}),
    skipped,
    cached,
    computed,
    settings: extractor.settings,
  };
}
