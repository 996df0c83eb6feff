import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The libjpeg-turbo addon (native/src/jpeg.cc, built as scaleforge_jpeg.node where the system has jpeglib.h):
 * JPEG header, decode with DCT-domain scaling and EXIF orientation, and encode with a centred pad or crop. Without
 * it (or with SCALEFORGE_JPEG=libvips) curation decodes and encodes every JPEG with sharp, as before.
 */

export interface JpegHeader {
  width: number;
  height: number;
  components: number;
  colourSpace: 'grayscale' | 'ycbcr' | 'rgb' | 'cmyk' | 'ycck' | 'unknown';
  progressive: boolean;
  /** EXIF orientation 1..8; 0 when the file has none; -1 when its EXIF block cannot be read. */
  orientation: number;
  /** An embedded ICC profile (APP2 ICC_PROFILE). */
  icc: boolean;
}

export interface JpegTurbo {
  /** The header, or libjpeg's message when it cannot be read. */
  header(bytes: Uint8Array): JpegHeader | string;
  /** RGB pixels at 1/scaleDenom of the stored size, EXIF orientation applied; or libjpeg's error or warning. */
  decode(bytes: Uint8Array, scaleDenom: 1 | 2 | 4 | 8, orientation: number): { rgb: Buffer; width: number; height: number } | string;
  /** JPEG of an outWidth × outHeight canvas in `background` with the RGB source placed at (left, top). */
  encode(
    rgb: Uint8Array,
    width: number,
    height: number,
    outWidth: number,
    outHeight: number,
    left: number,
    top: number,
    background: Uint8Array,
    quality: number,
    chroma444: boolean,
    optimize: boolean,
  ): Buffer;
  version(): string;
}

const addonPath = fileURLToPath(new URL('../../native/build/Release/scaleforge_jpeg.node', import.meta.url));
let loaded: { codec?: JpegTurbo; why?: string } | undefined;

function load(): { codec?: JpegTurbo; why?: string } {
  if (process.env.SCALEFORGE_JPEG === 'libvips') return { why: 'SCALEFORGE_JPEG=libvips' };
  if (!existsSync(addonPath)) return { why: 'native/build/Release/scaleforge_jpeg.node not built (needs jpeglib.h: apt-get install libjpeg62-turbo-dev, then `npm run build:native`)' };
  try {
    return { codec: createRequire(import.meta.url)(addonPath) as JpegTurbo };
  } catch (e) {
    return { why: `cannot load ${addonPath}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** The addon, or undefined when it is not built, cannot load, or SCALEFORGE_JPEG=libvips asks for sharp alone. */
export function jpegTurbo(): JpegTurbo | undefined {
  loaded ??= load();
  return loaded.codec;
}

/** Which JPEG codec curation uses (part of the settings fingerprint: its outputs differ by a few levels). */
export function jpegCodecName(): string {
  const codec = jpegTurbo();
  return codec ? `libjpeg-turbo ${codec.version()}` : 'libvips';
}

/** Why the addon is not in use, or undefined when it is. */
export function jpegTurboMissing(): string | undefined {
  jpegTurbo();
  return loaded!.why;
}

export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.byteLength > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}
