import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { clipPixelValues, clipScore, clipScoreFromCosines } from '../src/eval/clip_score.js';
import { loadClipModel } from '../src/models/clip/clip_model.js';
import { hashUniform } from './helpers/hash_values.js';

// scripts/fixtures/clip_score_ref.py: HF CLIPImageProcessor's steps with PIL/numpy, the HF CLIPModel forward
// (float64 torch) of the committed tiny model, torchmetrics' and Hessel et al.'s score maths.
const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/clip_score_ref.json', import.meta.url), 'utf8'));
const MODEL = fileURLToPath(new URL('./fixtures/clip/tiny-clip-vision/clip/', import.meta.url));

function image(w: number, h: number): Uint8Array {
  return Uint8Array.from(hashUniform(`clip-image-${w}x${h}`, w * h * 3), (u) => Math.floor(u * 256));
}

const model = loadClipModel(MODEL);
afterAll(() => model.dispose());

describe('CLIP preprocessing', () => {
  for (const c of ref.pixels_224 as { width: number; height: number; every97: number[]; sum: number }[]) {
    it(`pixel values of a ${c.width}×${c.height} image equal CLIPImageProcessor's`, () => {
      const p = clipPixelValues(image(c.width, c.height), c.width, c.height, 224);
      expect(p.length).toBe(224 * 224 * 3);
      let worst = 0;
      c.every97.forEach((v, i) => (worst = Math.max(worst, Math.abs(p[i * 97]! - v))));
      expect(worst).toBe(0);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(c.sum, 1);
    });
  }
});

describe('CLIP-score on the tiny CLIPModel vs the HF forward', () => {
  const t = ref.tiny;
  const pixels = (t.sizes as [number, number][]).map(([w, h]) => clipPixelValues(image(w, h), w, h, 32));
  const pairs = [0, 1, 2].flatMap((i) => [0, 1, 2].map((j) => ({ pixels: pixels[i]!, caption: t.captions[j] as string })));

  it('names the model and reads logit_scale; logits_per_image = exp(logit_scale)·cos', () => {
    expect(model.name).toBe('clip');
    expect(model.logitScale).toBeCloseTo(t.logit_scale, 6);
    const images = model.encodeImages(pixels);
    const texts = model.encodeTexts(t.captions);
    const logits = model.logitsPerImage(images, texts);
    logits.forEach((row, i) => row.forEach((v, j) => expect(v).toBeCloseTo(t.logits_per_image[i][j], 4)));
  });

  it("torchmetrics' convention: 100·cos per pair, the mean clamped at 0", () => {
    const res = clipScore(
      model,
      pairs.map((p) => p.pixels),
      pairs.map((p) => p.caption),
    );
    expect(res.convention).toBe('torchmetrics');
    expect(res.model).toBe('clip');
    res.perSample.forEach((v, i) => expect(v).toBeCloseTo(t.torchmetrics_per_sample[i], 3));
    expect(res.score).toBe(t.torchmetrics); // the mean is negative here: clamped to 0
    const two = clipScore(model, [pixels[0]!, pixels[0]!], [t.captions[2], t.captions[0]]);
    expect(two.score).toBeCloseTo(t.torchmetrics_pairs_02_00, 3);
    expect(two.score).toBeGreaterThan(0);
  });

  it("Hessel et al.'s convention: mean of 2.5·max(cos, 0)", () => {
    const res = clipScoreFromCosines(t.cosine, 'hessel', model.name);
    expect(res.score).toBeCloseTo(t.hessel, 12);
    const viaModel = clipScore(
      model,
      pairs.slice(0, 6).map((p) => p.pixels),
      pairs.slice(0, 6).map((p) => p.caption),
      { convention: 'hessel', prefix: '' },
    );
    expect(viaModel.score).toBeCloseTo(t.hessel_first_two_rows, 5);
    expect(() => clipScoreFromCosines([], 'hessel', 'x')).toThrow(/no image–caption pairs/);
  });

  it('refuses mismatched images and captions', () => {
    expect(() => clipScore(model, pixels, ['one caption'])).toThrow(/3 images but 1 captions/);
  });
});
