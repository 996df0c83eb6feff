import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  applyColorJitter,
  Augmenter,
  flipHorizontal,
  hsvToRgb,
  jitterRange,
  pasteBox,
  resizedCrop,
  rgbToHsv,
  roundHalfEven,
  sampleBeta,
  sampleColorJitter,
  sampleCutMix,
  sampleGamma,
  sampleResizedCropBox,
  type FloatImage,
} from '../src/data/augment.js';
import { BatchSampler } from '../src/data/batch.js';
import type { Dataset } from '../src/data/dataset.js';
import { parseProceduralCaption, PALETTE, ProceduralDataset } from '../src/data/procedural.js';
import { previewAugmentations } from '../src/cli/commands/preview_aug.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

function image(width: number, height: number, values: number[]): FloatImage {
  return { data: Float32Array.from(values), width, height };
}

function randomImage(rng: Rng, width: number, height: number): FloatImage {
  return { data: rng.fillUniform(new Float32Array(width * height * 3), 0, 1), width, height };
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  expect(worst).toBeLessThanOrEqual(tol);
}

function meanVar(xs: number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [m, xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)];
}

describe('colour ops (torchvision ColorJitter semantics)', () => {
  it('brightness scales every channel and clamps at 1', () => {
    const out = adjustBrightness(image(2, 1, [0.2, 0.5, 0.9, 0, 0.6, 0.1]), 1.5);
    expectClose(out.data, [0.3, 0.75, 1, 0, 0.9, 0.15]);
  });

  it('contrast blends towards the mean greyscale of the whole image', () => {
    const px = [0.2, 0.4, 0.6, 1, 0, 0.5];
    const grey0 = 0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6;
    const grey1 = 0.2989 * 1 + 0.587 * 0 + 0.114 * 0.5;
    const mean = (grey0 + grey1) / 2;
    const f = 0.5;
    const out = adjustContrast(image(2, 1, px), f);
    expectClose(out.data, px.map((v) => Math.min(1, Math.max(0, f * v + (1 - f) * mean))));
    // Factor 0 is a flat grey image at the mean.
    expectClose(adjustContrast(image(2, 1, px), 0).data, new Array(6).fill(mean));
  });

  it('saturation blends each pixel with its own greyscale value', () => {
    const px = [0.2, 0.4, 0.6, 1, 0, 0.5];
    const greys = [0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, 0.2989 * 1 + 0.114 * 0.5];
    expectClose(adjustSaturation(image(2, 1, px), 0).data, [greys[0], greys[0], greys[0], greys[1], greys[1], greys[1]] as number[]);
    const f = 2;
    const expected = px.map((v, i) => Math.min(1, Math.max(0, f * v + (1 - f) * greys[Math.floor(i / 3)]!)));
    expectClose(adjustSaturation(image(2, 1, px), f).data, expected);
  });

  it('hue rotates pure colours around the wheel', () => {
    const red = image(1, 1, [1, 0, 0]);
    expectClose(adjustHue(red, 1 / 3).data, [0, 1, 0]);
    expectClose(adjustHue(red, -1 / 3).data, [0, 0, 1]);
    expectClose(adjustHue(red, 1 / 6).data, [1, 1, 0]);
    expectClose(adjustHue(red, 0.5).data, [0, 1, 1]);
    // Greys have no hue to rotate.
    expectClose(adjustHue(image(1, 1, [0.3, 0.3, 0.3]), 0.25).data, [0.3, 0.3, 0.3]);
  });

  it('a third of a turn permutes channels (r,g,b) → (b,r,g) for any pixel, and HSV round-trips', () => {
    const img = randomImage(new Rng(5), 8, 8);
    const d = img.data;
    const rotated = Array.from(d, (_, i) => d[i - (i % 3) + ((i % 3) + 2) % 3]!);
    expectClose(adjustHue(img, 1 / 3).data, rotated, 2e-6);
    for (let i = 0; i < d.length; i += 3) expectClose(hsvToRgb(...rgbToHsv(d[i]!, d[i + 1]!, d[i + 2]!)), [d[i]!, d[i + 1]!, d[i + 2]!], 1e-6);
    // A hand-worked HSV value: (0.8, 0.4, 0.2) has chroma 0.6, so h = ((0.4 − 0.2) / 0.6) / 6 = 1/18.
    expectClose(rgbToHsv(0.8, 0.4, 0.2), [1 / 18, 0.75, 0.8], 1e-12);
  });

  it('factor ranges follow torchvision: [max(0, 1−b), 1+b], hue [−h, h], identities dropped', () => {
    expect(jitterRange(0.4, 'brightness')).toEqual([0.6, 1.4]);
    expect(jitterRange(1.5, 'contrast')).toEqual([0, 2.5]);
    expect(jitterRange(0.1, 'hue')).toEqual([-0.1, 0.1]);
    expect(jitterRange([0.5, 0.7], 'saturation')).toEqual([0.5, 0.7]);
    expect(jitterRange(0, 'brightness')).toBeNull();
    expect(jitterRange(0, 'hue')).toBeNull();
    expect(() => jitterRange(0.6, 'hue')).toThrow(/hue/);
    expect(() => jitterRange([1.2, 0.8], 'contrast')).toThrow(/min ≤ max/);
  });

  it('draws every op order about equally often and factors inside their ranges; the order is applied as drawn', () => {
    const ranges = { brightness: [0.6, 1.4], contrast: [0.7, 1.3], saturation: [0, 2], hue: [-0.1, 0.1] } as const;
    const rng = new Rng(11);
    const firstCounts = new Map<string, number>();
    const trials = 4000;
    const problems: string[] = [];
    for (let t = 0; t < trials; t++) {
      const p = sampleColorJitter(rng, { brightness: [0.6, 1.4], contrast: [0.7, 1.3], saturation: [0, 2], hue: [-0.1, 0.1] });
      if ([...p.order].sort().join() !== 'brightness,contrast,hue,saturation') problems.push(`order ${p.order.join()}`);
      for (const op of p.order) {
        const [lo, hi] = ranges[op];
        if (!(p.factors[op]! >= lo && p.factors[op]! < hi)) problems.push(`${op} ${p.factors[op]}`);
      }
      firstCounts.set(p.order[0]!, (firstCounts.get(p.order[0]!) ?? 0) + 1);
    }
    expect(problems).toEqual([]);
    // Binomial(4000, 1/4): sd ≈ 27, so ±150 is over 5 sd.
    for (const count of firstCounts.values()) expect(Math.abs(count - trials / 4)).toBeLessThan(150);

    const img = randomImage(new Rng(2), 4, 3);
    const params = { order: ['contrast', 'brightness'] as const, factors: { brightness: 1.3, contrast: 0.6 } };
    expectClose(applyColorJitter(img, { order: [...params.order], factors: params.factors }).data, adjustBrightness(adjustContrast(img, 0.6), 1.3).data);
    // Order matters (brightness clamps), which is why it is drawn.
    const other = applyColorJitter(img, { order: ['brightness', 'contrast'], factors: params.factors }).data;
    expect(Math.max(...other.map((v, i) => Math.abs(v - adjustBrightness(adjustContrast(img, 0.6), 1.3).data[i]!)))).toBeGreaterThan(1e-3);
  });
});

