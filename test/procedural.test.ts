import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  COLOR_NAMES,
  PALETTE,
  POSITIONS,
  ProceduralDataset,
  SHAPES,
  SIZES,
  formatProceduralCaption,
  parseProceduralCaption,
  renderCoverage,
  shapeArea,
  type ProceduralAttributes,
} from '../src/data/procedural.js';
import { savePng } from '../src/io/image.js';

const tmp = await mkdtemp(join(tmpdir(), 'sf-procedural-'));
afterAll(() => rm(tmp, { recursive: true, force: true }));

function pixel(rgb: Uint8Array, size: number, x: number, y: number): number[] {
  const i = 3 * (y * size + x);
  return [rgb[i]!, rgb[i + 1]!, rgb[i + 2]!];
}

describe('caption grammar', () => {
  it('parses every caption it formats back to the same attributes', () => {
    let n = 0;
    for (const shape of SHAPES)
      for (const color of COLOR_NAMES)
        for (const background of COLOR_NAMES)
          for (const position of POSITIONS)
            for (const size of [undefined, ...SIZES]) {
              const a: ProceduralAttributes = { shape, color, background, position };
              if (size) a.size = size;
              expect(parseProceduralCaption(formatProceduralCaption(a))).toEqual(a);
              n++;
            }
    expect(n).toBe(4 * 8 * 8 * 5 * 3);
  });

  it('writes English articles and tolerates case, spacing and a final period', () => {
    expect(formatProceduralCaption({ shape: 'circle', color: 'orange', background: 'blue', position: 'top left' })).toBe(
      'an orange circle in the top left on a blue background',
    );
    expect(formatProceduralCaption({ shape: 'cross', color: 'red', background: 'orange', position: 'center', size: 'large' })).toBe(
      'a large red cross in the center on an orange background',
    );
    expect(parseProceduralCaption('  A Small  WHITE square in the bottom right on a black background. ')).toEqual({
      shape: 'square',
      color: 'white',
      background: 'black',
      position: 'bottom right',
      size: 'small',
    });
  });

  it('rejects text outside the grammar', () => {
    for (const bad of [
      'a red circle',
      'a pink circle in the top left on a blue background',
      'a red hexagon in the top left on a blue background',
      'a red circle in the middle left on a blue background',
      'a huge red circle in the top left on a blue background',
      'two red circles in the top left on a blue background',
    ]) {
      expect(parseProceduralCaption(bad)).toBeNull();
    }
  });
});

