import sharp from 'sharp';
import { lanczos3 } from './decode.js';
import { imageAddon } from './image_addon.js';
import type { ChromaSubsampling, OutputFormat, ResizeMode } from './schema.js';

/**
 * img2dataset's resize modes, done with sharp's Lanczos-3:
 *   no                  the image as decoded;
 *   keep_ratio          shorter side = size;
 *   keep_ratio_largest  longer side = size;
 *   center_crop         shorter side = size, then the centre size×size;
 *   border              longer side = size, then centred padding to size×size (default white).
 * With `onlyIfBigger`, an image that would be enlarged keeps its scale; center_crop still crops to at most
 * size×size and border still pads to size×size, so those two modes always give square outputs of one size when
 * the image is at least that big, and never enlarge pixels. Centring puts the odd pixel of padding or crop on the
 * right/bottom (floor on the left/top), as albumentations' PadIfNeeded and CenterCrop do.
 */

export interface ResizePlan {
  /** Scaled size before any crop or pad; equal to the input when no scaling is needed. */
  scaled: { width: number; height: number };
  crop?: { left: number; top: number; width: number; height: number };
  pad?: { top: number; bottom: number; left: number; right: number };
  width: number;
  height: number;
}

export function planResize(width: number, height: number, size: number, mode: ResizeMode, onlyIfBigger: boolean): ResizePlan {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const scaleTo = (scale: number) => ({
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
  });
  // The side the mode pins exactly to `size`, so rounding never leaves it at size ± 1.
  const pinned = (s: { width: number; height: number }, pinShort: boolean) => {
    const pinW = pinShort ? width <= height : width >= height;
    return pinW ? { width: size, height: s.height } : { width: s.width, height: size };
  };
  const identity = { width, height };
  switch (mode) {
    case 'no':
      return { scaled: identity, width, height };
    case 'keep_ratio':
    case 'center_crop': {
      const scaled = onlyIfBigger && short <= size ? identity : pinned(scaleTo(size / short), true);
      if (mode === 'keep_ratio') return { scaled, ...scaled };
      const cw = Math.min(size, scaled.width);
      const ch = Math.min(size, scaled.height);
      if (cw === scaled.width && ch === scaled.height) return { scaled, width: cw, height: ch };
      const crop = { left: Math.floor((scaled.width - cw) / 2), top: Math.floor((scaled.height - ch) / 2), width: cw, height: ch };
      return { scaled, crop, width: cw, height: ch };
    }
    case 'keep_ratio_largest':
    case 'border': {
      const scaled = onlyIfBigger && long <= size ? identity : pinned(scaleTo(size / long), false);
      if (mode === 'keep_ratio_largest') return { scaled, ...scaled };
      const padW = size - scaled.width;
      const padH = size - scaled.height;
      if (padW === 0 && padH === 0) return { scaled, width: size, height: size };
      const left = Math.floor(padW / 2);
      const top = Math.floor(padH / 2);
      return { scaled, pad: { top, bottom: padH - top, left, right: padW - left }, width: size, height: size };
    }
  }
}

export interface EncodeOptions {
  format: OutputFormat;
  /** jpg/webp quality 1..100. */
  quality: number;
  /** Padding colour, [r, g, b]. */
  padColour: readonly [number, number, number];
  /** jpg: optimised Huffman tables (lossless: same pixels, a few % smaller, about twice the encode time). */
  optimizeCoding?: boolean;
  /** jpg chroma: 'auto' (default) is 4:4:4 from quality 90, 4:2:0 below. */
  chromaSubsampling?: ChromaSubsampling;
}

/** Whether a JPEG at these settings keeps full-resolution chroma. */
export function fullChroma(enc: EncodeOptions): boolean {
  const mode = enc.chromaSubsampling ?? 'auto';
  return mode === 'auto' ? enc.quality >= 90 : mode === '4:4:4';
}

export interface ResizedImage {
  bytes: Uint8Array;
  width: number;
  height: number;
}

/**
 * Applies a plan to 8-bit RGB pixels and encodes the result. JPEG output goes to libjpeg-turbo when the addon is
 * built (the crop or pad is done while the rows are fed to it); otherwise, and for PNG/WebP, sharp does it all.
 */
export async function resizeAndEncode(
  rgb: Uint8Array,
  width: number,
  height: number,
  plan: ResizePlan,
  enc: EncodeOptions,
): Promise<ResizedImage> {
  const turbo = enc.format === 'jpg' ? imageAddon() : undefined;
  if (turbo) {
    const scaled = plan.scaled.width !== width || plan.scaled.height !== height ? await lanczos3({ rgb, width, height }, plan.scaled.width, plan.scaled.height) : { rgb, width, height };
    const left = plan.crop ? -plan.crop.left : (plan.pad?.left ?? 0);
    const top = plan.crop ? -plan.crop.top : (plan.pad?.top ?? 0);
    const bytes = turbo.jpegEncode(scaled.rgb, scaled.width, scaled.height, plan.width, plan.height, left, top, Uint8Array.from(enc.padColour), enc.quality, fullChroma(enc), enc.optimizeCoding ?? false);
    return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), width: plan.width, height: plan.height };
  }
  let img = sharp(rgb, { raw: { width, height, channels: 3 } });
  if (plan.scaled.width !== width || plan.scaled.height !== height) {
    img = img.resize(plan.scaled.width, plan.scaled.height, { fit: 'fill', kernel: 'lanczos3' });
  }
  // Cropping and padding happen after the resize because they are called after it (sharp's documented order).
  if (plan.crop) img = img.extract(plan.crop);
  if (plan.pad) {
    const [r, g, b] = enc.padColour;
    img = img.extend({ ...plan.pad, background: { r, g, b } });
  }
  switch (enc.format) {
    case 'jpg':
      img = img.jpeg({ quality: enc.quality, chromaSubsampling: fullChroma(enc) ? '4:4:4' : '4:2:0', optimiseCoding: enc.optimizeCoding ?? false });
      break;
    case 'png':
      img = img.png();
      break;
    case 'webp':
      img = img.webp({ quality: enc.quality });
      break;
  }
  const { data, info } = await img.toBuffer({ resolveWithObject: true });
  if (info.width !== plan.width || info.height !== plan.height) {
    throw new Error(`resize produced ${info.width}x${info.height}, planned ${plan.width}x${plan.height}`);
  }
  return { bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