describe('RandomResizedCrop', () => {
  it('rounds halves to even like Python', () => {
    expect([0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 7].map(roundHalfEven)).toEqual([0, 2, 2, 4, 2, 3, 7]);
  });

  it('draws areas and aspect ratios uniformly inside the bounds, at uniform positions', () => {
    const rng = new Rng(3);
    const W = 100;
    const H = 100;
    const areas: number[] = [];
    const logRatios: number[] = [];
    const tops: number[] = [];
    for (let t = 0; t < 3000; t++) {
      // Every first attempt fits at these bounds (largest side √(0.5·10⁴·4/3) ≈ 82), so no retries bias the draw.
      const b = sampleResizedCropBox(rng, W, H, { scale: [0.25, 0.5], ratio: [3 / 4, 4 / 3] });
      expect(b.top >= 0 && b.left >= 0 && b.top + b.height <= H && b.left + b.width <= W).toBe(true);
      const frac = (b.width * b.height) / (W * H);
      // Rounding each side moves the area by at most about (w + h) / 2 pixels.
      expect(frac).toBeGreaterThan(0.25 - (b.width + b.height) / 2 / (W * H) - 1e-9);
      expect(frac).toBeLessThan(0.5 + (b.width + b.height) / 2 / (W * H) + 1e-9);
      expect(b.width / b.height).toBeGreaterThan((3 / 4) * 0.97);
      expect(b.width / b.height).toBeLessThan((4 / 3) * 1.03);
      areas.push(frac);
      logRatios.push(Math.log(b.width / b.height));
      if (b.height < H) tops.push(b.top / (H - b.height));
    }
    const [areaMean, areaVar] = meanVar(areas);
    expect(Math.abs(areaMean - 0.375)).toBeLessThan(0.004);
    expect(Math.abs(areaVar - 0.25 ** 2 / 12)).toBeLessThan(0.0006);
    expect(Math.abs(meanVar(logRatios)[0])).toBeLessThan(0.01);
    expect(Math.abs(meanVar(tops)[0] - 0.5)).toBeLessThan(0.02);
  });

  it('falls back to the largest centred crop with the aspect clamped into range', () => {
    const rng = new Rng(1);
    // Ratio ≥ 2 at full area never fits a square image: after 10 tries, a 64×32 centred band.
    expect(sampleResizedCropBox(rng, 64, 64, { scale: [1, 1], ratio: [2, 3] })).toEqual({ top: 16, left: 0, height: 32, width: 64 });
    // A tall image (ratio 1/3 < 3/4): full width, height 30 / 0.75 = 40, centred.
    expect(sampleResizedCropBox(rng, 30, 90, { scale: [1, 1], ratio: [3 / 4, 4 / 3] })).toEqual({ top: 25, left: 0, height: 40, width: 30 });
    // A wide one (ratio 3 > 4/3): full height, width 20 · 4/3 = 26.67 → 27.
    expect(sampleResizedCropBox(rng, 60, 20, { scale: [1, 1], ratio: [3 / 4, 4 / 3] })).toEqual({ top: 0, left: 16, height: 20, width: 27 });
  });
});

/** torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False), written out per pixel. */
function torchBilinear(img: FloatImage, box: { top: number; left: number; height: number; width: number }, outW: number, outH: number): number[] {
  const out: number[] = [];
  const coord = (o: number, inSize: number, outSize: number): [number, number, number] => {
    const src = Math.max(0, (o + 0.5) * (inSize / outSize) - 0.5);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    return [i0, i1, src - i0];
  };
  for (let y = 0; y < outH; y++) {
    const [y0, y1, fy] = coord(y, box.height, outH);
    for (let x = 0; x < outW; x++) {
      const [x0, x1, fx] = coord(x, box.width, outW);
      for (let c = 0; c < 3; c++) {
        const at = (yy: number, xx: number) => img.data[3 * ((box.top + yy) * img.width + box.left + xx) + c]!;
        out.push((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1)));
      }
    }
  }
  return out;
}

describe('resizedCrop (bilinear, half-pixel centres)', () => {
  const img = randomImage(new Rng(9), 7, 5);
  const box = { top: 1, left: 2, height: 3, width: 4 };

  it('matches the per-pixel bilinear formula when enlarging, with or without antialias', () => {
    const expected = torchBilinear(img, box, 9, 6);
    expectClose(resizedCrop(img, box, 9, 6, { antialias: false }).data, expected, 1e-6);
    expectClose(resizedCrop(img, box, 9, 6, { antialias: true }).data, expected, 1e-6);
  });

  it('matches plain bilinear when shrinking without antialias', () => {
    const full = { top: 0, left: 0, height: 5, width: 7 };
    expectClose(resizedCrop(img, full, 3, 2, { antialias: false }).data, torchBilinear(img, full, 3, 2), 1e-6);
  });

  it('an unscaled crop copies the pixels exactly', () => {
    const out = resizedCrop(img, box, 4, 3);
    const expected: number[] = [];
    for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) for (let c = 0; c < 3; c++) expected.push(img.data[3 * ((1 + y) * 7 + 2 + x) + c]!);
    expect(Array.from(out.data)).toEqual(expected);
  });

  it('antialiased halving uses the widened triangle filter (hand-worked 4 → 2)', () => {
    const row = [0.1, 0.5, 0.3, 0.9];
    const src = image(4, 1, row.flatMap((v) => [v, v, v]));
    const out = resizedCrop(src, { top: 0, left: 0, height: 1, width: 4 }, 2, 1, { antialias: true });
    // Output centres sit at source x = 1 and 3; support 2 gives taps at distance 0.5, 0.5, 1.5 → weights ¾, ¾, ¼.
    const o0 = (0.75 * 0.1 + 0.75 * 0.5 + 0.25 * 0.3) / 1.75;
    const o1 = (0.25 * 0.5 + 0.75 * 0.3 + 0.75 * 0.9) / 1.75;
    expectClose(out.data, [o0, o0, o0, o1, o1, o1], 1e-6);
  });
});

