import type { Rng } from '../../util/rng.js';
import { checkImage, type FloatImage } from './float_image.js';

/**
 * Colour jitter with torchvision's ColorJitter semantics, on float images in [0, 1]:
 *  - brightness f: x·f
 *  - contrast f: blend towards the mean of the whole greyscale image, f·x + (1−f)·mean
 *  - saturation f: blend towards each pixel's greyscale value, f·x + (1−f)·grey
 *  - hue δ: rotate the HSV hue by δ turns (δ ∈ [−0.5, 0.5])
 * each result clamped to [0, 1] before the next op, exactly as torchvision's float path does.
 * Greyscale is ITU-R 601-2 luma with torchvision's weights (0.2989, 0.587, 0.114).
 */

export const GREY_WEIGHTS = [0.2989, 0.587, 0.114] as const;

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

export function greyscale(img: FloatImage): Float32Array {
  checkImage(img);
  const n = img.width * img.height;
  const out = new Float32Array(n);
  const d = img.data;
  for (let i = 0; i < n; i++) out[i] = GREY_WEIGHTS[0] * d[3 * i]! + GREY_WEIGHTS[1] * d[3 * i + 1]! + GREY_WEIGHTS[2] * d[3 * i + 2]!;
  return out;
}

export function adjustBrightness(img: FloatImage, factor: number): FloatImage {
  checkImage(img);
  const data = new Float32Array(img.data.length);
  for (let i = 0; i < data.length; i++) data[i] = clamp01(factor * img.data[i]!);
  return { data, width: img.width, height: img.height };
}

export function adjustContrast(img: FloatImage, factor: number): FloatImage {
  const grey = greyscale(img);
  let sum = 0;
  for (let i = 0; i < grey.length; i++) sum += grey[i]!;
  const mean = sum / grey.length;
  const data = new Float32Array(img.data.length);
  for (let i = 0; i < data.length; i++) data[i] = clamp01(factor * img.data[i]! + (1 - factor) * mean);
  return { data, width: img.width, height: img.height };
}

export function adjustSaturation(img: FloatImage, factor: number): FloatImage {
  const grey = greyscale(img);
  const data = new Float32Array(img.data.length);
  for (let i = 0; i < data.length; i++) data[i] = clamp01(factor * img.data[i]! + (1 - factor) * grey[Math.floor(i / 3)]!);
  return { data, width: img.width, height: img.height };
}

/** [h, s, v], h in [0, 1) turns; grey pixels get h = 0, s = 0. */
export function rgbToHsv(r: number, g: number, b: number): [number, number, number] {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  const chroma = max - min;
  if (chroma === 0) return [0, 0, max];
  let h6: number;
  if (max === r) h6 = (g - b) / chroma;
  else if (max === g) h6 = 2 + (b - r) / chroma;
  else h6 = 4 + (r - g) / chroma;
  const h = (((h6 / 6) % 1) + 1) % 1;
  return [h, chroma / max, max];
}

export function hsvToRgb(h: number, s: number, v: number): [number, number, number] {
  const h6 = (((h % 1) + 1) % 1) * 6;
  const sector = Math.floor(h6);
  const f = h6 - sector;
  const p = clamp01(v * (1 - s));
  const q = clamp01(v * (1 - s * f));
  const t = clamp01(v * (1 - s * (1 - f)));
  switch (sector % 6) {
    case 0:
      return [v, t, p];
    case 1:
      return [q, v, p];
    case 2:
      return [p, v, t];
    case 3:
      return [p, q, v];
    case 4:
      return [t, p, v];
    default:
      return [v, p, q];
  }
}

export function adjustHue(img: FloatImage, shift: number): FloatImage {
  checkImage(img);
  if (!(shift >= -0.5 && shift <= 0.5)) throw new RangeError(`hue shift must be in [-0.5, 0.5] turns, got ${shift}`);
  const data = new Float32Array(img.data.length);
  const d = img.data;
  for (let i = 0; i < data.length; i += 3) {
    const [h, s, v] = rgbToHsv(d[i]!, d[i + 1]!, d[i + 2]!);
    const [r, g, b] = hsvToRgb(h + shift, s, v);
    data[i] = r;
    data[i + 1] = g;
    data[i + 2] = b;
  }
  return { data, width: img.width, height: img.height };
}

/** Closed ranges the factors are drawn from; null skips that op (torchvision's `None`). */
export interface ColorJitterRanges {
  brightness: [number, number] | null;
  contrast: [number, number] | null;
  saturation: [number, number] | null;
  hue: [number, number] | null;
}

export type JitterOp = 'brightness' | 'contrast' | 'saturation' | 'hue';
const JITTER_OPS: readonly JitterOp[] = ['brightness', 'contrast', 'saturation', 'hue'];

/** One draw of ColorJitter's parameters: the op order and a factor per enabled op. */
export interface ColorJitterParams {
  order: JitterOp[];
  factors: Partial<Record<JitterOp, number>>;
}

/**
 * torchvision's `b ∈ [max(0, 1−b), 1+b]` for brightness/contrast/saturation given as one number; a pair is taken as
 * the range itself. A range that is exactly {1} (or {0} for hue) is the identity, so it is dropped, as torchvision does.
 */
export function jitterRange(value: number | readonly [number, number], op: JitterOp): [number, number] | null {
  const isHue = op === 'hue';
  let range: [number, number];
  if (typeof value === 'number') {
    if (!(value >= 0)) throw new RangeError(`${op} jitter must be ≥ 0, got ${value}`);
    range = isHue ? [-value, value] : [Math.max(0, 1 - value), 1 + value];
  } else {
    range = [value[0], value[1]];
    if (!(range[0] <= range[1])) throw new RangeError(`${op} jitter range [${range.join(', ')}] must have min ≤ max`);
  }
  if (isHue && (range[0] < -0.5 || range[1] > 0.5)) throw new RangeError(`hue jitter must lie in [-0.5, 0.5], got [${range.join(', ')}]`);
  if (!isHue && range[0] < 0) throw new RangeError(`${op} jitter factors must be ≥ 0, got [${range.join(', ')}]`);
  const identity = isHue ? 0 : 1;
  return range[0] === identity && range[1] === identity ? null : range;
}

/**
 * Like torchvision's `ColorJitter.get_params`: a uniformly random order of the four ops (torch.randperm(4)), then one
 * uniform factor per enabled op, drawn in the fixed order brightness, contrast, saturation, hue.
 */
export function sampleColorJitter(rng: Rng, ranges: ColorJitterRanges): ColorJitterParams {
  const order = rng.shuffle([...JITTER_OPS]).filter((op) => ranges[op] !== null);
  const factors: Partial<Record<JitterOp, number>> = {};
  for (const op of JITTER_OPS) {
    const r = ranges[op];
    if (r) factors[op] = rng.range(r[0], r[1]);
  }
  return { order, factors };
}

export function applyColorJitter(img: FloatImage, params: ColorJitterParams): FloatImage {
  let out = img;
  for (const op of params.order) {
    const f = params.factors[op];
    if (f === undefined) continue;
    if (op === 'brightness') out = adjustBrightness(out, f);
    else if (op === 'contrast') out = adjustContrast(out, f);
    else if (op === 'saturation') out = adjustSaturation(out, f);
    else out = adjustHue(out, f);
  }
  return out;
}
