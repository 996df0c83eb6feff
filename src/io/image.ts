import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import sharp from 'sharp';
import { tf } from '../backend/tf.js';
import type { RgbImage } from '../data/dataset.js';
import { JobError } from '../util/errors.js';
import { writeFileAtomic } from './atomic.js';

export type { RgbImage } from '../data/dataset.js';

/** Which interval a float image tensor lives in: models emit [-1, 1]; [0, 1] is common elsewhere. */
export type PixelRange = 'signed' | 'unit';

/**
 * Float image tensor → 8-bit RGB. Rank 3 [H,W,3] gives one image, rank 4 [B,H,W,3] a list.
 * Values outside the range are clipped (samples overshoot); rounding is to nearest.
 */
export async function tensorToRgb8(t: tf.Tensor3D, opts?: { range?: PixelRange }): Promise<RgbImage>;
export async function tensorToRgb8(t: tf.Tensor4D, opts?: { range?: PixelRange }): Promise<RgbImage[]>;
export async function tensorToRgb8(
  t: tf.Tensor3D | tf.Tensor4D,
  opts: { range?: PixelRange } = {},
): Promise<RgbImage | RgbImage[]> {
  const shape = t.shape;
  if ((shape.length !== 3 && shape.length !== 4) || shape[shape.length - 1] !== 3) {
    throw new Error(`tensorToRgb8 expects [H,W,3] or [B,H,W,3], got [${shape.join(',')}]`);
  }
  const [b, h, w] = shape.length === 4 ? shape : [1, ...shape];
  const data = await t.data();
  const signed = (opts.range ?? 'signed') === 'signed';
  const per = h * w * 3;
  const out: RgbImage[] = [];
  for (let k = 0; k < b; k++) {
    const rgb = new Uint8Array(per);
    for (let i = 0; i < per; i++) {
      const v = data[k * per + i]!;
      const unit = signed ? (v + 1) / 2 : v;
      // NaN maps to 0 rather than poisoning the PNG encoder.
      rgb[i] = Number.isNaN(unit) ? 0 : Math.round(Math.min(1, Math.max(0, unit)) * 255);
    }
    out.push({ rgb, width: w, height: h });
  }
  return shape.length === 3 ? out[0]! : out;
}

function checkRgb(rgb: Uint8Array, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`image size must be positive integers, got ${width}x${height}`);
  }
  if (rgb.length !== width * height * 3) {
    throw new Error(`RGB buffer has ${rgb.length} bytes, expected ${width}x${height}x3 = ${width * height * 3}`);
  }
}

export async function encodePng(rgb: Uint8Array, width: number, height: number): Promise<Buffer> {
  checkRgb(rgb, width, height);
  return sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** Atomic (temp + rename), so a reader never sees half a PNG; creates the parent folder. */
export async function savePng(path: string, rgb: Uint8Array, width: number, height: number): Promise<void> {
  const png = await encodePng(rgb, width, height);
  await mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, png);
}

/** Larger files are refused before decoding: a few KiB of PNG can declare gigapixels (a decompression bomb). */
export const MAX_DECODE_PIXELS = 100_000_000;

/** Decodes any image sharp reads to 8-bit sRGB RGB; alpha is flattened onto white. */
export async function readImageRgb8(path: string, opts: { maxPixels?: number } = {}): Promise<RgbImage> {
  const maxPixels = opts.maxPixels ?? MAX_DECODE_PIXELS;
  const meta = await sharp(path, { limitInputPixels: false }).metadata();
  if ((meta.width ?? 0) * (meta.height ?? 0) > maxPixels) {
    throw new JobError(`${path}: ${meta.width}x${meta.height} exceeds the ${maxPixels}-pixel limit (possible decompression bomb); not decoded`);
  }
  const { data, info } = await sharp(path, { limitInputPixels: maxPixels })
    .toColourspace('srgb')
    .flatten({ background: { r: 255, g: 255, b: 255 } })
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`${path}: decoded to ${info.channels} channels, expected 3`);
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

