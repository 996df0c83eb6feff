import sharp, { type Metadata } from 'sharp';

/**
 * Turns any file sharp can read into 8-bit sRGB pixels with the EXIF orientation applied and alpha matted onto a
 * background. Never throws for a bad file: corrupt, truncated, empty, non-image and over-sized files come back as
 * a rejection with the reason, so one bad file cannot stop a million-image run.
 *
 * Optionally the decode also scales (`scaleTo`): libvips then decodes a JPEG at 1/2, 1/4 or 1/8 of its size in the
 * DCT domain (shrink-on-load) and finishes with Lanczos-3, so a large photo is never expanded to full resolution.
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
   * uses Lanczos-3 and, for JPEG, shrink-on-load by 2, 4 or 8 while at least a 2× Lanczos step remains (sharp's
   * `fastShrinkOnLoad: false` rule), so the result stays close to a full decode followed by Lanczos-3.
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
  if (meta.width * meta.height > opts.maxPixels) {
    return {
      code: 'pixel_limit',
      reason: `${meta.width}x${meta.height} = ${meta.width * meta.height} pixels exceeds max_pixels ${opts.maxPixels} (possible decompression bomb)`,
    };
  }
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