describe('rendering', () => {
  it('covers a pixel-aligned square exactly', () => {
    // Side 2 centred at (2,2) in a 4×4 image: pixels x,y ∈ {1,2} fully inside, the rest outside.
    const cov = renderCoverage(4, 4, 'square', 2, 2, 2);
    const expected = [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0];
    expect([...cov]).toEqual(expected);
  });

  it('integrates coverage to the analytic area of each shape', () => {
    for (const shape of SHAPES) {
      const e = 23.3;
      const cov = renderCoverage(40, 40, shape, 19.7, 20.2, e);
      const total = cov.reduce((s, v) => s + v, 0);
      // 16 point samples per pixel: the error is a fraction of the perimeter in pixels.
      expect(Math.abs(total - shapeArea(shape, e)) / shapeArea(shape, e)).toBeLessThan(0.02);
    }
  });

  it('draws the named colours: the border is the background, the shape centre is the shape colour', async () => {
    const ds = await ProceduralDataset.create({ size: 64, count: 300, seed: 11, cacheDir: null });
    for (let i = 0; i < ds.length; i++) {
      const { image, meta, caption } = ds.get(i);
      expect(meta.background).not.toBe(meta.color);
      expect(caption).toBe(formatProceduralCaption(meta));
      const bg = PALETTE[meta.background].join(',');
      let offBorder = 0;
      for (let k = 0; k < 64; k++) {
        for (const [x, y] of [[k, 0], [k, 63], [0, k], [63, k]] as const) if (pixel(image, 64, x, y).join(',') !== bg) offBorder++;
      }
      expect(offBorder).toBe(0);
      // The triangle is widest near its base, so probe below its box centre.
      const cx = Math.floor(meta.center[0] * 64);
      const cy = Math.floor(meta.center[1] * 64 + (meta.shape === 'triangle' ? meta.extent * 64 * 0.25 : 0));
      expect(pixel(image, 64, cx, cy)).toEqual([...PALETTE[meta.color]]);
      const [ax, ay] = { 'top left': [0.25, 0.25], 'top right': [0.75, 0.25], 'bottom left': [0.25, 0.75], 'bottom right': [0.75, 0.75], center: [0.5, 0.5] }[meta.position];
      expect(Math.abs(meta.center[0] - ax!)).toBeLessThanOrEqual(0.03);
      expect(Math.abs(meta.center[1] - ay!)).toBeLessThanOrEqual(0.03);
      expect(meta.extent / (meta.size === 'large' ? 0.38 : 0.24)).toBeGreaterThanOrEqual(0.94);
      expect(meta.extent / (meta.size === 'large' ? 0.38 : 0.24)).toBeLessThanOrEqual(1.06);
    }
  });

  it('is deterministic per (seed, index) and draws attributes evenly', async () => {
    const a = await ProceduralDataset.create({ size: 32, count: 2000, seed: 5, cacheDir: null });
    const b = await ProceduralDataset.create({ size: 32, count: 2000, seed: 5, cacheDir: null });
    const c = await ProceduralDataset.create({ size: 32, count: 2000, seed: 6, cacheDir: null });
    // Access order must not matter: b is read backwards.
    expect([...b.get(1999).image]).toEqual([...a.get(1999).image]);
    expect(b.get(3).caption).toBe(a.get(3).caption);
    let differ = 0;
    for (let i = 0; i < 50; i++) if (a.get(i).caption !== c.get(i).caption) differ++;
    expect(differ).toBeGreaterThan(40);
    const counts = new Map<string, number>();
    for (let i = 0; i < a.length; i++) {
      const m = a.get(i).meta;
      for (const key of [`shape:${m.shape}`, `color:${m.color}`, `pos:${m.position}`, `size:${m.size}`]) counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    // Binomial(2000, 1/k): allow 5 standard deviations.
    for (const [group, k] of [['shape', 4], ['color', 8], ['pos', 5], ['size', 2]] as const) {
      const keys = [...counts.keys()].filter((key) => key.startsWith(`${group}:`));
      expect(keys.length).toBe(k);
      const mean = 2000 / k;
      const sd = Math.sqrt(2000 * (1 / k) * (1 - 1 / k));
      for (const key of keys) expect(Math.abs(counts.get(key)! - mean)).toBeLessThan(5 * sd);
    }
  });

  it('mirrors captions by swapping left and right', async () => {
    const ds = await ProceduralDataset.create({ size: 16, count: 1, cacheDir: null });
    expect(ds.mirrorCaption('a small red circle in the top left on a blue background')).toBe(
      'a small red circle in the top right on a blue background',
    );
    expect(ds.mirrorCaption('a red circle in the center on a blue background')).toBe('a red circle in the center on a blue background');
    expect(() => ds.get(1)).toThrow(RangeError);
  });
});

describe('PNG cache', () => {
  it('writes PNGs and captions.jsonl once, then loads them instead of re-rendering', async () => {
    const opts = { size: 16, count: 12, seed: 3, cacheDir: tmp };
    const first = await ProceduralDataset.create(opts);
    const dir = first.cachePath!;
    const names = (await readdir(tmp)).sort();
    expect(names).toEqual([dir.split('/').pop()]);
    expect(names[0]).toMatch(/^procedural-[0-9a-f]{12}$/);
    const files = (await readdir(dir)).sort();
    expect(files.length).toBe(13);
    const lines = (await readFile(join(dir, 'captions.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[4].file_name).toBe('000004.png');
    expect(lines[4].text).toBe(first.get(4).caption);

    const memory = await ProceduralDataset.create({ ...opts, cacheDir: null });
    const again = await ProceduralDataset.create(opts);
    for (let i = 0; i < 12; i++) expect([...again.get(i).image]).toEqual([...memory.get(i).image]);

    // Overwrite one cached PNG: a reload must show it, proving the cache is what gets read.
    const grey = new Uint8Array(16 * 16 * 3).fill(77);
    await savePng(join(dir, '000002.png'), grey, 16, 16);
    const tampered = await ProceduralDataset.create(opts);
    expect([...tampered.get(2).image]).toEqual([...grey]);

    // A missing image makes the cache incomplete: it is rebuilt, not trusted.
    await rm(join(dir, '000005.png'));
    const rebuilt = await ProceduralDataset.create(opts);
    expect(existsSync(join(dir, '000005.png'))).toBe(true);
    expect([...rebuilt.get(2).image]).toEqual([...memory.get(2).image]);
    expect((await readdir(tmp)).length).toBe(1);
  });
});
