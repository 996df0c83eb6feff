import { describe, expect, it } from 'vitest';
import {
  aggregateFidelity,
  analyzeProceduralImage,
  nearestPaletteColor,
  scoreCaptionFidelity,
  srgbToLab,
  type FidelityResult,
} from '../src/data/caption_fidelity.js';
import {
  COLOR_NAMES,
  PALETTE,
  POSITIONS,
  ProceduralDataset,
  SHAPES,
  type ProceduralAttributes,
  type ProceduralMeta,
} from '../src/data/procedural.js';
import { Rng } from '../src/util/rng.js';

function scoreAll(ds: ProceduralDataset, prompt: (meta: ProceduralMeta, i: number) => ProceduralAttributes | string, image?: (rgb: Uint8Array) => Uint8Array) {
  const results: FidelityResult[] = [];
  for (let i = 0; i < ds.length; i++) {
    const s = ds.get(i);
    results.push(scoreCaptionFidelity({ rgb: image ? image(s.image) : s.image, width: ds.width, height: ds.height }, prompt(s.meta, i)));
  }
  return results;
}

/** Another value from the list, chosen by the rng, never `not`. */
function other<T>(list: readonly T[], not: readonly T[], rng: Rng): T {
  const rest = list.filter((v) => !not.includes(v));
  return rest[rng.int(rest.length)]!;
}

describe('colour naming', () => {
  it('converts sRGB to CIE Lab (D65) as published', () => {
    const close = (a: number[], b: number[]) => a.forEach((v, i) => expect(v).toBeCloseTo(b[i]!, 1));
    close(srgbToLab([255, 255, 255]), [100, 0, 0]);
    close(srgbToLab([0, 0, 0]), [0, 0, 0]);
    // Standard reference values for the sRGB primaries.
    close(srgbToLab([255, 0, 0]), [53.24, 80.09, 67.2]);
    close(srgbToLab([0, 255, 0]), [87.73, -86.18, 83.18]);
    close(srgbToLab([0, 0, 255]), [32.3, 79.19, -107.86]);
  });

  it('names each palette colour as itself and nearby shades as the palette colour', () => {
    for (const name of COLOR_NAMES) {
      expect(nearestPaletteColor(PALETTE[name])).toBe(name);
      expect(nearestPaletteColor(PALETTE[name].map((v) => Math.min(255, Math.max(0, v + 15))))).toBe(name);
    }
  });
});

describe('caption fidelity on the generator’s own images', () => {
  for (const [size, floor] of [[64, 0.98], [32, 0.98], [16, 0.95]] as const) {
    it(`scores ≥ ${floor} per attribute at ${size}×${size}`, async () => {
      const ds = await ProceduralDataset.create({ size, count: 200, seed: 21, cacheDir: null });
      const summary = aggregateFidelity(scoreAll(ds, (_m, i) => ds.get(i).caption));
      expect(summary.count).toBe(200);
      expect(summary.score).toBeGreaterThanOrEqual(0.95);
      for (const key of ['color', 'position', 'shape', 'background', 'size'] as const) {
        expect(summary.accuracy[key], key).toBeGreaterThanOrEqual(floor);
      }
    });
  }

  it('stays above 0.95 with Gaussian pixel noise (σ = 12/255), as model samples have', async () => {
    const rng = new Rng(4);
    const noisy = (rgb: Uint8Array) => rgb.map((v) => Math.max(0, Math.min(255, Math.round(v + 12 * rng.normal()))));
    for (const size of [64, 16]) {
      const ds = await ProceduralDataset.create({ size, count: 100, seed: 22, cacheDir: null });
      expect(aggregateFidelity(scoreAll(ds, (m) => m, noisy)).score).toBeGreaterThanOrEqual(0.95);
    }
  });

  it('gives the same verdict for 0–1 float images', async () => {
    const ds = await ProceduralDataset.create({ size: 32, count: 20, seed: 23, cacheDir: null });
    for (let i = 0; i < ds.length; i++) {
      const s = ds.get(i);
      const a = scoreCaptionFidelity({ rgb: s.image, width: 32, height: 32 }, s.meta);
      const b = scoreCaptionFidelity({ rgb: Float32Array.from(s.image, (v) => v / 255), width: 32, height: 32 }, s.meta);
      expect(b.detected.shape).toBe(a.detected.shape);
      expect(b.score).toBe(a.score);
    }
  });
});

