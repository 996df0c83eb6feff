/**
 * Resizing images to the Inception input (299×299) the two ways FID implementations do it, since the choice
 * moves FID by whole points:
 *
 * - 'clean' (clean-fid's default): each channel as a float32 image (PIL mode 'F', no quantisation) resized
 *   with PIL's bicubic filter, clipped to [0, 255]. `pilResizeFloat` reproduces Pillow's Resample.c for 'F'
 *   images: separable, horizontal pass first, pixel centres at (i + ½)·scale, a = −½ cubic whose support
 *   widens by the downscale factor (antialiasing), weights normalised per output pixel and accumulated in
 *   double, each pass stored as float32.
 * - 'legacy' (pytorch-fid; clean-fid's legacy_pytorch): torch.nn.functional.interpolate(mode='bilinear',
 *   align_corners=False, no antialias): source x = (i + ½)·scale − ½ clamped at 0, two taps per axis;
 *   computed in float64 (torch's float32 arithmetic differs in the last bits: ≤ 3e-5 on the [0, 1] scale).
 *
 * `pilResize8` is Pillow's 8-bit path (fixed-point weights with 22 fractional bits, each pass rounded and
 * clipped to uint8) for the filters CLIP's preprocessing uses (bicubic; HF CLIPImageProcessor resizes uint8
 * images through PIL).
 */

import { PIL_PRECISION_BITS, type PilFilter, pilTaps, pilTapsFixed } from '../util/pil_filters.js';

export type FidResizeMode = 'clean' | 'legacy';
export const FID_RESIZE_MODES: readonly FidResizeMode[] = ['clean', 'legacy'];

export type { PilFilter };

function checkSizes(fn: string, length: number, width: number, height: number, channels: number, outWidth: number, outHeight: number): void {
  if (width < 1 || height < 1 || outWidth < 1 || outHeight < 1) throw new Error(`${fn}: empty image (${width}×${height} → ${outWidth}×${outHeight})`);
  if (length !== width * height * channels) throw new Error(`${fn}: buffer has ${length} values, expected ${width}×${height}×${channels}`);
}

/** Pillow's resize of a mode-'F' (float32, one channel) image. */
export function pilResizeFloat(src: Float32Array, width: number, height: number, outWidth: number, outHeight: number, filter: PilFilter = 'bicubic'): Float32Array {
  checkSizes('pilResizeFloat', src.length, width, height, 1, outWidth, outHeight);
  let img = src;
  let w = width;
  if (outWidth !== width) {
    const t = pilTaps(width, outWidth, filter);
    const out = new Float32Array(outWidth * height);
    for (let y = 0; y < height; y++) {
      const row = y * width;
      for (let o = 0; o < outWidth; o++) {
        const lo = t.first[o]!;
        const base = o * t.stride;
        let acc = 0;
        for (let k = 0; k < t.count[o]!; k++) acc += img[row + lo + k]! * t.weights[base + k]!;
        out[y * outWidth + o] = acc;
      }
    }
    img = out;
    w = outWidth;
  }
  if (outHeight !== height) {
    const t = pilTaps(height, outHeight, filter);
    const out = new Float32Array(w * outHeight);
    const acc = new Float64Array(w);
    for (let o = 0; o < outHeight; o++) {
      const lo = t.first[o]!;
      const base = o * t.stride;
      acc.fill(0);
      for (let k = 0; k < t.count[o]!; k++) {
        const wk = t.weights[base + k]!;
        const row = (lo + k) * w;
        for (let x = 0; x < w; x++) acc[x]! += img[row + x]! * wk;
      }
      out.set(acc, o * w);
    }
    img = out;
  }
  return img === src ? src.slice() : img;
}

const ONE = 2 ** PIL_PRECISION_BITS;

