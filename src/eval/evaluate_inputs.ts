import fs from 'node:fs';
import { readNpz, toFloat64, writeNpz, type NpyArray } from '../io/npz.js';
import { writeFileAtomic } from '../io/atomic.js';
import { UsageError } from '../util/errors.js';
import { FeatureStats } from './stats.js';
import { extractFolder, type ExtractOptions, type FeatureExtractor, type FeatureSet } from './evaluate_features.js';

/**
 * One side of a comparison, whatever the user passed: a folder of images (features computed), a
 * feature file written by `evaluate features` (features, logits and float64 sufficient statistics),
 * clean-fid's KID file (`feats`), or FID statistics as pytorch-fid and clean-fid save them (`mu`, `sigma`).
 */
export interface EvalInput {
  source: string;
  kind: 'images' | 'features' | 'statistics';
  /** Present for images and feature files. */
  features?: FeatureSet;
  /** Present whenever a mean and covariance can be had (float64 sums, or mu/sigma as given). */
  stats?: FeatureStats;
  mu?: Float64Array;
  sigma?: Float64Array;
  n?: number;
  dim: number;
}

export async function loadEvalInput(p: string, extractor: (() => Promise<FeatureExtractor>) | undefined, opts: ExtractOptions = {}): Promise<EvalInput> {
  if (!fs.existsSync(p)) throw new UsageError(`${p}: no such file or folder (expected an image folder, an .npz of mu/sigma, or a feature file)`);
  if (fs.statSync(p).isDirectory()) {
    if (!extractor) throw new UsageError(`${p}: a folder of images needs a feature network`);
    const set = await extractFolder(p, await extractor(), opts);
    return fromFeatureSet(set);
  }
  if (!p.endsWith('.npz')) throw new UsageError(`${p}: expected an image folder or an .npz file`);
  return readFeatureFile(p);
}

export function fromFeatureSet(set: FeatureSet): EvalInput {
  const stats = new FeatureStats(set.featureDim);
  if (set.n > 0) stats.add(set.features, set.n);
  return { source: set.source, kind: 'images', features: set, stats, n: set.n, dim: set.featureDim };
}

function matrix(a: NpyArray, file: string, key: string): { data: Float32Array; rows: number; cols: number } {
  if (a.shape.length !== 2) throw new UsageError(`${file}: '${key}' has shape [${a.shape}], expected [n, d]`);
  const data = a.data instanceof Float32Array ? a.data : Float32Array.from(toFloat64(a, `${file}:${key}`));
  return { data, rows: a.shape[0]!, cols: a.shape[1]! };
}

/** Reads any of the .npz kinds above; an .npz with none of them is an error listing its keys. */
export function readFeatureFile(file: string): EvalInput {
  const z = readNpz(file);
  const featKey = z.has('features') ? 'features' : z.has('feats') ? 'feats' : undefined;
  let stats: FeatureStats | undefined;
  if (z.has('n') && z.has('sum') && z.has('sum_outer')) {
    const sum = toFloat64(z.get('sum')!, `${file}:sum`);
    const d = sum.length;
    const outer = toFloat64(z.get('sum_outer')!, `${file}:sum_outer`);
    if (outer.length !== d * d) throw new UsageError(`${file}: sum_outer has ${outer.length} values, expected ${d}×${d}`);
    stats = new FeatureStats(d, { n: Number(toFloat64(z.get('n')!, `${file}:n`)[0]), sum, sumOuter: outer });
  }
  if (featKey) {
    const m = matrix(z.get(featKey)!, file, featKey);
    const logitsArr = z.get('logits');
    const logits = logitsArr ? matrix(logitsArr, file, 'logits') : undefined;
    if (logits && logits.rows !== m.rows) throw new UsageError(`${file}: logits has ${logits.rows} rows, features ${m.rows}`);
    if (!stats) {
      stats = new FeatureStats(m.cols);
      if (m.rows > 0) stats.add(m.data, m.rows);
    }
    const side = readSidecar(file);
    const set: FeatureSet = {
      source: file,
      files: side.files ?? [],
      hashes: side.hashes ?? [],
      n: m.rows,
      featureDim: m.cols,
      logitDim: logits?.cols ?? 0,
      features: m.data,
      ...(logits ? { logits: logits.data } : {}),
      skipped: side.skipped ?? [],
      cached: 0,
      computed: 0,
      settings: side.settings ?? {},
    };
    return { source: file, kind: 'features', features: set, stats, n: m.rows, dim: m.cols };
  }
  if (stats) return { source: file, kind: 'statistics', stats, n: stats.n, dim: stats.dim };
  if (z.has('mu') && z.has('sigma')) {
    const mu = toFloat64(z.get('mu')!, `${file}:mu`);
    const sigma = toFloat64(z.get('sigma')!, `${file}:sigma`);
    const d = mu.length;
    if (sigma.length !== d * d) throw new UsageError(`${file}: sigma has shape [${z.get('sigma')!.shape}], expected [${d}, ${d}] to match mu`);
    return { source: file, kind: 'statistics', mu, sigma, dim: d };
  }
  throw new UsageError(
    `${file}: has neither 'mu' and 'sigma' (FID statistics as pytorch-fid/clean-fid save them) nor 'features'/'feats' (a feature file); keys found: ${[...z.keys()].join(', ') || '(none)'}`,
  );
}