describe('flip', () => {
  it('mirrors columns and is its own inverse', () => {
    const img = image(3, 1, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(flipHorizontal(img).data)).toEqual([7, 8, 9, 4, 5, 6, 1, 2, 3]);
    const r = randomImage(new Rng(4), 5, 4);
    expect(flipHorizontal(flipHorizontal(r)).data).toEqual(r.data);
  });
});

describe('Gamma, Beta and CutMix', () => {
  it('Gamma(k) has mean k and variance k (Marsaglia–Tsang, boosted below 1)', () => {
    const rng = new Rng(21);
    for (const k of [0.3, 1, 2.5]) {
      const xs = Array.from({ length: 20000 }, () => sampleGamma(rng, k));
      const [m, v] = meanVar(xs);
      // Standard error of the mean is √(k/N) ≤ 0.011; of the variance a few times that.
      expect(Math.abs(m - k)).toBeLessThan(5 * Math.sqrt(k / 20000));
      expect(Math.abs(v - k) / k).toBeLessThan(0.08);
    }
  });

  it('Beta(α, α) has mean ½ and variance 1 / (4(2α + 1))', () => {
    const rng = new Rng(22);
    for (const a of [0.2, 1, 3]) {
      const xs = Array.from({ length: 20000 }, () => sampleBeta(rng, a, a));
      const [m, v] = meanVar(xs);
      const expectedVar = 1 / (4 * (2 * a + 1));
      expect(Math.abs(m - 0.5)).toBeLessThan(5 * Math.sqrt(expectedVar / 20000));
      expect(Math.abs(v - expectedVar) / expectedVar).toBeLessThan(0.05);
      expect(xs.every((x) => x >= 0 && x <= 1)).toBe(true);
    }
  });

  it('λ is exactly the share of pixels left, and ≈ the drawn λ when the box is not clipped', () => {
    const rng = new Rng(23);
    const W = 40;
    const H = 30;
    const zeros = image(W, H, new Array(W * H * 3).fill(0));
    const ones = image(W, H, new Array(W * H * 3).fill(1));
    let unclipped = 0;
    for (let t = 0; t < 500; t++) {
      const d = sampleCutMix(rng, W, H, 1);
      const mixed = pasteBox(zeros, ones, d.box);
      let pasted = 0;
      for (let i = 0; i < mixed.data.length; i += 3) pasted += mixed.data[i]!;
      expect(d.lambda).toBeCloseTo(1 - pasted / (W * H), 12);
      const cutW = Math.floor(W * Math.sqrt(1 - d.sampledLambda));
      const cutH = Math.floor(H * Math.sqrt(1 - d.sampledLambda));
      const clipped = d.box.left === 0 || d.box.top === 0 || d.box.left + d.box.width === W || d.box.top + d.box.height === H;
      if (!clipped && cutW > 1 && cutH > 1) {
        unclipped++;
        // Whole-pixel truncation loses under two pixels per side.
        expect(Math.abs((1 - d.lambda) - (1 - d.sampledLambda))).toBeLessThan(2 / W + 2 / H);
      }
    }
    expect(unclipped).toBeGreaterThan(20);
  });
});

