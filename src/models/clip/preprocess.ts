import sharp from 'sharp';

/**
 * CLIP's image preprocessing (openai/CLIP `_transform`, HF CLIPImageProcessor): resize so the shorter side is
 * `size`, centre-crop size×size, scale to [0, 1], normalise per channel with OpenAI's mean/std.
 *
 * The reference resamples with PIL's bicubic filter; this uses sharp's 'cubic' kernel (Catmull-Rom, a = -0.5,
 * as PIL's bicubic, which uses a = -0.5 too) with antialiasing on downscale, so values agree closely but not
 * bit for bit with PIL. Geometry follows HF: the longer side becomes floor(size · long / short), and the crop
 * starts at floor((side − size) / 2).
 */

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

export interface RgbImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** Size after the shortest-side resize. */
export function clipResizeSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.max(size, Math.floor((size * height) / width)) };
  return { width: Math.max(size, Math.floor((size * width) / height)), height: size };
}

/** Top-left corner of the centred size×size crop. */
export function clipCropOrigin(width: number, height: number, size: number): { left: number; top: number } {
  return { left: Math.floor((width - size) / 2), top: Math.floor((height - size) / 2) };
}

/** RGB bytes (HWC) → (x/255 − mean) / std, HWC float32. */
export function normaliseClipPixels(rgb: Uint8Array): Float32Array {
  const out = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) {
    const c = i % 3;
    out[i] = (rgb[i]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
  }
  return out;
}

/** The resized and cropped RGB bytes, size×size×3. Encoded images are decoded with EXIF rotation; alpha is matted onto white. */
export async function clipResizeCrop(input: Uint8Array | RgbImage, size: number): Promise<Uint8Array> {
  const img =
    input instanceof Uint8Array
      ? sharp(input).rotate().flatten({ background: '#ffffff' }).toColourspace('srgb').removeAlpha()
      : sharp(input.rgb, { raw: { width: input.width, height: input.height, channels: 3 } });
  const { data: decoded, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`CLIP preprocessing expected 3 channels after decoding, got ${info.channels}`);
  const target = clipResizeSize(info.width, info.height, size);
  const origin = clipCropOrigin(target.width, target.height, size);
  const { data } = await sharp(decoded, { raw: { width: info.width, height: info.height, channels: 3 } })
    .resize(target.width, target.height, { fit: 'fill', kernel: 'cubic' })
    .extract({ left: origin.left, top: origin.top, width: size, height: size })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** One image ready for ClipVisionModel.forward: [size, size, 3] HWC float32, normalised. */
export async function clipPreprocess(input: Uint8Array | RgbImage, size: number): Promise<Float32Array> {
  return normaliseClipPixels(await clipResizeCrop(input, size));
}
