import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadRecipe, parseRecipe } from '../src/config/recipe.js';
import { createExtractor, extractFolder, registerExtractor } from '../src/eval/evaluate_features.js';
import { FeatureCache } from '../src/eval/feature_cache.js';
import { fromFeatureSet, loadEvalInput, mergeFeatureFiles, readFeatureFile, writeFeatureFile } from '../src/eval/evaluate_inputs.js';
import { computeClipScore, computeFid, computeIs, computeKid } from '../src/eval/evaluate_metrics.js';
import { frechetDistance } from '../src/eval/fid.js';
import { readImageRgb8 } from '../src/io/image.js';
import { writeNpz } from '../src/io/npz.js';
import { evaluateRecipeSchema } from '../src/jobs/evaluate/index.js';
import { UsageError } from '../src/util/errors.js';
import { pixelFeatures, pixelStatsSpec, writeProceduralFolder } from './helpers/eval_fixtures.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-eval-'));
const calls = { images: 0 };
const weightsFile = path.join(tmp, 'pixel-stats.safetensors');
const quiet = { write: () => true, isTTY: false };
let A: string;
let B: string;

beforeAll(async () => {
  fs.writeFileSync(weightsFile, 'not really weights, only hashed');
  registerExtractor('pixel-stats', pixelStatsSpec('inception-fid', calls));
  A = path.join(tmp, 'a');
  B = path.join(tmp, 'b');
  await writeProceduralFolder(A, 24, 5);
  await writeProceduralFolder(B, 20, 9);
  fs.writeFileSync(path.join(A, 'broken.png'), 'this is not a png');
});

const extractor = () => createExtractor('pixel-stats', { weightsPath: weightsFile });

/** mean and unbiased covariance in float64, written out plainly (np.mean, np.cov(rowvar=False)). */
function numpyStats(rows: number[][]): { mu: Float64Array; sigma: Float64Array } {
  const n = rows.length;
  const d = rows[0]!.length;
  const mu = new Float64Array(d);
  for (const r of rows) r.forEach((v, j) => (mu[j]! += v / n));
  const sigma = new Float64Array(d * d);
  for (const r of rows) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) sigma[i * d + j]! += ((r[i]! - mu[i]!) * (r[j]! - mu[j]!)) / (n - 1);
  return { mu, sigma };
}

async function expectedRows(dir: string): Promise<number[][]> {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.png') && f !== 'broken.png').sort();
  return Promise.all(files.map(async (f) => pixelFeatures(await readImageRgb8(path.join(dir, f))).features.map(Math.fround)));
}

