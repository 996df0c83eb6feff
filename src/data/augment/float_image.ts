/**
 * The working format of the augmentation ops: HWC RGB float32 in [0, 1], the interval torchvision's
 * float-tensor functional ops assume. Working in floats (and rounding once at the end) avoids the
 * compounding truncation torchvision's uint8 path applies after every op.
 */
export interface FloatImage {
  data: Float32Array;
  width: number;
  height: number;
}

export function checkImage(img: FloatImage, what = 'image'): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${what} size must be positive integers, got ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new RangeError(`${what} has ${data.length} values, expected ${width}x${height}x3 = ${width * height * 3}`);
  }
}

export function rgb8ToFloat(rgb: Uint8Array, width: number, height: number): FloatImage {
  const data = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) data[i] = rgb[i]! / 255;
  const img = { data, width, height };
  checkImage(img);
  return img;
}

/** Round to nearest after clamping to [0, 1]; NaN becomes 0 so one bad value cannot poison a PNG. */
export function floatToRgb8(img: FloatImage): Uint8Array {
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = img.data[i]!;
    out[i] = Number.isNaN(v) ? 0 : Math.round(Math.min(1, Math.max(0, v)) * 255);
  }
  return out;
}

export function cloneImage(img: FloatImage): FloatImage {
  return { data: new Float32Array(img.data), width: img.width, height: img.height };
}
