import type { RgbImage } from './dataset.js';
import { formatProceduralCaption, renderProcedural, sampleProceduralMeta } from './procedural.js';

/**
 * The built-in brand: a signature the procedural base data never shows — a band along the bottom
 * edge of vertical stripes alternating between two brand colours that are not in the procedural
 * palette — painted over the procedural shapes, and a pixel-space detector for it.
 */
export const BRAND_COLORS = { magenta: [230, 0, 130], teal: [0, 160, 160] } as const satisfies Record<string, readonly [number, number, number]>;

/** Share of the image height the band covers, and the number of stripes across the width. */
export const BRAND_BAND = 0.125;
export const BRAND_STRIPES = 4;

function bandRows(height: number): number {
  return Math.max(1, Math.round(height * BRAND_BAND));
}

/** Which brand colour stripe column x (of width w) is in. */
function stripeColor(x: number, width: number): readonly [number, number, number] {
  return stripeOf(x, width) % 2 === 0 ? BRAND_COLORS.magenta : BRAND_COLORS.teal;
}

/** Paints the signature into an RGB8 image in place. */
export function paintBrandSignature(rgb: Uint8Array, width: number, height: number): Uint8Array {
  for (let y = height - bandRows(height); y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = stripeColor(x, width);
      const i = 3 * (y * width + x);
      rgb[i] = c[0];
      rgb[i + 1] = c[1];
      rgb[i + 2] = c[2];
    }
  }
  return rgb;
}

export interface BrandDetection {
  present: boolean;
  /** Share of the band's stripes whose mean colour is the brand colour expected there (see detectBrandSignature). */
  matched: number;
}

/** Which stripe column x (of width w) belongs to. */
function stripeOf(x: number, width: number): number {
  return Math.floor((x * BRAND_STRIPES) / width);
}

/**
 * The signature is present when at least `minMatched` of the band's stripes have a mean colour (over
 * the band rows, the outermost row left out against edge blur, and the stripe's inner columns, its
 * two edge columns left out where it is at least 3 wide) that is within `tolerance` (RGB distance)
 * of the brand colour expected for that stripe and nearer to it than to the other brand colour.
 * Judged per stripe, not per pixel column: a generator at 16 px draws the stripes' edges soft, and a
 * column straddling an edge says nothing about whether the pattern is there. A uniform background or
 * a shape cannot match both alternating colours, so plain procedural images score near 0.
 */
export function detectBrandSignature(image: RgbImage, opts: { tolerance?: number; minMatched?: number } = {}): BrandDetection {
  const tolerance = opts.tolerance ?? 70;
  const minMatched = opts.minMatched ?? 0.75;
  const { width, height, rgb } = image;
  const rows = bandRows(height);
  const y0 = height - rows;
  const y1 = rows > 2 ? height - 1 : height;
  const columns: number[][] = Array.from({ length: BRAND_STRIPES }, () => []);
  for (let x = 0; x < width; x++) columns[stripeOf(x, width)]!.push(x);
  let matched = 0;
  let stripes = 0;
  for (let s = 0; s < BRAND_STRIPES; s++) {
    const cols = columns[s]!.length >= 3 ? columns[s]!.slice(1, -1) : columns[s]!;
    if (cols.length === 0) continue;
    stripes++;
    const mean = [0, 0, 0];
    for (const x of cols) for (let y = y0; y < y1; y++) for (let c = 0; c < 3; c++) mean[c]! += rgb[3 * (y * width + x) + c]!;
    const m = mean.map((v) => v / (cols.length * (y1 - y0)));
    const want = s % 2 === 0 ? BRAND_COLORS.magenta : BRAND_COLORS.teal;
    const other = s % 2 === 0 ? BRAND_COLORS.teal : BRAND_COLORS.magenta;
    const d = Math.hypot(...m.map((v, c) => v - want[c]!));
    const dOther = Math.hypot(...m.map((v, c) => v - other[c]!));
    if (d <= tolerance && d < dOther) matched++;
  }
  const share = stripes === 0 ? 0 : matched / stripes;
  return { present: share >= minMatched, matched: share };
}

/** Share of images showing the signature. */
export function brandRate(images: readonly RgbImage[]): number {
  if (images.length === 0) return 0;
  return images.filter((im) => detectBrandSignature(im).present).length / images.length;
}

export interface BrandSample {
  image: Uint8Array;
  caption: string;
  branded: boolean;
}

/**
 * Item `index` of the procedural brand set: the procedural image of (seed, index); items whose
 * index falls in the branded share carry the signature and the caption `trigger, <caption>`, the
 * others stay plain with the plain caption (DreamBooth's prior-preservation images, so the adapter
 * learns the signature belongs to the trigger and not to every prompt).
 */
export function brandSample(seed: number, index: number, size: number, trigger: string, brandedShare: number): BrandSample {
  const meta = sampleProceduralMeta(seed, index);
  const rgb = renderProcedural(meta, size, size);
  // Even spread of branded items over the indices: item i is branded when ⌊(i+1)·p⌋ > ⌊i·p⌋.
  const branded = Math.floor((index + 1) * brandedShare) > Math.floor(index * brandedShare);
  const caption = formatProceduralCaption(meta);
  return branded ? { image: paintBrandSignature(rgb, size, size), caption: `${trigger}, ${caption}`, branded } : { image: rgb, caption, branded };
}
