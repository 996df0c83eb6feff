import { CLIP_MEAN, CLIP_STD, clipCropOrigin, clipResizeSize } from '../models/clip/preprocess.js';
import { cosineSimilarity, type ClipModel } from '../models/clip/clip_model.js';
import { pilResize8 } from './resize.js';
import { UsageError } from '../util/errors.js';

/**
 * CLIP-score of image–caption pairs, in the two conventions papers report (and always with the model's name,
 * since scores from ViT-B/32, B/16 and L/14 are not comparable):
 *
 * - 'torchmetrics' (torchmetrics.multimodal.CLIPScore; default model openai/clip-vit-large-patch14):
 *   100 · cos(E_I, E_C) per pair, then max(mean, 0): the clamp is applied to the mean.
 * - 'hessel' (Hessel et al. 2021, jmhessel/clipscore; ViT-B/32): 2.5 · max(cos, 0) per pair, then the mean;
 *   captions get the prefix "A photo depicts " first, as the reference code does.
 *
 * Pixels follow HF CLIPImageProcessor exactly: PIL bicubic on uint8 to shortest side = size (the other side
 * ⌊size · long / short⌋), centre crop (offsets ⌊(side − size)/2⌋), x · (1/255) in float64 stored as float32,
 * then (x − mean) / std in float32 with OpenAI's mean/std.
 */

export type ClipScoreConvention = 'torchmetrics' | 'hessel';
export const CLIP_SCORE_CONVENTIONS: readonly ClipScoreConvention[] = ['torchmetrics', 'hessel'];
export const HESSEL_PREFIX = 'A photo depicts ';

export interface ClipScoreResult {
  convention: ClipScoreConvention;
  /** The CLIP model the score was computed with (HF name or folder). */
  model: string;
  score: number;
  /** Per pair, in the convention's scale: 100·cos (torchmetrics, before the clamp of the mean) or 2.5·max(cos, 0). */
  perSample: Float64Array;
  /** Cosine similarity of each pair. */
  cosine: Float64Array;
  n: number;
}

/** Scores from the cosine of each pair. */
export function clipScoreFromCosines(cosine: ArrayLike<number>, convention: ClipScoreConvention, model: string): ClipScoreResult {
  const n = cosine.length;
  if (n === 0) throw new UsageError('CLIP-score: no image–caption pairs');
  const cos = Float64Array.from(cosine);
  let perSample: Float64Array;
  let score: number;
  if (convention === 'torchmetrics') {
    perSample = cos.map((c) => 100 * c);
    score = Math.max(perSample.reduce((a, b) => a + b, 0) / n, 0);
  } else if (convention === 'hessel') {
    perSample = cos.map((c) => 2.5 * Math.max(c, 0));
    score = perSample.reduce((a, b) => a + b, 0) / n;
  } else {
    throw new UsageError(`CLIP-score: unknown convention '${String(convention)}' (expected ${CLIP_SCORE_CONVENTIONS.join(' or ')})`);
  }
  return { convention, model, score, perSample, cosine: cos, n };
}

export interface ClipScoreOptions {
  convention?: ClipScoreConvention;
  /** Caption prefix; default "A photo depicts " for 'hessel', none for 'torchmetrics'. */
  prefix?: string;
}

/** pixels: CLIP pixel values (clipPixelValues, HWC); captions[i] belongs to pixels[i]. */
export function clipScore(model: ClipModel, pixels: readonly Float32Array[], captions: readonly string[], opts: ClipScoreOptions = {}): ClipScoreResult {
  const convention = opts.convention ?? 'torchmetrics';
  if (pixels.length !== captions.length) throw new UsageError(`CLIP-score: ${pixels.length} images but ${captions.length} captions`);
  const prefix = opts.prefix ?? (convention === 'hessel' ? HESSEL_PREFIX : '');
  const images = model.encodeImages(pixels);
  const texts = model.encodeTexts(captions.map((c) => prefix + c));
  return clipScoreFromCosines(
    images.map((im, i) => cosineSimilarity(im, texts[i]!)),
    convention,
    model.name,
  );
}

/**
 * HF CLIPImageProcessor's pixel_values for one RGB uint8 image (HWC, interleaved), as HWC float32
 * [size, size, 3] for ClipVisionModel (transpose to NCHW to compare with transformers' output).
 */
export function clipPixelValues(rgb: Uint8Array, width: number, height: number, size = 224): Float32Array {
  if (rgb.length !== width * height * 3) throw new Error(`clipPixelValues: ${rgb.length} bytes do not form a ${width}×${height} RGB image`);
  const target = clipResizeSize(width, height, size);
  const resized = target.width === width && target.height === height ? rgb : pilResize8(rgb, width, height, 3, target.width, target.height, 'bicubic');
  const { left, top } = clipCropOrigin(target.width, target.height, size);
  const mean = CLIP_MEAN.map(Math.fround);
  const std = CLIP_STD.map(Math.fround);
  const out = new Float32Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        const v = resized[((y + top) * target.width + (x + left)) * 3 + c]!;
        const scaled = Math.fround(v * (1 / 255));
        out[(y * size + x) * 3 + c] = Math.fround(Math.fround(scaled - mean[c]!) / std[c]!);
      }
    }
  }
  return out;
}