export interface GridOptions {
  /** Images per row; the last row may be short. Default: ceil(sqrt(n)). */
  cols?: number;
  /** Pixels of padding between and around cells (after scaling). Default 2. */
  pad?: number;
  padColor?: [number, number, number];
  /** Integer nearest-neighbour upscale so 16×16 samples stay visible without blur. Default 1. */
  scale?: number;
  /** One caption per image, drawn in a strip under its cell (truncated to fit). */
  labels?: string[];
  labelHeight?: number;
}

/**
 * Lays images out on a grid. Cells are sized to the largest image; smaller ones sit at the
 * cell's top left. Asynchronous only because label text is rasterised by sharp from SVG.
 */
export async function makeGrid(images: RgbImage[], opts: GridOptions = {}): Promise<RgbImage> {
  if (images.length === 0) throw new Error('makeGrid needs at least one image');
  for (const im of images) checkRgb(im.rgb, im.width, im.height);
  const scale = opts.scale ?? 1;
  const pad = opts.pad ?? 2;
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`grid scale must be a positive integer, got ${scale}`);
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`grid pad must be a non-negative integer, got ${pad}`);
  const cols = Math.min(images.length, opts.cols ?? Math.ceil(Math.sqrt(images.length)));
  if (!Number.isInteger(cols) || cols < 1) throw new Error(`grid cols must be a positive integer, got ${opts.cols}`);
  if (opts.labels && opts.labels.length !== images.length) {
    throw new Error(`makeGrid got ${opts.labels.length} labels for ${images.length} images`);
  }
  const rows = Math.ceil(images.length / cols);
  const cellW = Math.max(...images.map((im) => im.width)) * scale;
  const cellH = Math.max(...images.map((im) => im.height)) * scale;
  const labelH = opts.labels ? (opts.labelHeight ?? 14) : 0;
  const width = pad + cols * (cellW + pad);
  const height = pad + rows * (cellH + labelH + pad);
  const [pr, pg, pb] = opts.padColor ?? [255, 255, 255];
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    rgb[3 * i] = pr;
    rgb[3 * i + 1] = pg;
    rgb[3 * i + 2] = pb;
  }
  const blit = (src: RgbImage, x0: number, y0: number, s: number): void => {
    for (let y = 0; y < src.height * s; y++) {
      const sy = Math.floor(y / s);
      for (let x = 0; x < src.width * s; x++) {
        const si = 3 * (sy * src.width + Math.floor(x / s));
        const di = 3 * ((y0 + y) * width + x0 + x);
        rgb[di] = src.rgb[si]!;
        rgb[di + 1] = src.rgb[si + 1]!;
        rgb[di + 2] = src.rgb[si + 2]!;
      }
    }
  };
  for (let k = 0; k < images.length; k++) {
    const x0 = pad + (k % cols) * (cellW + pad);
    const y0 = pad + Math.floor(k / cols) * (cellH + labelH + pad);
    blit(images[k]!, x0, y0, scale);
    if (opts.labels && labelH > 0) blit(await renderLabel(opts.labels[k]!, cellW, labelH), x0, y0 + cellH, 1);
  }
  return { rgb, width, height };
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Black text on white; truncated with an ellipsis, assuming ~0.6 em per glyph of a sans font. */
async function renderLabel(text: string, width: number, height: number): Promise<RgbImage> {
  const fontPx = Math.max(6, Math.floor(height * 0.75));
  const maxChars = Math.max(1, Math.floor(width / (fontPx * 0.6)));
  const shown = text.length > maxChars ? `${text.slice(0, Math.max(0, maxChars - 1))}…` : text;
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<rect width="100%" height="100%" fill="#ffffff"/>` +
    `<text x="1" y="${height - Math.max(1, Math.floor(height * 0.2))}" font-family="DejaVu Sans, sans-serif" ` +
    `font-size="${fontPx}" fill="#000000">${escapeXml(shown)}</text></svg>`;
  const { data, info } = await sharp(Buffer.from(svg))
    .flatten({ background: { r: 255, g: 255, b: 255 } })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

export async function saveGridPng(path: string, images: RgbImage[], opts: GridOptions = {}): Promise<RgbImage> {
  const grid = await makeGrid(images, opts);
  await savePng(path, grid.rgb, grid.width, grid.height);
  return grid;
}
