/**
 * Image hashes for deduplication: an exact hash of the decoded pixels and four 64-bit perceptual hashes.
 *
 * Convention: imagededup (idealo/imagededup, methods/hashing.py), so a hash printed here can be compared
 * with one printed by `imagededup` for the same decoded pixels:
 * - The RGB image is resized FIRST, with Pillow's LANCZOS filter (see pil_resize.ts), and only then turned
 *   into 8-bit greyscale with Pillow's `convert('L')` (ITU-R 601-2 luma, rounded). imagehash does the
 *   opposite (greyscale, then resize); its hashes are not comparable with these.
 * - pHash: 32×32, 2-D DCT-II exactly as `scipy.fftpack.dct(dct(x, axis=0), axis=1)` with norm=None, i.e.
 *   NOT orthonormal: X[k] = 2 Σ x[n] cos(πk(2n+1)/2N) along each axis. Keep the top-left 8×8 block (row =
 *   vertical frequency). Threshold = median of the 63 coefficients other than DC (an odd count, so the
 *   32nd smallest); bit = coefficient ≥ threshold, for all 64 coefficients including DC. (imagehash takes
 *   the median over all 64 and uses >.)
 * - dHash: resize to 9 wide × 8 high; bit (r, c) = pixel[r][c+1] > pixel[r][c] (strict).
 * - aHash: resize to 8×8; bit = pixel ≥ mean of the 64 pixels.
 * - wHash: resize to S×S (S = 256 as imagededup; must be a power of two ≥ 8), take the Haar LL band at level
 *   log2(S/8) and set bit = LL ≥ median(LL) (median of 64 values: mean of the 32nd and 33rd). With the Haar
 *   wavelet that band is each 8×8 cell's pixel sum times a positive constant, so it is computed from exact
 *   integer sums. imagehash's `remove_max_haar_ll` subtracts the image mean from every pixel first, which
 *   shifts all 64 LL values equally and therefore changes nothing under a median threshold; imagehash's
 *   other difference is S = the largest power of two ≤ the shorter side (pass `imageScale` to match it).
 * - Bit order: the 8×8 bit grid is read row-major; bit 0 is the most significant bit of the first byte.
 *   Printed as 16 lower-case hex characters (numpy.packbits + '%02x' per byte, as imagededup does).
 *
 * In memory a hash is two uint32 words: `hi` holds bits 0–31 and `lo` bits 32–63, so hex = hi then lo.
 *
 * Float ties: pHash coefficients are computed here by direct sums, scipy uses an FFT; a coefficient within
 * rounding error of the median may fall on the other side of it. This flips at most those bits.
 */
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import type { RgbImage } from '../data/dataset.js';
import { resizeLanczos8, rgbToLuma8 } from './pil_resize.js';

export type { RgbImage } from '../data/dataset.js';

export const HASH_KINDS = ['phash', 'dhash', 'ahash', 'whash'] as const;
export type HashKind = (typeof HASH_KINDS)[number];

/** A 64-bit hash: `hi` = bits 0–31 (most significant first), `lo` = bits 32–63, both as unsigned 32-bit. */
export interface Hash64 {
  hi: number;
  lo: number;
}

/** Decoded pixels: 3 bytes per pixel (RGB) or 1 (greyscale); the channel count follows from the length. */
export type PixelImage = RgbImage;

/** Packs 64 truthy/falsy values (bit 0 first) into a hash. */
export function bitsToHash(bits: ArrayLike<number | boolean>): Hash64 {
  if (bits.length !== 64) throw new Error(`bitsToHash: need 64 bits, got ${bits.length}`);
  let hi = 0;
  let lo = 0;
  for (let i = 0; i < 32; i++) {
    hi = (hi << 1) | (bits[i] ? 1 : 0);
    lo = (lo << 1) | (bits[32 + i] ? 1 : 0);
  }
  return { hi: hi >>> 0, lo: lo >>> 0 };
}

/** Bit i of a hash (0 = most significant), as 0 or 1. */
export function hashBit(h: Hash64, i: number): number {
  return i < 32 ? (h.hi >>> (31 - i)) & 1 : (h.lo >>> (63 - i)) & 1;
}

export function hashToHex(h: Hash64): string {
  return (h.hi >>> 0).toString(16).padStart(8, '0') + (h.lo >>> 0).toString(16).padStart(8, '0');
}

const HEX64 = /^[0-9a-fA-F]{16}$/;

