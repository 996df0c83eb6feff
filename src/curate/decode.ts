import sharp, { type Metadata } from 'sharp';
import { isJpeg, imageAddon } from './image_addon.js';

/**
 * Turns any file sharp can read into 8-bit sRGB pixels with the EXIF orientation applied and alpha matted onto a
 * background. Never throws for a bad file: corrupt, truncated, empty, non-image and over-sized files come back as
 * a rejection with the reason, so one bad file cannot stop a million-image run.
 *
 * Optionally the decode also scales (`scaleTo`): a JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain
 * (shrink-on-load) and finished with Lanczos-3, so a large photo is never expanded to full resolution.
 *
 * JPEGs go to libjpeg-turbo (image_addon.ts) when the addon is built: 8-bit YCbCr or greyscale without an ICC profile,
 * EXIF orientation applied there. Everything else — other formats, CMYK/YCCK, ICC profiles (libvips converts those
 * to sRGB), and every file libjpeg-turbo reports an error or a warning for — goes through sharp, so a broken file
 * gets the same rejection text either way.
 */

export interface DecodedImage {
  /** Interleaved RGB, 8 bits per channel, row-major, after EXIF rotation (and `scaleTo`). */
  rgb: Uint8Array;
  width: number;
  height: number;
  /** Size of the full-resolution image after EXIF rotation (equal to width × height unless scaled on decode). */
  fullWidth: number;
  fullHeight: number;
  /** What the file was, for the manifest and report. */
  source: SourceFormat;
}

export interface SourceFormat {
  format: string;
  space: string;
  channels: number;
  depth: string;
  hasAlpha: boolean;
  orientation: number;
}

export interface DecodeRejection {
  reason: string;
  /** Short machine-readable class for counting: empty, pixel_limit, unsupported, corrupt. */
  code: 'empty' | 'pixel_limit' | 'unsupported' | 'corrupt';
}

export interface DecodeOptions {
  /** Background for alpha, [r, g, b] 0..255. */
  background: readonly [number, number, number];
  /** Files whose width × height exceeds this are refused before their pixels are decoded. */
  maxPixels: number;
  /**
   * Size to decode to, given the full size after EXIF rotation; undefined or the full size = no scaling. Scaling
   * uses Lanczos-3 and, for JPEG, shrink-on-load by 2, 4 or 8: through libjpeg-turbo whenever the target is at most
   * 1/2, 1/4, 1/8 of the source (dctScaleFor); through sharp only while a 2× Lanczos step remains after it (sharp's
   * `fastShrinkOnLoad: false` rule).
   */
  scaleTo?: (width: number, height: number) => { width: number; height: number } | undefined;
}

export function parseHexColour(hex: string): [number, number, number] {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  if (!m) throw new Error(`not a #rrggbb colour: ${hex}`);
  return [parseInt(m[1]!, 16), parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
}

export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions): Promise<DecodedImage | DecodeRejection> {
  if (bytes.byteLength === 0) return { code: 'empty', reason: 'empty file (0 bytes)' };
  const turbo = isJpeg(bytes) ? await decodeJpegTurbo(bytes, opts) : undefined;
  return turbo ?? decodeWithSharp(bytes, opts);
}

function pixelLimitRejection(width: number, height: number, maxPixels: number): DecodeRejection {
  return {
    code: 'pixel_limit',
    reason: `${width}x${height} = ${width * height} pixels exceeds max_pixels ${maxPixels} (possible decompression bomb)`,
  };
}

/**
 * The largest DCT scaling 1/d (d = 8, 4, 2) that keeps both sides at least the target's: shrink-on-load whenever the
 * target is at most half the source, so what remains is a Lanczos-3 step of less than 2× (none at all when the
 * target is exactly 1/d).
 */
export function dctScaleFor(full: { width: number; height: number }, target: { width: number; height: number }): 1 | 2 | 4 | 8 {
  for (const d of [8, 4, 2] as const) {
    if (target.width * d <= full.width && target.height * d <= full.height) return d;
  }
  return 1;
}

