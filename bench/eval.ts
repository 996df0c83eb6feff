/**
 * Evaluation-metric benchmarks: FID's linear algebra at d = 2048 (feature statistics Σxxᵀ, then the trace
 * of (Σ1Σ2)^½) with LAPACK through the native addon and with the JavaScript fallback, next to SciPy's
 * `linalg.sqrtm` path (pytorch-fid / clean-fid) and numpy on the same matrices and machine
 * (bench/eval_ref.py); and FID-Inception feature extraction (the full-width network at 299×299) in images/s
 * per tfjs backend next to PyTorch's for the same network. Inputs come from the same hash streams on both
 * sides, so the FID values must agree too.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { frechetDistance } from '../src/eval/fid.js';
import { setLinalgBackend, type LinalgBackend } from '../src/eval/linalg.js';
import { FeatureStats } from '../src/eval/stats.js';
import { FidInceptionV3 } from '../src/models/inception/index.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { hashUniform } from '../test/helpers/hash_values.js';
import type { BenchRow } from './row.js';

const TORCH_PYTHON = '/usr/bin/python3';

export interface EvalBenchOptions {
  /** Feature dimension of the FID linear-algebra bench (2048 = Inception pool3). */
  dim?: number;
  /** Samples per set. */
  samples?: number;
  /** The JS fallback's dimension (it takes minutes at 2048 on 2 cores). */
  jsDim?: number;
  /** Images per feature-extraction timing. */
  images?: number;
  backends?: string[];
  log?: (line: string) => void;
}

/** bench/eval_ref.py's features(): a ReLU of a mixed uniform stream, float32. */
export function benchFeatures(name: string, n: number, d: number): Float32Array {
  const u = hashUniform(name, n * d);
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) out[i * d + j] = Math.max(0, u[i * d + j]! - 0.5 + 0.5 * (u[i * d + ((j + 1) % d)]! - 0.5)) + 0.001 * (j % 13);
  }
  return out;
}

function timed<T>(fn: () => T): { value: T; ms: number } {
  const t = performance.now();
  const value = fn();
  return { value, ms: performance.now() - t };
}

function fidRows(d: number, n: number, backend: LinalgBackend, log: (l: string) => void): { rows: BenchRow[]; fid: number } {
  setLinalgBackend(backend);
  const a = benchFeatures('bench-fid-a', n, d);
  // As numpy's float32 arithmetic: b · float32(1.05) + float32(0.01), each step rounded to float32.
  const b = benchFeatures('bench-fid-b', n, d).map((v) => Math.fround(Math.fround(v * Math.fround(1.05)) + Math.fround(0.01)));
  log(`${backend}: statistics of 2 × ${n} × ${d} features`);
  const stats = timed(() => [new FeatureStats(d).add(a), new FeatureStats(d).add(b)]);
  const [s1, s2] = stats.value;
  const g1 = { mu: s1!.mean(), sigma: s1!.covariance(), n };
  const g2 = { mu: s2!.mean(), sigma: s2!.covariance(), n };
  log(`${backend}: Fréchet distance at d = ${d}`);
  const fd = timed(() => frechetDistance(g1, g2));
  setLinalgBackend(undefined);
  return {
    fid: fd.value.fid,
    rows: [
      { name: `${backend} stats Σx, Σxxᵀ 2×${n}×${d}`, value: stats.ms, unit: 'ms', note: 'float64, both sets' },
      { name: `${backend} fid linalg d=${d}`, value: fd.ms, unit: 'ms', note: `FID ${fd.value.fid.toFixed(9)} (Cholesky congruence, eigvalsh)` },
    ],
  };
}

