import { describe, expect, it } from 'vitest';
import { BatchSampler } from '../src/data/batch.js';
import { scoreCaptionFidelity } from '../src/data/caption_fidelity.js';
import type { Dataset, Sample } from '../src/data/dataset.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { tensorToRgb8 } from '../src/io/image.js';

/** n images of 2×1 pixels: pixel 0 is (i, 0, 255), pixel 1 is (255 − i, 128, 0). */
function tiny(n: number): Dataset<null> {
  return {
    length: n,
    width: 2,
    height: 1,
    get(i: number): Sample<null> {
      return { image: new Uint8Array([i, 0, 255, 255 - i, 128, 0]), caption: `img ${i}`, meta: null };
    },
  };
}

describe('BatchSampler', () => {
  it('visits every index once per epoch, in a new order each epoch, continuing across the boundary', () => {
    const s = new BatchSampler(tiny(10), { seed: 1 });
    const items = s.nextItems(30).map((it) => it.index);
    const epochs = [items.slice(0, 10), items.slice(10, 20), items.slice(20, 30)];
    for (const e of epochs) expect([...e].sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect(epochs[0]).not.toEqual(epochs[1]);
    expect(s.position).toEqual({ epoch: 2, index: 10 });
    expect(new BatchSampler(tiny(10), { seed: 1 }).nextItems(30).map((it) => it.index)).toEqual(items);
    expect(new BatchSampler(tiny(10), { seed: 2 }).nextItems(10).map((it) => it.index)).not.toEqual(epochs[0]);
    expect(new BatchSampler(tiny(4), { shuffle: false }).nextItems(6).map((it) => it.index)).toEqual([0, 1, 2, 3, 0, 1]);
  });

  it('resumes exactly from a saved position, flips included', () => {
    const ds = tiny(7);
    const straight = new BatchSampler(ds, { seed: 3, flip: true });
    const reference = Array.from({ length: 8 }, () => straight.nextItems(3));
    const first = new BatchSampler(ds, { seed: 3, flip: true });
    for (let k = 0; k < 5; k++) first.nextItems(3);
    const saved = JSON.parse(JSON.stringify(first.position));
    expect(saved).toEqual({ epoch: 2, index: 1 });
    const resumed = new BatchSampler(ds, { seed: 3, flip: true });
    resumed.seek(saved);
    for (let k = 5; k < 8; k++) expect(resumed.nextItems(3)).toEqual(reference[k]);
    expect(() => resumed.seek({ epoch: 0, index: 8 })).toThrow(RangeError);
  });

  it('maps bytes to [-1, 1] and mirrors columns of flipped samples', async () => {
    const s = new BatchSampler(tiny(64), { seed: 4, flip: true });
    const b = s.nextBatch(64);
    expect(b.images.shape).toEqual([64, 1, 2, 3]);
    const v = await b.images.data();
    const flips = b.flipped.filter(Boolean).length;
    // Binomial(64, 1/2): 5 standard deviations is ±20.
    expect(Math.abs(flips - 32)).toBeLessThan(20);
    b.indices.forEach((i, k) => {
      const left = [i / 127.5 - 1, -1, 1];
      const right = [(255 - i) / 127.5 - 1, 128 / 127.5 - 1, -1];
      const expected = b.flipped[k] ? [...right, ...left] : [...left, ...right];
      expected.forEach((e, c) => expect(v[6 * k + c]).toBeCloseTo(e, 6));
      // This dataset has no mirrorCaption, so captions are kept as they are.
      expect(b.captions[k]).toBe(`img ${i}`);
    });
    b.images.dispose();
  });

  it('keeps procedural captions true under flips by mirroring left/right', async () => {
    const ds = await ProceduralDataset.create({ size: 32, count: 40, seed: 8, cacheDir: null });
    const noFlip = new BatchSampler(ds, { seed: 5 }).nextBatch(40);
    expect(noFlip.flipped.every((f) => !f)).toBe(true);
    noFlip.images.dispose();
    const b = new BatchSampler(ds, { seed: 5, flip: true }).nextBatch(40);
    const images = await tensorToRgb8(b.images);
    let sideSwapped = 0;
    images.forEach((im, k) => {
      const original = ds.get(b.indices[k]!).caption;
      if (b.captions[k] !== original) sideSwapped++;
      expect(b.flipped[k] || b.captions[k] === original).toBe(true);
      expect(scoreCaptionFidelity(im, b.captions[k]!).score).toBe(1);
    });
    expect(sideSwapped).toBeGreaterThan(5);
    b.images.dispose();
  });
});
