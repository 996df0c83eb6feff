import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { frechetDistance } from '../src/eval/fid.js';
import { inceptionScore } from '../src/eval/inception_score.js';
import { kernelInceptionDistance, mmd2PolynomialUnbiased } from '../src/eval/kid.js';
import { linalgBackend, matmul, setLinalgBackend, symmetricEigen, type LinalgBackend } from '../src/eval/linalg.js';
import { NumpyRandomState } from '../src/eval/numpy_random.js';
import { precisionRecall } from '../src/eval/precision_recall.js';
import { FeatureStats } from '../src/eval/stats.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { hashUniform } from './helpers/hash_values.js';
import { UsageError } from '../src/util/errors.js';

// Values from scripts/fixtures/metrics_ref.py (numpy/scipy); inputs regenerated from the same hash streams.
const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/metrics_ref.json', import.meta.url), 'utf8'));

/** scripts/fixtures/metrics_ref.py's features(): max(0, z_j + z_{j+1}/2) + j/100 as float32. */
function features(name: string, n: number, d: number, scale = 1, shift = 0): Float32Array {
  const z = hashUniform(name, n * d);
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const a = z[i * d + j]! - 0.5;
      const b = z[i * d + ((j + 1) % d)]! - 0.5;
      const x = Math.fround(Math.max(0, a + 0.5 * b) + 0.01 * j);
      out[i * d + j] = x * scale + shift;
    }
  }
  return out;
}

/** As numpy: astype(float64) * scale + shift, computed in float64 from the float32 features. */
function scaled(x: Float32Array, scale: number, shift: number): Float64Array {
  return Float64Array.from(x, (v) => v * scale + shift);
}

const backends: LinalgBackend[] = loadNativeAddon().addon ? ['lapack', 'js'] : ['js'];

afterEach(() => setLinalgBackend(undefined));

describe('numpy RandomState (MT19937) draws', () => {
  it('permutation and choice(replace=False) equal numpy legacy RandomState', () => {
    const rs = ref.random_state;
    const rng = new NumpyRandomState(2020);
    expect([...rng.permutation(10)]).toEqual(rs.perm10_seed2020);
    expect([...rng.choiceWithoutReplacement(1000, 7)]).toEqual(rs.then_choice_1000_7);
    expect([...new NumpyRandomState(123456789).permutation(70000).slice(0, 5)]).toEqual(rs.perm70000_seed123456789_head);
  });
});