function inceptionRows(backends: string[], images: number, log: (l: string) => void): Promise<BenchRow[]> {
  return (async () => {
    const rows: BenchRow[] = [];
    const x = Float32Array.from(hashUniform('bench-inception-images', images * 299 * 299 * 3));
    for (const backend of backends) {
      try {
        await initBackend(backend);
      } catch (e) {
        rows.push({ name: `${backend} inception 299px`, value: NaN, unit: 'img/s', note: `unavailable: ${(e as Error).message.split('\n')[0]}` });
        continue;
      }
      log(`${backend}: FID Inception forward, ${images} images at 299×299`);
      const model = new FidInceptionV3(undefined, { initWeights: false });
      // Zero weights: the speed of the convolutions does not depend on the values.
      const input = tf.tensor4d(x, [images, 299, 299, 3]);
      const warm = model.forward(input.slice([0, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D);
      await warm.pool3.data();
      tf.dispose([warm.pool3, warm.logits, warm.logitsUnbiased]);
      const t = performance.now();
      const out = model.forward(input);
      await out.pool3.data();
      const ms = performance.now() - t;
      tf.dispose([input, out.pool3, out.logits, out.logitsUnbiased]);
      model.dispose();
      rows.push({ name: `${backend} inception 299px`, value: (images * 1000) / ms, unit: 'img/s', note: `batch ${images}, ${(ms / images).toFixed(0)} ms/img` });
    }
    return rows;
  })();
}

interface RefOutput {
  torch: string;
  numpy: string;
  scipy: string;
  rows: BenchRow[];
  fid: Record<string, number>;
}

function referenceRows(d: number, n: number, jsDim: number, images: number): RefOutput | BenchRow[] {
  const probe = spawnSync(TORCH_PYTHON, ['-c', 'import torch, scipy'], { encoding: 'utf8' });
  if (probe.status !== 0) return [{ name: 'scipy/pytorch unavailable', value: NaN, unit: '', note: `${TORCH_PYTHON} cannot import torch and scipy (apt-get install python3-torch python3-scipy)` }];
  const out = execFileSync(TORCH_PYTHON, ['bench/eval_ref.py', '--dim', String(d), '--samples', String(n), '--js-dim', String(jsDim), '--images', String(images), '--threads', '2'], {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  return JSON.parse(out) as RefOutput;
}

export async function runEvalBench(opts: EvalBenchOptions = {}): Promise<BenchRow[]> {
  const d = opts.dim ?? 2048;
  const n = opts.samples ?? 4096;
  const jsDim = opts.jsDim ?? d;
  const images = opts.images ?? 4;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  const fids: Record<string, number> = {};
  if (loadNativeAddon().addon?.dsyevd) {
    const r = fidRows(d, n, 'lapack', log);
    rows.push(...r.rows);
    fids[`lapack d=${d}`] = r.fid;
  } else rows.push({ name: 'lapack fid linalg', value: NaN, unit: 'ms', note: `native addon unavailable: ${loadNativeAddon().reason ?? 'no dsyevd'}` });
  const js = fidRows(jsDim, n, 'js', log);
  rows.push(...js.rows);
  fids[`js d=${jsDim}`] = js.fid;
  rows.push(...(await inceptionRows(opts.backends ?? ['native', 'wasm'], images, log)));
  log('scipy / numpy / torch reference (bench/eval_ref.py)');
  const ref = referenceRows(d, n, jsDim, images);
  if (Array.isArray(ref)) return [...rows, ...ref];
  rows.push(...ref.rows.map((r) => ({ ...r, note: r.note ?? `PyTorch ${ref.torch}, numpy ${ref.numpy}, SciPy ${ref.scipy}` })));
  // Agreement of the FID values (same features on both sides).
  for (const [key, value] of Object.entries(fids)) {
    const dim = key.split('d=')[1]!;
    const scipy = ref.fid[`sqrtm d=${dim}`];
    if (scipy !== undefined) rows.push({ name: `|FID ${key} − scipy sqrtm|`, value: Math.abs(value - scipy), unit: '', note: `ours ${value.toFixed(10)}, scipy ${scipy.toFixed(10)}` });
  }
  const byName = new Map(rows.map((r) => [r.name, r]));
  const sq = byName.get(`scipy sqrtm fid linalg d=${d}`);
  const lap = byName.get(`lapack fid linalg d=${d}`);
  if (sq && lap && Number.isFinite(lap.value)) rows.push({ name: `lapack fid linalg d=${d} ÷ scipy sqrtm`, value: lap.value / sq.value, unit: '×', note: '< 1 is faster than pytorch-fid’s path' });
  for (const backend of opts.backends ?? ['native', 'wasm']) {
    const ours = byName.get(`${backend} inception 299px`);
    const torch = byName.get('torch inception 299px');
    if (ours && torch && Number.isFinite(ours.value)) rows.push({ name: `${backend} inception 299px vs torch`, value: (100 * ours.value) / torch.value, unit: '%', note: 'throughput as % of PyTorch’s' });
  }
  return rows;
}
