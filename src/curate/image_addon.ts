import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The image addon (native/src/image_addon.cc, built as scaleforge_image.node where the system has jpeglib.h):
 * libjpeg-turbo JPEG header, decode with DCT-domain scaling and EXIF orientation, encode with a centred pad or crop
 * (jpeg.cc), Pillow's Lanczos resize (pil_resample.cc, the twin of pil_resize.ts) and the quality measures
 * (luma_measures.cc, the twin of filters.ts's). Without it (or with
 * SCALEFORGE_JPEG=libvips) curation decodes and encodes every JPEG with sharp and resizes in JS, as before.
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

export interface ImageAddon {
  /** The header, or libjpeg's message when it cannot be read. */
  jpegHeader(bytes: Uint8Array): JpegHeader | string;
  /** RGB pixels at 1/scaleDenom of the stored size, EXIF orientation applied; or libjpeg's error or warning. */
  jpegDecode(bytes: Uint8Array, scaleDenom: 1 | 2 | 4 | 8, orientation: number): { rgb: Buffer; width: number; height: number } | string;
  /** JPEG of an outWidth × outHeight canvas in `background` with the RGB source placed at (left, top). */
  jpegEncode(
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
  jpegVersion(): string;
  /** Pillow's resize(LANCZOS) of interleaved 8-bit pixels (1–4 channels), byte for byte as resizeLanczos8 in JS. */
  pilResize(src: Uint8Array, width: number, height: number, channels: number, outWidth: number, outHeight: number): Buffer;
  /** filters.ts's three measures of an RGB image in one native pass (qualityOfJs is the reference). */
  lumaMeasures(rgb: Uint8Array, width: number, height: number): { brightness: number; entropy: number; blurVariance: number };
}

const addonPath = fileURLToPath(new URL('../../native/build/Release/scaleforge_image.node', import.meta.url));
let loaded: { addon?: ImageAddon; why?: string } | undefined;

function load(): { addon?: ImageAddon; why?: string } {
  if (process.env.SCALEFORGE_JPEG === 'libvips') return { why: 'SCALEFORGE_JPEG=libvips' };
  if (!existsSync(addonPath)) return { why: 'native/build/Release/scaleforge_image.node not built (needs jpeglib.h: apt-get install libjpeg62-turbo-dev, then `npm run build:native`)' };
  try {
    return { addon: createRequire(import.meta.url)(addonPath) as ImageAddon };
  } catch (e) {
    return { why: `cannot load ${addonPath}: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** The addon, or undefined when it is not built, cannot load, or SCALEFORGE_JPEG=libvips asks for sharp alone. */
export function imageAddon(): ImageAddon | undefined {
  loaded ??= load();
  return loaded.addon;
}

/** Which JPEG codec curation uses (part of the settings fingerprint: its outputs differ by a few levels). */
export function jpegCodecName(): string {
  const addon = imageAddon();
  return addon ? `libjpeg-turbo ${addon.jpegVersion()}` : 'libvips';
}

/** Why the addon is not in use, or undefined when it is. */
export function jpegTurboMissing(): string | undefined {
  imageAddon();
  return loaded!.why;
}

export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.byteLength > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}
