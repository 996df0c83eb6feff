import type { Rng } from '../../util/rng.js';
import { checkImage, type FloatImage } from './float_image.js';

/** An integer pixel box: top row, left column, height, width (torchvision's i, j, h, w). */
export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Python's round(): halves go to the even neighbour. torchvision's crop sizes use it. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export interface ResizedCropOptions {
  /** Fraction of the image area the crop covers, before the aspect change. torchvision default [0.08, 1]. */
  scale: readonly [number, number];
  /** Crop width / height, sampled log-uniformly. torchvision default [3/4, 4/3]. */
  ratio: readonly [number, number];
}

/**
 * torchvision's `RandomResizedCrop.get_params`: up to 10 tries of (area uniform in scale, log-aspect uniform in ratio),
 * taking the first whose rounded size fits, at a uniformly random position; if none fits, the largest centred crop whose
 * aspect is clamped into `ratio`.
 */
export function sampleResizedCropBox(rng: Rng, width: number, height: number, opts: ResizedCropOptions): CropBox {
  const area = width * height;
  const logLo = Math.log(opts.ratio[0]);
  const logHi = Math.log(opts.ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.range(opts.scale[0], opts.scale[1]);
    const aspect = Math.exp(rng.range(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(...opts.ratio)) {
    w = width;
    h = roundHalfEven(w / Math.min(...opts.ratio));
  } else if (inRatio > Math.max(...opts.ratio)) {
    h = height;
    w = roundHalfEven(h * Math.max(...opts.ratio));
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

interface Taps {
  /** First source index of each output sample's taps. */
  start: Int32Array;
  count: Int32Array;
  /** `maxTaps` normalised weights per output sample. */
  weights: Float32Array;
  maxTaps: number;
}

/**
 * 1-D resampling weights from `inSize` source pixels to `outSize`, with pixel centres at i + 0.5 (align_corners=False).
 * The kernel is the triangle (linear) filter; with `antialias` and a downscale it is widened by the scale factor (as PIL
 * and torch's antialias=True do), otherwise it is plain two-tap bilinear. Taps that fall outside the source are dropped
 * and the rest renormalised, which for two-tap bilinear is the same as clamping the sample point to the edge centres.
 */
function linearTaps(inSize: number, outSize: number, antialias: boolean): Taps {
  const scale = inSize / outSize;
  const support = antialias && scale > 1 ? scale : 1;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * maxTaps);
  for (let o = 0; o < outSize; o++) {
    // Continuous source coordinate of this output centre, clamped so edge outputs copy the edge pixel exactly.
    const centre = Math.min(Math.max((o + 0.5) * scale, 0.5), inSize - 0.5);
    const lo = Math.max(0, Math.floor(centre - support - 0.5) + 1);
    const hi = Math.min(inSize - 1, Math.ceil(centre + support - 0.5) - 1);
    // Never empty: the clamped centre is always within half a pixel of some pixel centre.
    let total = 0;
    let n = 0;
    for (let i = lo; i <= hi; i++) {
      const w = 1 - Math.abs(i + 0.5 - centre) / support;
      if (w <= 0) continue;
      if (n === 0) start[o] = i;
      weights[o * maxTaps + n] = w;
      total += w;
      n++;
    }
    for (let k = 0; k < n; k++) weights[o * maxTaps + k]! /= total;
    count[o] = n;
  }
  return { start, count, weights, maxTaps };
}

/**
 * Crops `box` out of `img` and resizes it to outWidth×outHeight with (antialiased when shrinking) bilinear filtering,
 * separably: rows first, then columns. Only pixels inside the box contribute, as if the crop were taken first.
 */
export function resizedCrop(img: FloatImage, box: CropBox, outWidth: number, outHeight: number, opts: { antialias?: boolean } = {}): FloatImage {
  checkImage(img);
  const { top, left, height: bh, width: bw } = box;
  if (!(Number.isInteger(top) && Number.isInteger(left) && Number.isInteger(bh) && Number.isInteger(bw)) || bh < 1 || bw < 1 || top < 0 || left < 0 || top + bh > img.height || left + bw > img.width) {
    throw new RangeError(`crop box ${JSON.stringify(box)} does not lie inside the ${img.width}x${img.height} image`);
  }
  if (!Number.isInteger(outWidth) || !Number.isInteger(outHeight) || outWidth < 1 || outHeight < 1) {
    throw new RangeError(`output size must be positive integers, got ${outWidth}x${outHeight}`);
  }
  const antialias = opts.antialias ?? true;
  const tx = linearTaps(bw, outWidth, antialias);
  const ty = linearTaps(bh, outHeight, antialias);
  // Horizontal pass over the box rows only.
  const mid = new Float32Array(bh * outWidth * 3);
  for (let y = 0; y < bh; y++) {
    const srcRow = (top + y) * img.width;
    for (let x = 0; x < outWidth; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let k = 0; k < tx.count[x]!; k++) {
        const w = tx.weights[x * tx.maxTaps + k]!;
        const si = 3 * (srcRow + left + tx.start[x]! + k);
        r += w * img.data[si]!;
        g += w * img.data[si + 1]!;
        b += w * img.data[si + 2]!;
      }
      const di = 3 * (y * outWidth + x);
      mid[di] = r;
      mid[di + 1] = g;
      mid[di + 2] = b;
    }
  }
  const data = new Float32Array(outHeight * outWidth * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let k = 0; k < ty.count[y]!; k++) {
        const w = ty.weights[y * ty.maxTaps + k]!;
        const si = 3 * ((ty.start[y]! + k) * outWidth + x);
        r += w * mid[si]!;
        g += w * mid[si + 1]!;
        b += w * mid[si + 2]!;
      }
      const di = 3 * (y * outWidth + x);
      data[di] = r;
      data[di + 1] = g;
      data[di + 2] = b;
    }
  }
  return { data, width: outWidth, height: outHeight };
}

export function flipHorizontal(img: FloatImage): FloatImage {
  checkImage(img);
  const { width: w, height: h } = img;
  const data = new Float32Array(img.data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const si = 3 * (y * w + (w - 1 - x));
      const di = 3 * (y * w + x);
      data[di] = img.data[si]!;
      data[di + 1] = img.data[si + 1]!;
      data[di + 2] = img.data[si + 2]!;
    }
  }
  return { data, width: w, height: h };
}