describe.each(backends)('linear algebra on %s', (backend) => {
  it('symmetric eigenvalues equal numpy.linalg.eigh; eigenvectors satisfy A v = λ v', () => {
    setLinalgBackend(backend);
    expect(linalgBackend()).toBe(backend);
    const n = ref.eigh.n as number;
    const u = hashUniform('eigh-matrix', n * n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = u[i * n + j]! - 0.5 + (u[j * n + i]! - 0.5);
    for (let i = 0; i < n; i++) a[i * n + 3] = a[i * n + 5]!;
    for (let j = 0; j < n; j++) a[3 * n + j] = a[5 * n + j]!;
    const { values, vectors } = symmetricEigen(a, n, { vectors: true });
    values.forEach((v, i) => expect(v).toBeCloseTo(ref.eigh.values[i], 12));
    const av = matmul(vectors!, a, n, n, n); // row i = v_iᵀ A = (A v_i)ᵀ
    let worst = 0;
    for (let i = 0; i < n; i++) {
      let norm = 0;
      for (let k = 0; k < n; k++) {
        worst = Math.max(worst, Math.abs(av[i * n + k]! - values[i]! * vectors![i * n + k]!));
        norm += vectors![i * n + k]! ** 2;
      }
      expect(norm).toBeCloseTo(1, 12);
    }
    expect(worst).toBeLessThan(1e-12);
    expect(symmetricEigen(a, n, { vectors: false }).values[7]).toBeCloseTo(values[7]!, 12);
  });

  it('rejects non-finite input', () => {
    setLinalgBackend(backend);
    expect(() => symmetricEigen(Float64Array.from([1, NaN, NaN, 1]), 2, { vectors: false })).toThrow(/entry \(0, 1\) is NaN/);
  });

  for (const key of ['fid_full_rank', 'fid_rank_deficient'] as const) {
    it(`Fréchet distance (${key}) equals numpy/scipy`, () => {
      setLinalgBackend(backend);
      const c = ref[key];
      const f1 = features(`fid-${c.tag}-a`, c.n1, c.d);
      const f2 = scaled(features(`fid-${c.tag}-b`, c.n2, c.d), 1.1, 0.05);
      const s1 = new FeatureStats(c.d).add(f1);
      const s2 = new FeatureStats(c.d).add(f2);
      const mu1 = s1.mean();
      const cov1 = s1.covariance();
      c.mu1_head.forEach((v: number, i: number) => expect(mu1[i]).toBeCloseTo(v, 13));
      c.cov1_head.forEach((v: number, i: number) => expect(cov1[i]).toBeCloseTo(v, 13));
      const res = frechetDistance({ mu: mu1, sigma: cov1, n: s1.n }, { mu: s2.mean(), sigma: s2.covariance(), n: s2.n });
      // Same route in numpy: to rounding. scipy's sqrtm (pytorch-fid) and the unthresholded symmetric route
      // carry ~1e-8 of √(rounding noise) when Σ1 is singular, 1e-14 otherwise.
      expect(Math.abs(res.fid - c.symmetric_eigh_thresholded)).toBeLessThan(1e-11 * c.symmetric_eigh);
      expect(Math.abs(res.fid - c.pytorch_fid_sqrtm)).toBeLessThan(c.rank1 < c.d ? 5e-8 : 1e-12);
      expect(Math.abs(res.fid - c.symmetric_eigh)).toBeLessThan(c.rank1 < c.d ? 5e-8 : 1e-12);
      expect(res.offset).toBe(0);
      expect(res.rank1).toBe(c.rank1);
      // Full rank takes the Cholesky congruence; the eigenvector route must agree with it.
      const eigen = frechetDistance({ mu: mu1, sigma: cov1 }, { mu: s2.mean(), sigma: s2.covariance() }, { route: 'eigen' });
      expect(Math.abs(eigen.fid - res.fid)).toBeLessThan(1e-11 * c.symmetric_eigh);
      if (c.rank1 < c.d) expect(res.warnings.join('\n')).toMatch(/has 40 samples, fewer than the 64 feature dimensions/);
      else expect(res.warnings).toEqual([]);
    });
  }

  it('FID of a set with itself is 0 up to rounding, and of shifted means is ‖Δμ‖²', () => {
    setLinalgBackend(backend);
    const d = 16;
    const s = new FeatureStats(d).add(features('self', 200, d));
    const g = { mu: s.mean(), sigma: s.covariance() };
    expect(Math.abs(frechetDistance(g, g).fid)).toBeLessThan(1e-12);
    const shifted = { mu: g.mu.map((v) => v + 0.5), sigma: g.sigma };
    expect(frechetDistance(g, shifted).fid).toBeCloseTo(d * 0.25, 10);
    // Statistics of different feature extractors are a usage error (exit 2), naming both widths.
    expect(() => frechetDistance(g, { mu: new Float64Array(3), sigma: new Float64Array(9) })).toThrow(UsageError);
    expect(() => frechetDistance(g, { mu: new Float64Array(3), sigma: new Float64Array(9) })).toThrow(/feature dimensions differ \(16 and 3\)/);
  });

  it('stats merged from shards equal the unsharded stats', () => {
    setLinalgBackend(backend);
    const d = 24;
    const all = features('shards', 301, d);
    const whole = new FeatureStats(d).add(all);
    const shards = [0, 97, 180, 301].slice(1).map((end, i, ends) => new FeatureStats(d).add(all.subarray((i === 0 ? 0 : ends[i - 1]!) * d, end * d)));
    // A shard rebuilt from its serialised sums merges the same way.
    const s0 = shards[0]!;
    shards[0] = new FeatureStats(d, { n: s0.n, sum: s0.sum, sumOuter: s0.sumOuter() });
    const merged = FeatureStats.mergeAll(shards);
    expect(merged.n).toBe(301);
    const a = whole.covariance();
    const b = merged.covariance();
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThan(1e-15);
    whole.mean().forEach((v, i) => expect(Math.abs(v - merged.mean()[i]!)).toBeLessThan(1e-15));
    expect(() => whole.merge(new FeatureStats(d + 1))).toThrow(/dimensions differ \(24 and 25\)/);
  });

  it('KID equals torch-fidelity (same numpy subsets, unbiased MMD², mean and np.std)', () => {
    setLinalgBackend(backend);
    const c = ref.kid;
    const f1 = Float64Array.from(features('kid-a', c.n1, c.d));
    const f2 = scaled(features('kid-b', c.n2, c.d), 0.9, 0.02);
    const res = kernelInceptionDistance({ data: f1, n: c.n1, d: c.d }, { data: f2, n: c.n2, d: c.d }, { subsets: c.subsets, subsetSize: c.subset_size });
    res.values.forEach((v, i) => expect(Math.abs(v - c.values[i])).toBeLessThan(1e-12));
    expect(res.mean).toBeCloseTo(c.mean, 13);
    expect(res.std).toBeCloseTo(c.std, 13);
    expect(mmd2PolynomialUnbiased(f1.subarray(0, 250 * c.d), f2, 250, c.d)).toBeCloseTo(c.mmd_first250_vs_all, 12);
    // A subset larger than a set is capped at the smaller set.
    expect(kernelInceptionDistance({ data: f1, n: c.n1, d: c.d }, { data: f2, n: c.n2, d: c.d }, { subsets: 1, subsetSize: 5000 }).subsetSize).toBe(250);
  });

  it('precision and recall equal the k-NN manifold reference', () => {
    setLinalgBackend(backend);
    const c = ref.precision_recall;
    const real = { data: features('prc-real', c.n_real, c.d), n: c.n_real, d: c.d };
    const fake = { data: scaled(features('prc-fake', c.n_fake, c.d), 1.15, 0.03), n: c.n_fake, d: c.d };
    const res = precisionRecall(real, fake, { k: c.k, blockRows: 64 });
    expect(res.precision).toBe(c.precision);
    expect(res.recall).toBe(c.recall);
    expect(c.precision).toBeGreaterThan(0);
    expect(c.precision).toBeLessThan(1);
  });
});

describe('Inception Score', () => {
  const c = ref.inception_score;
  const logits = new Float32Array(c.n * c.classes);
  const u = hashUniform('is-logits', c.n * c.classes);
  for (let i = 0; i < logits.length; i++) logits[i] = u[i]! * 8 - 4;
  for (let r = 0; r < c.n; r++) logits[r * c.classes + ((r * 37) % c.classes)] = Math.fround(logits[r * c.classes + ((r * 37) % c.classes)]! + 6);

  it('equals torch-fidelity with its seeded shuffle (RandomState(2020)), 10 splits, np.std', () => {
    const res = inceptionScore(logits, c.n, c.classes);
    res.scores.forEach((s, i) => expect(s).toBeCloseTo(c.scores[i], 11));
    expect(res.mean).toBeCloseTo(c.mean, 12);
    expect(res.std).toBeCloseTo(c.std, 12);
  });

  it('equals improved-gan without the shuffle', () => {
    const res = inceptionScore(logits, c.n, c.classes, { shuffle: false });
    expect(res.mean).toBeCloseTo(c.mean_no_shuffle, 12);
    expect(res.std).toBeCloseTo(c.std_no_shuffle, 12);
    expect(res.mean).not.toBeCloseTo(c.mean, 6);
  });

  it('refuses fewer samples than splits', () => {
    expect(() => inceptionScore(logits.subarray(0, 5 * c.classes), 5, c.classes)).toThrow(/5 samples cannot fill 10 splits/);
  });
});