/** The libjpeg-turbo path; undefined hands the file to sharp (no addon, a file it does not take, any libjpeg complaint). */
async function decodeJpegTurbo(bytes: Uint8Array, opts: DecodeOptions): Promise<DecodedImage | DecodeRejection | undefined> {
  const codec = imageAddon();
  if (!codec) return undefined;
  const head = codec.jpegHeader(bytes);
  if (typeof head === 'string') return undefined;
  if ((head.components !== 1 && head.components !== 3) || head.icc || head.orientation < 0 || head.orientation > 8) return undefined;
  if (head.width * head.height > opts.maxPixels) return pixelLimitRejection(head.width, head.height, opts.maxPixels);
  const orientation = head.orientation || 1;
  const turned = orientation >= 5;
  const full = { width: turned ? head.height : head.width, height: turned ? head.width : head.height };
  const target = opts.scaleTo?.(full.width, full.height);
  const scale = target && (target.width !== full.width || target.height !== full.height) ? target : undefined;
  const decoded = codec.jpegDecode(bytes, scale ? dctScaleFor(full, scale) : 1, orientation);
  if (typeof decoded === 'string') return undefined;
  let img = { rgb: new Uint8Array(decoded.rgb.buffer, decoded.rgb.byteOffset, decoded.rgb.byteLength), width: decoded.width, height: decoded.height };
  if (scale && (img.width !== scale.width || img.height !== scale.height)) img = await lanczos3(img, scale.width, scale.height);
  return {
    ...img,
    fullWidth: full.width,
    fullHeight: full.height,
    source: {
      format: 'jpeg',
      space: head.components === 1 ? 'b-w' : 'srgb',
      channels: head.components,
      depth: 'uchar',
      hasAlpha: false,
      orientation,
    },
  };
}

/** RGB pixels resized with libvips' Lanczos-3 to exactly width × height. */
export async function lanczos3(img: { rgb: Uint8Array; width: number; height: number }, width: number, height: number): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(img.rgb, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

async function decodeWithSharp(bytes: Uint8Array, opts: DecodeOptions): Promise<DecodedImage | DecodeRejection> {
  // failOn 'warning' makes libjpeg's "premature end of data" (a truncated file) an error instead of grey rows.
  const input = { limitInputPixels: opts.maxPixels, failOn: 'warning' as const, pages: 1 };
  let meta: Metadata;
  try {
    // The header read has no pixel limit so an over-sized file is reported with its size below.
    // (sharp's default limit would otherwise refuse files over 2^28 pixels here with a vaguer message.)
    meta = await sharp(bytes, { failOn: 'warning', pages: 1, limitInputPixels: false }).metadata();
  } catch (e) {
    return { code: 'unsupported', reason: `not a readable image: ${firstLine(e)}` };
  }
  if (!meta.width || !meta.height) return { code: 'corrupt', reason: 'image has no size' };
  // Checked here as well as by sharp, so the reason states the numbers instead of libvips' wording.
  if (meta.width * meta.height > opts.maxPixels) return pixelLimitRejection(meta.width, meta.height, opts.maxPixels);
  const [r, g, b] = opts.background;
  const turned = (meta.orientation ?? 1) >= 5;
  const fullWidth = turned ? meta.height : meta.width;
  const fullHeight = turned ? meta.width : meta.height;
  const target = opts.scaleTo?.(fullWidth, fullHeight);
  const scale = target && (target.width !== fullWidth || target.height !== fullHeight) ? target : undefined;
  try {
    let pipeline = sharp(bytes, input).rotate().toColourspace('srgb').flatten({ background: { r, g, b } }).removeAlpha();
    if (scale) pipeline = pipeline.resize(scale.width, scale.height, { fit: 'fill', kernel: 'lanczos3', fastShrinkOnLoad: false });
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) return { code: 'corrupt', reason: `decoded to ${info.channels} channels, expected 3` };
    return {
      rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
      fullWidth: scale ? fullWidth : info.width,
      fullHeight: scale ? fullHeight : info.height,
      source: {
        format: meta.format ?? 'unknown',
        space: meta.space ?? 'unknown',
        channels: meta.channels ?? 0,
        depth: meta.depth ?? 'unknown',
        hasAlpha: meta.hasAlpha ?? false,
        orientation: meta.orientation ?? 1,
      },
    };
  } catch (e) {
    // libvips keeps the warning's own text per thread: a worker thread may only see the generic
    // "warning treated as error", so both name the same failure, and pool and single thread agree.
    const why = /premature end|Warning treated as error/i.test(firstLine(e)) ? 'truncated or corrupt data (a decoder warning, treated as an error)' : firstLine(e);
    return { code: 'corrupt', reason: `cannot decode ${meta.format ?? 'image'}: ${why}` };
  }
}

export function isRejection(d: DecodedImage | DecodeRejection): d is DecodeRejection {
  return 'reason' in d;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
}