function toySource(count: number, w: number, h: number): Dataset<null> & { images: Uint8Array[] } {
  const rng = new Rng(77);
  const images = Array.from({ length: count }, () => Uint8Array.from({ length: w * h * 3 }, () => rng.int(256)));
  return { length: count, width: w, height: h, images, get: (i) => ({ image: images[i]!, caption: `sample ${i}`, meta: null }) };
}

describe('Augmenter', () => {
  const everything = {
    flip: 0.5,
    crop: { scale: [0.3, 1] as [number, number] },
    color_jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1 },
    cutmix: { p: 0.7 },
  };

  it('is a pure function of (seed, epoch, index): order, instances and earlier calls do not matter', () => {
    const src = toySource(12, 16, 12);
    const a = Augmenter.fromInput(everything);
    const keys = Array.from({ length: 12 }, (_, index) => ({ seed: 5, epoch: 2, index }));
    const forward = keys.map((k) => a.augment(src, k));
    const b = Augmenter.fromInput(everything);
    const backward = [...keys].reverse().map((k) => b.augment(src, k)).reverse();
    for (let i = 0; i < keys.length; i++) {
      expect(backward[i]!.image).toEqual(forward[i]!.image);
      expect(backward[i]!.record).toEqual(forward[i]!.record);
    }
    const nextEpoch = keys.map((k) => a.augment(src, { ...k, epoch: 3 }));
    const otherSeed = keys.map((k) => a.augment(src, { ...k, seed: 6 }));
    const differs = (xs: typeof forward) => xs.filter((x, i) => !Buffer.from(x.image).equals(Buffer.from(forward[i]!.image))).length;
    expect(differs(nextEpoch)).toBeGreaterThan(8);
    expect(differs(otherSeed)).toBeGreaterThan(8);
  });

  it('each stage draws from its own stream, so switching one on leaves the others unchanged', () => {
    const src = toySource(30, 8, 8);
    const flipOnly = Augmenter.fromInput({ flip: 0.5 });
    const withJitter = Augmenter.fromInput({ flip: 0.5, color_jitter: { brightness: 0.3 } });
    const flipsA = Array.from({ length: 30 }, (_, index) => flipOnly.augment(src, { seed: 1, epoch: 0, index }).record.flipped);
    const flipsB = Array.from({ length: 30 }, (_, index) => withJitter.augment(src, { seed: 1, epoch: 0, index }).record.flipped);
    expect(flipsB).toEqual(flipsA);
    expect(flipsA.filter(Boolean).length).toBeGreaterThan(5);
    expect(flipsA.filter((f) => !f).length).toBeGreaterThan(5);
  });

  it('with no stages configured it returns the image unchanged and reports itself inactive', () => {
    const src = toySource(3, 6, 5);
    const aug = Augmenter.fromInput({});
    expect(aug.active).toBe(false);
    const out = aug.augment(src, { seed: 0, epoch: 0, index: 1 });
    expect(out.image).toEqual(src.images[1]);
    expect(out.caption).toBe('sample 1');
    expect(out.captionWeight).toBe(1);
  });

  it('a fixed brightness factor is applied per pixel and rounded once', () => {
    const src = toySource(2, 5, 4);
    const out = Augmenter.fromInput({ color_jitter: { brightness: [1.5, 1.5] } }).augment(src, { seed: 0, epoch: 0, index: 0 });
    // The working image is float32, so the product is rounded to float32 before the final rounding to 8 bits.
    const f32 = Math.fround;
    expect(Array.from(out.image)).toEqual(Array.from(src.images[0]!, (v) => Math.round(Math.min(1, f32(1.5 * f32(v / 255))) * 255)));
  });

  it('CutMix pastes the partner as that sample looks this epoch and picks the dominant caption', () => {
    const src = toySource(10, 20, 16);
    const withMix = Augmenter.fromInput({ flip: 0.5, crop: { scale: [0.5, 1] }, cutmix: { p: 1, alpha: 0.5 } });
    const noMix = Augmenter.fromInput({ flip: 0.5, crop: { scale: [0.5, 1] } });
    let partnerCaptionChosen = 0;
    for (let index = 0; index < 10; index++) {
      const key = { seed: 3, epoch: 1, index };
      const out = withMix.augment(src, key);
      const cm = out.record.cutmix!;
      expect(cm.partnerIndex).not.toBe(index);
      const self = noMix.augment(src, key);
      const partner = noMix.augment(src, { ...key, index: cm.partnerIndex });
      expect(cm.partner).toEqual({ crop: partner.record.crop, flipped: partner.record.flipped, jitter: null });
      const { top, left, height, width } = cm.box;
      for (let y = 0; y < 16; y++) {
        for (let x = 0; x < 20; x++) {
          const inBox = y >= top && y < top + height && x >= left && x < left + width;
          const i = 3 * (y * 20 + x);
          expect(out.image.subarray(i, i + 3)).toEqual((inBox ? partner : self).image.subarray(i, i + 3));
        }
      }
      if (cm.lambda >= 0.5) {
        expect(out.caption).toBe(`sample ${index}`);
        expect(out.captionWeight).toBeCloseTo(cm.lambda, 12);
      } else {
        partnerCaptionChosen++;
        expect(out.caption).toBe(`sample ${cm.partnerIndex}`);
        expect(out.captionWeight).toBeCloseTo(1 - cm.lambda, 12);
      }
    }
    expect(partnerCaptionChosen).toBeGreaterThan(0);
    const both = Augmenter.fromInput({ cutmix: { caption: 'both' } }).augment(src, { seed: 3, epoch: 1, index: 4 });
    const cm = both.record.cutmix!;
    expect(both.caption).toBe(cm.lambda >= 0.5 ? `sample 4 and sample ${cm.partnerIndex}` : `sample ${cm.partnerIndex} and sample 4`);
  });

  it('a run resumed from a saved sampler position sees the same augmented samples', () => {
    const src = toySource(7, 8, 6);
    const config = { flip: 0.5, crop: { scale: [0.4, 1] as [number, number] }, color_jitter: { hue: 0.2 }, cutmix: { p: 0.5 } };
    const run = (sampler: BatchSampler, batches: number) => {
      const aug = Augmenter.fromInput(config);
      return Array.from({ length: batches }, () => sampler.nextItems(3).map((it) => aug.augment(src, { seed: 9, epoch: it.epoch, index: it.index })));
    };
    const whole = run(new BatchSampler(src, { seed: 9 }), 6);
    const first = new BatchSampler(src, { seed: 9 });
    run(first, 2);
    const resumed = new BatchSampler(src, { seed: 9 });
    resumed.seek(first.position);
    const rest = run(resumed, 4);
    // Six batches of three from seven samples cross two epoch boundaries.
    expect(rest.map((b) => b.map((s) => s.image))).toEqual(whole.slice(2).map((b) => b.map((s) => s.image)));
    expect(rest.map((b) => b.map((s) => s.caption))).toEqual(whole.slice(2).map((b) => b.map((s) => s.caption)));
  });

  it('rejects bad settings with the key named', () => {
    expect(() => Augmenter.fromInput({ color_jitter: { hue: 0.7 } })).toThrow(UsageError);
    expect(() => Augmenter.fromInput({ color_jitter: { hue: 0.7 } })).toThrow(/augment\.color_jitter\.hue/);
    expect(() => Augmenter.fromInput({ crop: { scale: [1, 0.5] } })).toThrow(/augment\.crop\.scale: expected \[min, max\]/);
    expect(() => Augmenter.fromInput({ flips: 0.5 })).toThrow(/flips/);
  });
});