describe('feature extraction over folders', () => {
  it('computes every decodable image, skips and reports the broken one, caches by content', async () => {
    const cacheRoot = path.join(tmp, 'cache1');
    const ex = await extractor();
    const cache = new FeatureCache(cacheRoot, ex.cacheKey, 6, 4);
    const before = calls.images;
    const set = await extractFolder(A, ex, { cache, batchSize: 5, progress: quiet });
    expect(set.n).toBe(24);
    expect(set.skipped).toEqual([{ file: 'broken.png', reason: expect.stringMatching(/^cannot decode/) }]);
    expect(set.computed).toBe(24);
    expect(calls.images - before).toBe(24);
    const want = await expectedRows(A);
    for (let i = 0; i < 24; i++) expect(Array.from(set.features.subarray(i * 6, i * 6 + 6))).toEqual(want[i]);

    // More images: only the new ones go through the network; rows stay in file order.
    await writeProceduralFolder(A, 4, 5, 16, 24);
    const again = await extractFolder(A, ex, { cache, batchSize: 5, progress: quiet });
    expect(again.n).toBe(28);
    expect(again.cached).toBe(24);
    expect(again.computed).toBe(4);
    expect(calls.images - before).toBe(28);
    expect(again.files.slice(0, 3)).toEqual(['000.png', '001.png', '002.png']);
    expect(Array.from(again.features.subarray(0, 6))).toEqual(want[0]);
    for (const f of fs.readdirSync(A).filter((x) => /^02[4-7]\./.test(x))) fs.rmSync(path.join(A, f));
  });

  it('FID of two folders equals the Fréchet distance of independently computed float64 statistics', async () => {
    const ex = await extractor();
    const a = await loadEvalInput(A, async () => ex, { cache: null, progress: quiet });
    const b = await loadEvalInput(B, async () => ex, { cache: null, progress: quiet });
    const sa = numpyStats(await expectedRows(A));
    const sb = numpyStats(await expectedRows(B));
    const want = frechetDistance(sa, sb).fid;
    const got = computeFid(a, b);
    expect(got.value).toBeCloseTo(want, 10);
    expect(got.value).toBeGreaterThan(0);
    expect(got.warnings).toEqual([]);
  });

  it('shards merged = unsharded: n, Σx, Σxxᵀ in float64, and the same FID', async () => {
    const ex = await extractor();
    const whole = await extractFolder(A, ex, { cache: null, progress: quiet });
    const parts: string[] = [];
    for (let k = 0; k < 3; k++) {
      const set = await extractFolder(A, ex, { cache: null, shard: { index: k, count: 3 }, progress: quiet });
      expect(set.n).toBeLessThan(24);
      const p = path.join(tmp, `shard${k}.npz`);
      await writeFeatureFile(p, set, fromFeatureSet(set).stats!);
      parts.push(p);
    }
    const merged = path.join(tmp, 'merged.npz');
    expect(await mergeFeatureFiles(parts, merged)).toEqual({ n: 24, dim: 6 });
    const m = readFeatureFile(merged);
    const w = fromFeatureSet(whole).stats!;
    expect(m.stats!.n).toBe(24);
    const rel = (x: number, y: number) => Math.abs(x - y) / Math.max(1e-300, Math.abs(y));
    m.stats!.sum.forEach((v, i) => expect(rel(v, w.sum[i]!)).toBeLessThan(1e-14));
    const mo = m.stats!.sumOuter();
    w.sumOuter().forEach((v, i) => expect(rel(mo[i]!, v)).toBeLessThan(1e-14));
    expect(new Set(m.features!.files)).toEqual(new Set(whole.files));
    const b = await loadEvalInput(B, async () => ex, { cache: null, progress: quiet });
    expect(computeFid(m, b).value).toBeCloseTo(computeFid(fromFeatureSet(whole), b).value, 10);
    // The file also carries mu and sigma, as pytorch-fid's --save-stats would.
    const asStats = readFeatureFile(merged);
    expect(asStats.kind).toBe('features');
  });

  it('KID and IS run on folders; too few images for a KID subset, missing logits, unequal dimensions are usage errors', async () => {
    const ex = await extractor();
    const a = await loadEvalInput(A, async () => ex, { cache: null, progress: quiet });
    const b = await loadEvalInput(B, async () => ex, { cache: null, progress: quiet });
    const kid = computeKid(a, b, { subsets: 10, subsetSize: 10, seed: 2020 });
    expect(Number.isFinite(kid.mean) && kid.std >= 0).toBe(true);
    expect(() => computeKid(a, b, { subsets: 10, subsetSize: 1000, seed: 2020 })).toThrow(/a: 24 images, fewer than the KID subset size 1000; pass --kid-subset-size 24 or less/);
    const is = computeIs(a, { splits: 4, seed: 2020 });
    expect(is.mean).toBeGreaterThan(1);
    const statsOnly = path.join(tmp, 'stats7.npz');
    await writeNpz(statsOnly, { mu: { data: new Float64Array(7), shape: [7] }, sigma: { data: new Float64Array(49), shape: [7, 7] } });
    const s7 = readFeatureFile(statsOnly);
    expect(() => computeFid(a, s7)).toThrow(UsageError);
    expect(() => computeFid(a, s7)).toThrow(/feature dimensions differ: .* has 6, .*stats7\.npz has 7/);
    expect(() => computeKid(s7, s7, { subsets: 1, subsetSize: 1, seed: 0 })).toThrow(/KID needs per-image features/);
    expect(() => computeIs(s7, { splits: 2, seed: 0 })).toThrow(/needs the network's logits/);
  });

  it('an .npz without mu/sigma or features is refused listing its keys; a sigma of the wrong shape names both', async () => {
    const p = path.join(tmp, 'other.npz');
    await writeNpz(p, { weights: { data: new Float32Array(3), shape: [3] } });
    expect(() => readFeatureFile(p)).toThrow(/other\.npz: has neither 'mu' and 'sigma'.*keys found: weights/);
    await writeNpz(p, { mu: { data: new Float64Array(3), shape: [3] }, sigma: { data: new Float64Array(4), shape: [2, 2] } });
    expect(() => readFeatureFile(p)).toThrow(/sigma has shape \[2,2\], expected \[3, 3\]/);
  });

  it('reads pytorch-fid statistics written by NumPy and warns when N is below the feature dimension', async () => {
    const npz = path.join(__dirname, 'fixtures', 'npz', 'fid_stats_compressed.npz');
    const s = readFeatureFile(npz);
    expect(s.kind).toBe('statistics');
    expect(computeFid(s, s).value).toBeCloseTo(0, 9);
    const ex = await extractor();
    const dir = path.join(tmp, 'few');
    await writeProceduralFolder(dir, 4, 3);
    const few = await loadEvalInput(dir, async () => ex, { cache: null, progress: quiet });
    expect(computeFid(few, s).warnings.join('\n')).toMatch(/few has 4 samples, fewer than the 6 feature dimensions: its covariance is rank-deficient/);
  });

  it('CLIP-score from an extractor: torchmetrics (clamp of the mean) and Hessel (prefixed captions), per image 100·max(cos, 0)', async () => {
    const img = new Float32Array([1, 0, 0.6, 0.8, 1, 0]);
    const texts: string[][] = [];
    const ex = {
      ...(await extractor()),
      featureDim: 2,
      name: 'clip-test',
      encodeTexts: async (t: readonly string[]) => {
        texts.push([...t]);
        return new Float32Array([1, 0, 0.8, 0.6, -1, 0]);
      },
    };
    const s = await computeClipScore(ex, img, ['a', 'b', 'c']);
    expect(s.perImage.map((v) => Number(v.toFixed(4)))).toEqual([100, 96, 0]);
    expect(s.clip_score).toBeCloseTo((100 + 96 - 100) / 3, 4);
    expect(s.clip_score_hessel).toBeCloseTo((2.5 + 2.4) / 3, 6);
    expect(texts[1]).toEqual(['A photo depicts a', 'A photo depicts b', 'A photo depicts c']);
    expect(s.model).toBe('clip-test');
  });
});

describe('evaluate recipe', () => {
  it('recipes/evaluate.yaml loads and validates; cross-field errors carry file:line', () => {
    const loaded = loadRecipe('evaluate');
    const cfg = parseRecipe(evaluateRecipeSchema, loaded);
    expect(cfg.metrics).toEqual(['caption_fidelity', 'fid', 'kid', 'is', 'clip_score']);
    expect(cfg.inception.resize).toBe('clean');
    expect(() => loadRecipe('evaluate', { sets: ['samples_per_checkpoint=4'] })).toThrow(/is\.splits.*10 splits need at least as many samples/s);
    expect(() => loadRecipe('evaluate', { sets: ['inception.resize=bicubic'] })).toThrow(/inception\.resize/);
  });
});

describe('evaluate CLI', () => {
  async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
    const { main } = await import('../src/cli/main.js');
    let out = '';
    let err = '';
    const w1 = process.stdout.write.bind(process.stdout);
    const w2 = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
    try {
      const code = await main(args);
      return { code, out, err };
    } finally {
      process.stdout.write = w1;
      process.stderr.write = w2;
      process.exitCode = undefined;
    }
  }

  it('fid of two NumPy statistics files prints torch-fidelity keys as JSON; usage errors exit 2', async () => {
    const npz = path.join(__dirname, 'fixtures', 'npz');
    const r = await cli(['evaluate', 'fid', path.join(npz, 'fid_stats.npz'), path.join(npz, 'fid_stats_compressed.npz'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { frechet_inception_distance: number; settings: Record<string, string> };
    expect(Math.abs(j.frechet_inception_distance)).toBeLessThan(1e-9);
    expect(j.settings.input_1).toMatch(/fid_stats\.npz \(statistics, 6-d\)/);
    expect((await cli(['evaluate', 'fid', path.join(npz, 'fid_stats.npz'), path.join(npz, 'corners.npz')])).code).toBe(2);
    expect((await cli(['evaluate', 'fid', path.join(npz, 'fid_stats.npz'), path.join(tmp, 'nope')])).code).toBe(2);
    const none = await cli(['evaluate']);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/name a sub-command/);
  });

  it('features with --num-shards, then merge, then fid against the folder: the same number as unsharded', async () => {
    const common = ['--model', 'pixel-stats', '--weights', weightsFile, '--no-cache'];
    const parts: string[] = [];
    for (const k of [0, 1]) {
      const out = path.join(tmp, `cli-shard${k}.npz`);
      const r = await cli(['evaluate', 'features', A, '--out', out, '--num-shards', '2', '--shard-index', String(k), ...common]);
      expect(r.code, r.err).toBe(0);
      parts.push(out);
    }
    const merged = path.join(tmp, 'cli-merged.npz');
    expect((await cli(['evaluate', 'merge', ...parts, '--out', merged])).code).toBe(0);
    const viaMerge = JSON.parse((await cli(['evaluate', 'fid', merged, B, '--json', ...common])).out) as { frechet_inception_distance: number };
    const direct = JSON.parse((await cli(['evaluate', 'fid', A, B, '--json', ...common])).out) as { frechet_inception_distance: number; images_skipped: number };
    expect(viaMerge.frechet_inception_distance).toBeCloseTo(direct.frechet_inception_distance, 10);
    expect(direct.images_skipped).toBe(1);
    const missingShardIndex = await cli(['evaluate', 'features', A, '--out', path.join(tmp, 'x.npz'), '--num-shards', '2', ...common]);
    expect(missingShardIndex.code).toBe(2);
    expect(missingShardIndex.err).toMatch(/--num-shards 2 needs --shard-index or one of JOB_COMPLETION_INDEX/);
  });
});
