import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNpy, readNpz, serializeNpy, toFloat64, writeNpz } from '../src/io/npz.js';
import { ZipReader } from '../src/io/zip.js';

const DIR = path.join(__dirname, 'fixtures', 'npz');
const expected = JSON.parse(fs.readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as {
  mu: number[];
  sigma: number[];
  feats: number[];
  mat: number[];
  corners: Record<string, { dtype: string; shape: number[]; values: number[] }>;
};

const numbers = (d: ArrayLike<number | bigint>) => Array.from(d as ArrayLike<number | bigint>, Number);

describe('npz written by NumPy', () => {
  it.each(['fid_stats.npz', 'fid_stats_compressed.npz'])('%s: mu and sigma exactly (stored and deflated entries)', (name) => {
    const z = readNpz(path.join(DIR, name));
    expect([...z.keys()].sort()).toEqual(['mu', 'sigma']);
    expect(z.get('mu')!.shape).toEqual([6]);
    expect(z.get('sigma')!.shape).toEqual([6, 6]);
    expect(Array.from(toFloat64(z.get('mu')!, 'mu'))).toEqual(expected.mu);
    expect(Array.from(toFloat64(z.get('sigma')!, 'sigma'))).toEqual(expected.sigma);
  });

  it('clean-fid KID feature file (float32)', () => {
    const f = readNpz(path.join(DIR, 'kid_feats.npz')).get('feats')!;
    expect(f.dtype).toBe('float32');
    expect(f.shape).toEqual([40, 6]);
    expect(numbers(f.data)).toEqual(expected.feats);
  });

  it('big endian, Fortran order, ints, scalars and empty arrays come out C-ordered little-endian', () => {
    const z = readNpz(path.join(DIR, 'corners.npz'));
    for (const [k, w] of Object.entries(expected.corners)) {
      const a = z.get(k)!;
      expect(a.shape, k).toEqual(w.shape);
      expect(numbers(a.data), k).toEqual(w.values);
    }
    expect(z.get('be_f8')!.dtype).toBe('float64');
    expect(z.get('fortran_f4')!.dtype).toBe('float32');
  });

  it('header versions 1.0, 2.0 and 3.0', () => {
    const z = readNpz(path.join(DIR, 'header_versions.npz'));
    for (const v of ['v1', 'v2', 'v3']) expect(Array.from(z.get(v)!.data as Float64Array), v).toEqual(expected.mat);
  });
});

describe('npz writing', () => {
  it('round trips float64/float32 through our writer, stored and compressed, with numpy-style 64-byte headers', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-npz-'));
    const mu = Float64Array.from(expected.mu);
    const sigma = Float64Array.from(expected.sigma);
    for (const compressed of [false, true]) {
      const p = path.join(tmp, `s${compressed}.npz`);
      await writeNpz(p, { mu: { data: mu, shape: [6] }, sigma: { data: sigma, shape: [6, 6] }, f: { data: new Float32Array([1.5, -2]), shape: [1, 2] } }, { compressed });
      const z = readNpz(p);
      expect(Array.from(z.get('mu')!.data as Float64Array)).toEqual(expected.mu);
      expect(Array.from(z.get('sigma')!.data as Float64Array)).toEqual(expected.sigma);
      expect(z.get('f')!.shape).toEqual([1, 2]);
      const zip = ZipReader.open(p);
      expect(zip.entries.map((e) => e.method)).toEqual(compressed ? [8, 8, 8] : [0, 0, 0]);
      zip.close();
    }
    const npy = serializeNpy({ data: mu, shape: [6] });
    expect((10 + (npy[8]! | (npy[9]! << 8))) % 64).toBe(0);
    expect(Buffer.from(npy.subarray(10, 70)).toString('latin1')).toMatch(/^\{'descr': '<f8', 'fortran_order': False, 'shape': \(6,\), \} +$/);
    fs.rmSync(tmp, { recursive: true });
  });

  it('names the file and entry for bad arrays', () => {
    expect(() => parseNpy(new Uint8Array(20), 'x.npz:mu.npy')).toThrow(/x\.npz:mu\.npy: not a NumPy \.npy array/);
    const npy = serializeNpy({ data: new Float64Array(4), shape: [4] });
    expect(() => parseNpy(npy.subarray(0, npy.length - 8), 'a.npy')).toThrow(/shape \[4\] of float64 needs 32 bytes, the file holds 24/);
    expect(() => readNpz('/nonexistent/stats.npz')).toThrow(/stats\.npz: no such file/);
  });
});