describe('caption fidelity against wrong prompts and non-images', () => {
  it('fails exactly the attribute that was changed', async () => {
    const ds = await ProceduralDataset.create({ size: 64, count: 80, seed: 24, cacheDir: null });
    const rng = new Rng(9);
    const attrs = ['color', 'position', 'shape', 'background'] as const;
    const wrong = scoreAll(ds, (m, i) => {
      const p: ProceduralAttributes = { shape: m.shape, color: m.color, background: m.background, position: m.position };
      const key = attrs[i % 4]!;
      if (key === 'color') p.color = other(COLOR_NAMES, [m.color, m.background], rng);
      if (key === 'background') p.background = other(COLOR_NAMES, [m.color, m.background], rng);
      if (key === 'shape') p.shape = other(SHAPES, [m.shape], rng);
      if (key === 'position') p.position = other(POSITIONS, [m.position], rng);
      return p;
    });
    wrong.forEach((r, i) => {
      const key = attrs[i % 4]!;
      expect(r[key], `${i} ${key}`).toBe(false);
      expect(r.score).toBe(0.75);
    });
  });

  it('scores near 0 when every attribute is wrong', async () => {
    const ds = await ProceduralDataset.create({ size: 32, count: 100, seed: 25, cacheDir: null });
    const rng = new Rng(10);
    const summary = aggregateFidelity(
      scoreAll(ds, (m) => ({
        shape: other(SHAPES, [m.shape], rng),
        color: other(COLOR_NAMES, [m.color, m.background], rng),
        background: other(COLOR_NAMES, [m.color, m.background], rng),
        position: other(POSITIONS, [m.position], rng),
      })),
    );
    expect(summary.score).toBeLessThanOrEqual(0.02);
  });

  it('scores uniform noise low and finds no shape in it', async () => {
    const ds = await ProceduralDataset.create({ size: 32, count: 100, seed: 26, cacheDir: null });
    const rng = new Rng(11);
    const results = scoreAll(ds, (m) => m, (rgb) => rgb.map(() => rng.int(256)));
    expect(aggregateFidelity(results).score).toBeLessThanOrEqual(0.1);
    expect(results.filter((r) => r.detected.shape !== null).length).toBeLessThanOrEqual(5);
  });

  it('credits only the background on an empty canvas', () => {
    const rgb = new Uint8Array(24 * 24 * 3);
    for (let i = 0; i < 24 * 24; i++) rgb.set(PALETTE.blue, 3 * i);
    const r = scoreCaptionFidelity({ rgb, width: 24, height: 24 }, 'a red circle in the center on a blue background');
    expect(r.detected.shape).toBeNull();
    expect(r.detected.position).toBeNull();
    expect([r.background, r.color, r.shape, r.position]).toEqual([true, false, false, false]);
    expect(r.score).toBe(0.25);
    expect(r.size).toBeNull();
  });

  it('rejects prompts outside the grammar and images below 16 px', () => {
    const rgb = new Uint8Array(16 * 16 * 3);
    expect(() => scoreCaptionFidelity({ rgb, width: 16, height: 16 }, 'a cat')).toThrow(/grammar/);
    expect(() => analyzeProceduralImage({ rgb: new Uint8Array(8 * 8 * 3), width: 8, height: 8 })).toThrow(/16×16/);
  });
});

describe('aggregateFidelity', () => {
  it('averages scores and per-attribute hits, size only over prompts that named one', () => {
    const base = { detected: {} as FidelityResult['detected'] };
    const results: FidelityResult[] = [
      { ...base, color: true, position: true, shape: true, background: true, size: true, score: 1 },
      { ...base, color: true, position: false, shape: false, background: true, size: null, score: 0.5 },
      { ...base, color: false, position: false, shape: true, background: true, size: false, score: 0.5 },
    ];
    const s = aggregateFidelity(results);
    expect(s.count).toBe(3);
    expect(s.score).toBeCloseTo(2 / 3, 12);
    expect(s.accuracy).toEqual({ color: 2 / 3, position: 1 / 3, shape: 2 / 3, background: 1, size: 0.5 });
  });
});
