import type { RgbImage } from '../data/dataset.js';
import { imageAddon } from './image_addon.js';
import { resizeLanczos8 } from './pil_resize.js';
import type { CurateConfig } from './schema.js';

/**
 * Image-quality measures and the filters built on them. Measures are stored per image in the state file, so the
 * thresholds can change between runs without decoding anything again.
 *
 * All three pixel measures use luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601, as OpenCV's and PIL's greyscale) of
 * the image shrunk (Pillow's Lanczos-3) so its longest side is at most `analysis_size`: the variance of the Laplacian
 * grows with resolution, so measuring at one scale makes a single blur threshold mean the same for every image.
 */

export interface QualityMeasures {
  /** Mean luma, 0..1. */
  brightness: number;
  /** Shannon entropy of the 256-bin luma histogram, bits (0..8). */
  entropy: number;
  /** Population variance of the 4-neighbour Laplacian over interior pixels (OpenCV ksize=1 kernel). */
  blurVariance: number;
}

export function luma(rgb: Uint8Array, width: number, height: number): Float64Array {
  const n = width * height;
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = 0.299 * rgb[3 * i]! + 0.587 * rgb[3 * i + 1]! + 0.114 * rgb[3 * i + 2]!;
  return y;
}

export function meanBrightness(y: Float64Array): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i]!;
  return y.length > 0 ? s / y.length / 255 : 0;
}

/** Each luma value is rounded to its 8-bit bin. */
export function histogramEntropy(y: Float64Array): number {
  const hist = new Float64Array(256);
  for (let i = 0; i < y.length; i++) hist[Math.min(255, Math.max(0, Math.round(y[i]!)))]! += 1;
  let h = 0;
  for (const c of hist) {
    if (c === 0) continue;
    const p = c / y.length;
    h -= p * Math.log2(p);
  }
  return h;
}

/** 0 for images too small to have an interior (a side below 3). */
export function laplacianVariance(y: Float64Array, width: number, height: number): number {
  if (width < 3 || height < 3) return 0;
  let sum = 0;
  let sumSq = 0;
  let n = 0;
  for (let r = 1; r < height - 1; r++) {
    for (let c = 1; c < width - 1; c++) {
      const i = r * width + c;
      const v = y[i - width]! + y[i + width]! + y[i - 1]! + y[i + 1]! - 4 * y[i]!;
      sum += v;
      sumSq += v * v;
      n++;
    }
  }
  const mean = sum / n;
  return Math.max(0, sumSq / n - mean * mean);
}

/**
 * The image the measures are taken on: shrunk so its longest side is at most `analysisSize`, with Pillow's
 * Lanczos-3 (pil_resize.ts: native with the image addon, else the same arithmetic in JS, so the measures do not
 * depend on the build). The shorter side is rounded as sharp's `fit: 'inside'` rounds it.
 */
export function shrinkForAnalysis(img: RgbImage, analysisSize: number): RgbImage {
  const { rgb, width, height } = img;
  const long = Math.max(width, height);
  if (long <= analysisSize) return img;
  const factor = long / analysisSize;
  const w = width >= height ? analysisSize : Math.max(1, Math.round(width / factor));
  const h = width >= height ? Math.max(1, Math.round(height / factor)) : analysisSize;
  return { rgb: resizeLanczos8(rgb, width, height, 3, w, h), width: w, height: h };
}

/** The three measures of an image already at analysis size (native with the image addon: one pass, same sums). */
export function qualityOf(img: RgbImage): QualityMeasures {
  const addon = imageAddon();
  return addon && img.rgb.length === img.width * img.height * 3 ? addon.lumaMeasures(img.rgb, img.width, img.height) : qualityOfJs(img);
}

/** qualityOf in plain JS (the reference the native version is tested against). */
export function qualityOfJs(img: RgbImage): QualityMeasures {
  const y = luma(img.rgb, img.width, img.height);
  return { brightness: meanBrightness(y), entropy: histogramEntropy(y), blurVariance: laplacianVariance(y, img.width, img.height) };
}

export function measureQuality(rgb: Uint8Array, width: number, height: number, analysisSize: number): QualityMeasures {
  return qualityOf(shrinkForAnalysis({ rgb, width, height }, analysisSize));
}

export interface FilterRejection {
  /** Stable name for counting: min_side, aspect_ratio, blur, too_dark, too_bright, low_information. */
  filter: string;
  reason: string;
}

/** Every configured filter the image fails, in a fixed order; empty when it passes. */
export function applyFilters(
  m: QualityMeasures,
  width: number,
  height: number,
  f: CurateConfig['filters'],
): FilterRejection[] {
  const out: FilterRejection[] = [];
  const short = Math.min(width, height);
  const aspect = Math.max(width, height) / Math.max(1, short);
  if (f.min_side > 0 && short < f.min_side) {
    out.push({ filter: 'min_side', reason: `shorter side ${short} < min_side ${f.min_side}` });
  }
  if (f.max_aspect_ratio !== undefined && aspect > f.max_aspect_ratio) {
    out.push({ filter: 'aspect_ratio', reason: `aspect ratio ${aspect.toFixed(3)} > max_aspect_ratio ${f.max_aspect_ratio}` });
  }
  if (f.min_blur_variance !== undefined && m.blurVariance < f.min_blur_variance) {
    out.push({ filter: 'blur', reason: `Laplacian variance ${m.blurVariance.toFixed(2)} < min_blur_variance ${f.min_blur_variance}` });
  }
  if (f.min_brightness !== undefined && m.brightness < f.min_brightness) {
    out.push({ filter: 'too_dark', reason: `brightness ${m.brightness.toFixed(3)} < min_brightness ${f.min_brightness}` });
  }
  if (f.max_brightness !== undefined && m.brightness > f.max_brightness) {
    out.push({ filter: 'too_bright', reason: `brightness ${m.brightness.toFixed(3)} > max_brightness ${f.max_brightness}` });
  }
  if (f.min_entropy !== undefined && m.entropy < f.min_entropy) {
    out.push({ filter: 'low_information', reason: `entropy ${m.entropy.toFixed(3)} bits < min_entropy ${f.min_entropy}` });
  }
  return out;
}