describe('flips keep procedural captions true', () => {
  it('the named side matches where the shape is after augmentation', async () => {
    const ds = await ProceduralDataset.create({ size: 32, count: 40, seed: 4, cacheDir: null });
    const aug = Augmenter.fromInput({ flip: 0.5 });
    let flipped = 0;
    let sided = 0;
    for (let index = 0; index < ds.length; index++) {
      const out = aug.augment(ds, { seed: 8, epoch: 0, index });
      const attrs = parseProceduralCaption(out.caption)!;
      expect(attrs).not.toBeNull();
      if (out.record.flipped) flipped++;
      if (!attrs.position.includes('left') && !attrs.position.includes('right')) continue;
      sided++;
      // Horizontal centroid of the pixels that are not the background colour.
      const bg = PALETTE[attrs.background];
      let sx = 0;
      let count = 0;
      for (let p = 0; p < 32 * 32; p++) {
        const d = Math.abs(out.image[3 * p]! - bg[0]) + Math.abs(out.image[3 * p + 1]! - bg[1]) + Math.abs(out.image[3 * p + 2]! - bg[2]);
        if (d > 30) {
          sx += p % 32;
          count++;
        }
      }
      expect(count).toBeGreaterThan(0);
      expect(sx / count < 16).toBe(attrs.position.includes('left'));
    }
    expect(flipped).toBeGreaterThan(5);
    expect(sided).toBeGreaterThan(10);
  });
});