export function hexToHash(hex: string): Hash64 {
  if (!HEX64.test(hex)) throw new Error(`not a 64-bit hash: expected 16 hex characters, got '${hex}'`);
  return { hi: parseInt(hex.slice(0, 8), 16) >>> 0, lo: parseInt(hex.slice(8), 16) >>> 0 };
}

/** Set bits in the low 32 bits of x (signed or unsigned input alike); stays in int32 arithmetic. */
export function popcount32(x: number): number {
  x = (x - ((x >>> 1) & 0x55555555)) | 0;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

export function hammingDistance(a: Hash64, b: Hash64): number {
  return popcount32((a.hi ^ b.hi) >>> 0) + popcount32((a.lo ^ b.lo) >>> 0);
}

function channelsOf(img: PixelImage): number {
  const { width, height, rgb } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`image size must be positive integers, got ${width}x${height}`);
  }
  const px = width * height;
  if (rgb.length === px * 3) return 3;
  if (rgb.length === px) return 1;
  throw new Error(`image buffer has ${rgb.length} bytes; ${width}x${height} needs ${px * 3} (RGB) or ${px} (grey)`);
}

/** imagededup's preprocessing: Lanczos resize of the colour image, then Pillow luma. */
export function resizeToGrey(img: PixelImage, width: number, height: number): Uint8Array {
  const channels = channelsOf(img);
  const resized = resizeLanczos8(img.rgb, img.width, img.height, channels, width, height);
  return channels === 3 ? rgbToLuma8(resized, width * height) : resized;
}

const DCT_SIZE = 32;
const BLOCK = 8;

/** cos(πk(2n+1)/2N) for the 8 lowest frequencies k of a 32-point DCT-II. */
const DCT_BASIS: Float64Array = (() => {
  const t = new Float64Array(BLOCK * DCT_SIZE);
  for (let k = 0; k < BLOCK; k++) {
    for (let n = 0; n < DCT_SIZE; n++) t[k * DCT_SIZE + n] = Math.cos((Math.PI * k * (2 * n + 1)) / (2 * DCT_SIZE));
  }
  return t;
})();

/**
 * Top-left 8×8 of scipy.fftpack's unnormalised 2-D DCT-II of a 32×32 row-major array, row-major:
 * out[k·8 + l] = 4 Σ_i Σ_j x[i][j] cos(πk(2i+1)/64) cos(πl(2j+1)/64).
 */
export function dctLowBlock(grey32: ArrayLike<number>): Float64Array {
  if (grey32.length !== DCT_SIZE * DCT_SIZE) throw new Error(`dctLowBlock: need 1024 values, got ${grey32.length}`);
  const cols = new Float64Array(BLOCK * DCT_SIZE);
  for (let k = 0; k < BLOCK; k++) {
    for (let j = 0; j < DCT_SIZE; j++) {
      let s = 0;
      for (let i = 0; i < DCT_SIZE; i++) s += DCT_BASIS[k * DCT_SIZE + i]! * grey32[i * DCT_SIZE + j]!;
      cols[k * DCT_SIZE + j] = 2 * s;
    }
  }
  const out = new Float64Array(BLOCK * BLOCK);
  for (let k = 0; k < BLOCK; k++) {
    for (let l = 0; l < BLOCK; l++) {
      let s = 0;
      for (let j = 0; j < DCT_SIZE; j++) s += DCT_BASIS[l * DCT_SIZE + j]! * cols[k * DCT_SIZE + j]!;
      out[k * BLOCK + l] = 2 * s;
    }
  }
  return out;
}

/** numpy.median: the middle value, or the mean of the two middle values for an even count. */
export function median(values: ArrayLike<number>): number {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  if (n === 0) throw new Error('median of no values');
  return n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
}

/** pHash bits from a 32×32 greyscale array (exposed so the DCT step can be tested apart from resizing). */
export function phashFromGrey32(grey32: ArrayLike<number>): Hash64 {
  const block = dctLowBlock(grey32);
  const threshold = median(block.subarray(1));
  return bitsToHash(Array.from(block, (c) => c >= threshold));
}

export function phash(img: PixelImage): Hash64 {
  return phashFromGrey32(resizeToGrey(img, DCT_SIZE, DCT_SIZE));
}

/** dHash bits from a 9-wide × 8-high greyscale array. */
export function dhashFromGrey9x8(grey: ArrayLike<number>): Hash64 {
  if (grey.length !== 72) throw new Error(`dhashFromGrey9x8: need 72 values, got ${grey.length}`);
  const bits: boolean[] = [];
  for (let r = 0; r < 8; r++) for (let c = 0; c < 8; c++) bits.push(grey[r * 9 + c + 1]! > grey[r * 9 + c]!);
  return bitsToHash(bits);
}

