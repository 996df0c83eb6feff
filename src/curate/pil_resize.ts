/**
 * The two pixel operations every perceptual hash starts with, reproduced from Pillow so that hashes made
 * here agree with the Python tools (imagededup, imagehash) that users compare against:
 *
 * - `resizeLanczos8`: Pillow's `Image.resize(size, Image.LANCZOS)` on 8-bit channels — a separable
 *   Lanczos-3 filter whose support widens by the downscale factor (antialiasing), pixel centres at
 *   (i + 0.5) · scale, weights normalised per output pixel and quantised to 22-bit fixed point, the
 *   horizontal pass first, its result rounded and clipped to uint8 before the vertical pass.
 *   Pillow computes the filter with C's `sin`; V8's `Math.sin` can differ in the last ulp, which can move
 *   a quantised weight by one unit of 2^-22 in rare cases, so agreement is exact for practical purposes.
 *   With the image addon built (image_addon.ts) the same arithmetic runs natively (native/src/pil_resample.cc, C's
 *   `sin` as Pillow's); `resizeLanczos8Js` stays the reference it is tested against.
 * - `rgbToLuma8`: Pillow's `convert('L')`, ITU-R 601-2 luma L = R·299/1000 + G·587/1000 + B·114/1000,
 *   computed as Pillow does in 16-bit fixed point with rounding: (19595 R + 38470 G + 7471 B + 2^15) >> 16.
 */

import { PIL_PRECISION_BITS, type PilTaps, pilTapsFixed } from '../util/pil_filters.js';
import { imageAddon } from './image_addon.js';

const PRECISION_BITS = PIL_PRECISION_BITS;

function lanczosTaps(inSize: number, outSize: number): PilTaps<Int32Array> {
  return pilTapsFixed(inSize, outSize, 'lanczos');
}

/**
 * Pillow's clip8: the accumulator (which started at 2^21 for rounding) shifted down by 22 bits, clamped to 0..255.
 * Sums stay inside int32 as in Pillow's C: |Σ w| ≤ ~1.3 · 2^22 for Lanczos-3, times 255 < 2^31.
 */
function clip8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * The horizontal pass, one output row per input row. The three-channel loop keeps one accumulator per channel so
 * each tap's weight is loaded once (the full-resolution pass is most of a pHash's cost: ~14 M taps for 1024×768).
 */
function resampleRows(src: Uint8Array, width: number, height: number, channels: number, outWidth: number): Uint8Array {
  const taps = lanczosTaps(width, outWidth);
  const { first, count, stride, weights } = taps;
  const out = new Uint8Array(outWidth * height * channels);
  const half = 1 << (PRECISION_BITS - 1);
  const rowLen = width * channels;
  for (let y = 0; y < height; y++) {
    const rowIn = y * rowLen;
    let p = y * outWidth * channels;
    for (let o = 0; o < outWidth; o++) {
      const n = count[o]!;
      const wBase = o * stride;
      if (channels === 3) {
        let a0 = half;
        let a1 = half;
        let a2 = half;
        let i = rowIn + first[o]! * 3;
        for (let k = 0; k < n; k++, i += 3) {
          const w = weights[wBase + k]!;
          a0 = (a0 + src[i]! * w) | 0;
          a1 = (a1 + src[i + 1]! * w) | 0;
          a2 = (a2 + src[i + 2]! * w) | 0;
        }
        out[p++] = clip8(a0);
        out[p++] = clip8(a1);
        out[p++] = clip8(a2);
      } else {
        for (let c = 0; c < channels; c++) {
          let acc = half;
          let i = rowIn + first[o]! * channels + c;
          for (let k = 0; k < n; k++, i += channels) acc = (acc + src[i]! * weights[wBase + k]!) | 0;
          out[p++] = clip8(acc);
        }
      }
    }
  }
  return out;
}

/** The vertical pass: each output row is a weighted sum of input rows, accumulated row by row (cache-friendly). */
function resampleColumns(src: Uint8Array, rowLen: number, height: number, outHeight: number): Uint8Array {
  const taps = lanczosTaps(height, outHeight);
  const out = new Uint8Array(outHeight * rowLen);
  const acc = new Int32Array(rowLen);
  const half = 1 << (PRECISION_BITS - 1);
  for (let o = 0; o < outHeight; o++) {
    const lo = taps.first[o]!;
    const n = taps.count[o]!;
    const wBase = o * taps.stride;
    acc.fill(half);
    for (let k = 0; k < n; k++) {
      const wk = taps.weights[wBase + k]!;
      const rowIn = (lo + k) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] = acc[i]! + src[rowIn + i]! * wk;
    }
    const rowOut = o * rowLen;
    for (let i = 0; i < rowLen; i++) out[rowOut + i] = clip8(acc[i]!);
  }
  return out;
}

/**
 * Resizes an interleaved 8-bit image with `channels` channels per pixel to outWidth × outHeight.
 * An axis whose size does not change is not filtered (as in Pillow). Native when the image addon is built.
 */
export function resizeLanczos8(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  const addon = imageAddon();
  if (!addon || src.length !== width * height * channels || width < 1 || height < 1 || outWidth < 1 || outHeight < 1) {
    return resizeLanczos8Js(src, width, height, channels, outWidth, outHeight);
  }
  const out = addon.pilResize(src, width, height, channels, outWidth, outHeight);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** resizeLanczos8 in plain JS (the reference the native version is tested against). */
export function resizeLanczos8Js(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  if (src.length !== width * height * channels) {
    throw new Error(`resizeLanczos8: buffer has ${src.length} bytes, expected ${width}x${height}x${channels}`);
  }
  if (width < 1 || height < 1 || outWidth < 1 || outHeight < 1) {
    throw new Error(`resizeLanczos8: empty image (${width}x${height} -> ${outWidth}x${outHeight})`);
  }
  let img = src;
  if (outWidth !== width) img = resampleRows(img, width, height, channels, outWidth);
  if (outHeight !== height) img = resampleColumns(img, outWidth * channels, height, outHeight);
  return img === src ? src.slice() : img;
}

/** Pillow `convert('L')` of interleaved RGB. */
export function rgbToLuma8(rgb: Uint8Array, pixels: number): Uint8Array {
  if (rgb.length !== pixels * 3) throw new Error(`rgbToLuma8: buffer has ${rgb.length} bytes, expected ${pixels}x3`);
  const out = new Uint8Array(pixels);
  for (let p = 0, i = 0; p < pixels; p++, i += 3) {
    out[p] = (rgb[i]! * 19595 + rgb[i + 1]! * 38470 + rgb[i + 2]! * 7471 + 0x8000) >>> 16;
  }
  return out;
}