function clip8(acc: number): number {
  const v = Math.floor(acc / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Pillow's resize of an 8-bit image with interleaved channels (RGB: channels = 3). */
export function pilResize8(src: Uint8Array, width: number, height: number, channels: number, outWidth: number, outHeight: number, filter: PilFilter = 'bicubic'): Uint8Array {
  checkSizes('pilResize8', src.length, width, height, channels, outWidth, outHeight);
  let img = src;
  let w = width;
  if (outWidth !== width) {
    const t = pilTapsFixed(width, outWidth, filter);
    const out = new Uint8Array(outWidth * height * channels);
    for (let y = 0; y < height; y++) {
      const row = y * width * channels;
      for (let o = 0; o < outWidth; o++) {
        const lo = t.first[o]!;
        const base = o * t.stride;
        for (let c = 0; c < channels; c++) {
          let acc = ONE / 2;
          for (let k = 0; k < t.count[o]!; k++) acc += img[row + (lo + k) * channels + c]! * t.weights[base + k]!;
          out[(y * outWidth + o) * channels + c] = clip8(acc);
        }
      }
    }
    img = out;
    w = outWidth;
  }
  if (outHeight !== height) {
    const t = pilTapsFixed(height, outHeight, filter);
    const rowLen = w * channels;
    const out = new Uint8Array(outHeight * rowLen);
    const acc = new Float64Array(rowLen);
    for (let o = 0; o < outHeight; o++) {
      const lo = t.first[o]!;
      const base = o * t.stride;
      acc.fill(ONE / 2);
      for (let k = 0; k < t.count[o]!; k++) {
        const wk = t.weights[base + k]!;
        const row = (lo + k) * rowLen;
        for (let i = 0; i < rowLen; i++) acc[i]! += img[row + i]! * wk;
      }
      for (let i = 0; i < rowLen; i++) out[o * rowLen + i] = clip8(acc[i]!);
    }
    img = out;
  }
  return img === src ? src.slice() : img;
}

/** torch F.interpolate(mode='bilinear', align_corners=False, antialias=False) of an HWC float image. */
export function torchBilinear(src: Float32Array, width: number, height: number, channels: number, outWidth: number, outHeight: number): Float32Array {
  checkSizes('torchBilinear', src.length, width, height, channels, outWidth, outHeight);
  const axis = (inSize: number, outSize: number) => {
    const scale = inSize / outSize;
    const i0 = new Int32Array(outSize);
    const i1 = new Int32Array(outSize);
    const l1 = new Float32Array(outSize);
    for (let o = 0; o < outSize; o++) {
      // torch computes the source coordinate in float32: (float)in / out, then scale·(o + ½) − ½.
      const s = Math.max(Math.fround(Math.fround(Math.fround(scale) * (o + 0.5)) - 0.5), 0);
      const lo = Math.trunc(s);
      i0[o] = lo;
      i1[o] = lo + (lo < inSize - 1 ? 1 : 0);
      l1[o] = s - lo;
    }
    return { i0, i1, l1 };
  };
  const ax = axis(width, outWidth);
  const ay = axis(height, outHeight);
  const out = new Float32Array(outWidth * outHeight * channels);
  for (let y = 0; y < outHeight; y++) {
    const h1 = ay.l1[y]!;
    const h0 = 1 - h1;
    const r0 = ay.i0[y]! * width;
    const r1 = ay.i1[y]! * width;
    for (let x = 0; x < outWidth; x++) {
      const w1 = ax.l1[x]!;
      const w0 = 1 - w1;
      const c0 = ax.i0[x]!;
      const c1 = ax.i1[x]!;
      for (let c = 0; c < channels; c++) {
        const p = (r: number, col: number) => src[(r + col) * channels + c]!;
        out[(y * outWidth + x) * channels + c] = h0 * (w0 * p(r0, c0) + w1 * p(r0, c1)) + h1 * (w0 * p(r1, c0) + w1 * p(r1, c1));
      }
    }
  }
  return out;
}

export interface RgbImageData {
  /** Interleaved RGB, row-major: uint8 (0–255) or float in [0, 255]. */
  data: Uint8Array | Float32Array;
  width: number;
  height: number;
}

/**
 * An RGB image resized to size×size for the Inception network: HWC float32 in [0, 1]. 'clean' = clean-fid's
 * PIL-bicubic on float channels (clipped to [0, 255]); 'legacy' = pytorch-fid's bilinear on x / 255.
 */
export function resizeForInception(img: RgbImageData, mode: FidResizeMode = 'clean', size = 299): Float32Array {
  const { width, height, data } = img;
  if (data.length !== width * height * 3) throw new Error(`resizeForInception: ${data.length} values do not form a ${width}×${height} RGB image`);
  if (mode === 'legacy') {
    const unit = Float32Array.from(data, (v) => v / 255);
    return torchBilinear(unit, width, height, 3, size, size);
  }
  if (mode !== 'clean') throw new Error(`resizeForInception: unknown resize mode '${String(mode)}' (expected ${FID_RESIZE_MODES.join(' or ')})`);
  const out = new Float32Array(size * size * 3);
  const plane = new Float32Array(width * height);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < width * height; i++) plane[i] = data[i * 3 + c]!;
    const r = pilResizeFloat(plane, width, height, size, size, 'bicubic');
    for (let i = 0; i < size * size; i++) out[i * 3 + c] = Math.min(255, Math.max(0, r[i]!)) / 255;
  }
  return out;
}
