/**
 * Pillow's resampling coefficients (Resample.c `precompute_coeffs` and `normalize_coeffs_8bpc`), shared by
 * the perceptual hashes (curate: Lanczos on 8-bit images, imagededup's convention) and the FID/CLIP
 * preprocessing (eval: bicubic on float and 8-bit images, clean-fid's and CLIPImageProcessor's):
 * pixel centres at (i + ½)·scale, the filter's support widened by the downscale factor (antialiasing),
 * the filter evaluated at (x + xmin − centre + ½)·(1 / filterscale) and the weights normalised per output
 * pixel; for 8-bit images quantised to 22 fractional bits, rounding half away from zero.
 */

export type PilFilter = 'bicubic' | 'bilinear' | 'lanczos';

export const PIL_PRECISION_BITS = 22;

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

const FILTERS: Record<PilFilter, { support: number; f: (x: number) => number }> = {
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      if (x < 0) x = -x;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  bilinear: { support: 1, f: (x) => (x < 0 ? (x > -1 ? 1 + x : 0) : x < 1 ? 1 - x : 0) },
  lanczos: { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

/** Per output index: the first input index, how many inputs, and the weights (row o at o·stride). */
export interface PilTaps<W extends Float64Array | Int32Array = Float64Array> {
  first: Int32Array;
  count: Int32Array;
  stride: number;
  weights: W;
}

/** The normalised float weights resizing an axis of inSize samples to outSize with `filter`. */
export function pilTaps(inSize: number, outSize: number, filter: PilFilter): PilTaps {
  const { support: baseSupport, f } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = baseSupport * filterScale;
  const stride = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * stride);
  const ss = 1 / filterScale;
  for (let o = 0; o < outSize; o++) {
    const centre = (o + 0.5) * scale;
    // Math.trunc is C's (int) cast.
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const n = hi - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const w = f((k + lo - centre + 0.5) * ss);
      weights[o * stride + k] = w;
      sum += w;
    }
    if (sum !== 0) for (let k = 0; k < n; k++) weights[o * stride + k]! /= sum;
    first[o] = lo;
    count[o] = n;
  }
  return { first, count, stride, weights };
}

/** The same taps as Pillow's 8-bit path uses them: w·2^22 rounded half away from zero, as int32. */
export function pilTapsFixed(inSize: number, outSize: number, filter: PilFilter): PilTaps<Int32Array> {
  const t = pilTaps(inSize, outSize, filter);
  const one = 2 ** PIL_PRECISION_BITS;
  const weights = Int32Array.from(t.weights, (w) => (w < 0 ? Math.trunc(-0.5 + w * one) : Math.trunc(0.5 + w * one)));
  return { first: t.first, count: t.count, stride: t.stride, weights };
}