describe('scaleforge curate preview-aug', () => {
  it('writes a grid of originals next to augmented versions', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'preview-aug-'));
    try {
      const out = join(dir, 'grid.png');
      const r = await previewAugmentations({ n: 4, seed: 2, size: 32, out });
      const meta = await sharp(out).metadata();
      // 4 samples → 2 pairs per row → 4 columns × 2 rows of 96 px cells (32 px × 3) with 14 px labels and 3 px padding.
      expect([meta.width, meta.height]).toEqual([3 + 4 * (96 + 3), 3 + 2 * (96 + 14 + 3)]);
      expect([r.width, r.height]).toEqual([meta.width, meta.height]);
      expect(r.indices).toEqual([0, 1, 2, 3]);
      // The left cell of the first pair is sample 0 itself, upscaled ×3: check its top-left pixel.
      const ds = await ProceduralDataset.create({ size: 32, count: 2048, seed: 0, cacheDir: null });
      const { data } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
      const at = 3 * (3 * meta.width! + 3);
      expect(Array.from(data.subarray(at, at + 3))).toEqual(Array.from(ds.get(0).image.subarray(0, 3)));
      // Same seed, same grid bytes: the preview shows what a run with that seed trains on.
      const again = await previewAugmentations({ n: 4, seed: 2, size: 32, out: join(dir, 'again.png') });
      expect(again.augmented.map((a) => a.record)).toEqual(r.augmented.map((a) => a.record));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads an image folder and refuses bad arguments', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'preview-aug-in-'));
    try {
      for (let i = 0; i < 3; i++) {
        await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 60 * i, g: 100, b: 200 } } }).png().toFile(join(dir, `im${i}.png`));
      }
      const r = await previewAugmentations({ input: dir, n: 8, size: 32, out: join(dir, 'out', 'g.png') });
      expect(r.indices).toEqual([0, 1, 2]);
      await expect(previewAugmentations({ n: 0, out: join(dir, 'x.png') })).rejects.toThrow(/--n/);
      await expect(previewAugmentations({ input: join(dir, 'missing'), out: join(dir, 'x.png') })).rejects.toThrow(UsageError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