export function dhash(img: PixelImage): Hash64 {
  return dhashFromGrey9x8(resizeToGrey(img, 9, 8));
}

/** aHash bits from an 8×8 greyscale array. */
export function ahashFromGrey8(grey: ArrayLike<number>): Hash64 {
  if (grey.length !== 64) throw new Error(`ahashFromGrey8: need 64 values, got ${grey.length}`);
  let sum = 0;
  for (let i = 0; i < 64; i++) sum += grey[i]!;
  const mean = sum / 64;
  return bitsToHash(Array.from(grey, (v) => v >= mean));
}

export function ahash(img: PixelImage): Hash64 {
  return ahashFromGrey8(resizeToGrey(img, 8, 8));
}

export interface WhashOptions {
  /** Side of the square the image is resized to before the wavelet transform; a power of two ≥ 8. */
  imageScale?: number;
}

/** wHash bits from an S×S greyscale array (S a power of two ≥ 8): median threshold on 8×8 cell sums. */
export function whashFromGrey(grey: ArrayLike<number>, side: number): Hash64 {
  if (!Number.isInteger(Math.log2(side)) || side < 8) throw new Error(`wHash image scale must be a power of two >= 8, got ${side}`);
  if (grey.length !== side * side) throw new Error(`whashFromGrey: need ${side * side} values, got ${grey.length}`);
  const cell = side / 8;
  const sums = new Float64Array(64);
  for (let y = 0; y < side; y++) {
    const row = ((y / cell) | 0) * 8;
    for (let x = 0; x < side; x++) sums[row + ((x / cell) | 0)]! += grey[y * side + x]!;
  }
  const threshold = median(sums);
  return bitsToHash(Array.from(sums, (s) => s >= threshold));
}

export function whash(img: PixelImage, opts: WhashOptions = {}): Hash64 {
  const side = opts.imageScale ?? 256;
  return whashFromGrey(resizeToGrey(img, side, side), side);
}

export function perceptualHash(img: PixelImage, kind: HashKind): Hash64 {
  switch (kind) {
    case 'phash':
      return phash(img);
    case 'dhash':
      return dhash(img);
    case 'ahash':
      return ahash(img);
    case 'whash':
      return whash(img);
  }
}

/**
 * SHA-256 (hex) of the decoded image: width and height as big-endian uint32, the channel count as one
 * byte, then the pixel bytes. Two files are exact duplicates when their decoded pixels and size agree,
 * whatever their container, metadata or compression.
 */
export function exactPixelHash(img: PixelImage): string {
  const channels = channelsOf(img);
  const header = Buffer.alloc(9);
  header.writeUInt32BE(img.width, 0);
  header.writeUInt32BE(img.height, 4);
  header.writeUInt8(channels, 8);
  return createHash('sha256').update(header).update(img.rgb).digest('hex');
}

export interface DecodeForHashOptions {
  /**
   * Alpha handling. Default: dropped, keeping the stored colour under transparent pixels, as imagededup's
   * `convert('RGBA').convert('RGB')` does. A CSS colour here mattes onto it instead (as the curate decoder does).
   */
  background?: string;
}

/** Decodes a file to 8-bit sRGB with EXIF orientation applied (imagededup ignores orientation; we do not). */
export async function decodeForHash(path: string, opts: DecodeForHashOptions = {}): Promise<RgbImage> {
  let pipeline = sharp(path).rotate().toColourspace('srgb');
  pipeline = opts.background !== undefined ? pipeline.flatten({ background: opts.background }) : pipeline;
  const { data, info } = await pipeline.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`${path}: decoded to ${info.channels} channels, expected 3`);
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

export interface FileHashes {
  width: number;
  height: number;
  /** exactPixelHash of the decoded pixels. */
  exact: string;
  /** 16-hex-character perceptual hashes, one per requested kind. */
  hashes: Partial<Record<HashKind, string>>;
}

export async function hashFile(
  path: string,
  kinds: readonly HashKind[] = ['phash'],
  opts: DecodeForHashOptions = {},
): Promise<FileHashes> {
  const img = await decodeForHash(path, opts);
  const hashes: Partial<Record<HashKind, string>> = {};
  for (const kind of kinds) hashes[kind] = hashToHex(perceptualHash(img, kind));
  return { width: img.width, height: img.height, exact: exactPixelHash(img), hashes };
}