export function meanAndCov(input: EvalInput): { mu: Float64Array; sigma: Float64Array; n?: number } {
  if (input.mu && input.sigma) return { mu: input.mu, sigma: input.sigma };
  const s = input.stats;
  if (!s || s.n < 2) throw new UsageError(`${input.source}: needs at least 2 images for a covariance, has ${s?.n ?? 0}`);
  return { mu: s.mean(), sigma: s.covariance(), n: s.n };
}

function sidecarPath(file: string): string {
  return `${file}.json`;
}

interface Sidecar {
  files?: string[];
  hashes?: string[];
  skipped?: FeatureSet['skipped'];
  settings?: Record<string, string | number>;
}

function readSidecar(file: string): Sidecar {
  try {
    return JSON.parse(fs.readFileSync(sidecarPath(file), 'utf8')) as Sidecar;
  } catch {
    return {};
  }
}

/**
 * A feature file: features (float32), logits, the float64 sufficient statistics n, Σx, Σxxᵀ that
 * `evaluate merge` adds up exactly, and mu/sigma so pytorch-fid and clean-fid read it as statistics.
 * A JSON sidecar keeps the file list, content hashes, skipped images and the extractor settings.
 */
export async function writeFeatureFile(file: string, set: FeatureSet, stats: FeatureStats, extra: Record<string, unknown> = {}): Promise<void> {
  const d = stats.dim;
  const arrays: Parameters<typeof writeNpz>[1] = {
    features: { data: set.features, shape: [set.n, set.featureDim] },
    n: { data: new Float64Array([stats.n]), shape: [1] },
    sum: { data: Float64Array.from(stats.sum), shape: [d] },
    sum_outer: { data: stats.sumOuter(), shape: [d, d] },
  };
  if (set.logits) arrays.logits = { data: set.logits, shape: [set.n, set.logitDim] };
  if (stats.n >= 2) {
    arrays.mu = { data: stats.mean(), shape: [d] };
    arrays.sigma = { data: stats.covariance(), shape: [d, d] };
  }
  await writeNpz(file, arrays);
  const sidecar = { files: set.files, hashes: set.hashes, skipped: set.skipped, settings: set.settings, ...extra };
  await writeFileAtomic(sidecarPath(file), `${JSON.stringify(sidecar, null, 1)}\n`);
}

/** `evaluate merge`: shard feature files → one, sums added in float64, rows concatenated. */
export async function mergeFeatureFiles(parts: readonly string[], out: string): Promise<{ n: number; dim: number }> {
  if (parts.length === 0) throw new UsageError('evaluate merge: name the shard feature files to merge');
  const inputs = parts.map((p) => readFeatureFile(p));
  const dim = inputs[0]!.dim;
  for (const i of inputs) {
    if (i.dim !== dim) throw new UsageError(`${i.source}: features have dimension ${i.dim}, ${inputs[0]!.source} has ${dim}; shards of one evaluation must match`);
    if (!i.features || !i.stats) throw new UsageError(`${i.source}: not a feature file from 'evaluate features' (no features/sums to merge)`);
  }
  const stats = FeatureStats.mergeAll(inputs.map((i) => i.stats!));
  const sets = inputs.map((i) => i.features!);
  const n = sets.reduce((s, f) => s + f.n, 0);
  const features = new Float32Array(n * dim);
  const logitDim = sets[0]!.logitDim;
  const logits = logitDim && sets.every((s) => s.logits && s.logitDim === logitDim) ? new Float32Array(n * logitDim) : undefined;
  let row = 0;
  const files: string[] = [];
  const hashes: string[] = [];
  const skipped: FeatureSet['skipped'] = [];
  for (const s of sets) {
    features.set(s.features, row * dim);
    if (logits) logits.set(s.logits!, row * logitDim);
    row += s.n;
    files.push(...s.files);
    hashes.push(...s.hashes);
    skipped.push(...s.skipped);
  }
  const merged: FeatureSet = {
    source: out,
    files,
    hashes,
    n,
    featureDim: dim,
    logitDim: logits ? logitDim : 0,
    features,
    ...(logits ? { logits } : {}),
    skipped,
    cached: 0,
    computed: 0,
    settings: sets[0]!.settings,
  };
  await writeFeatureFile(out, merged, stats, { merged_from: parts });
  return { n, dim };
}
