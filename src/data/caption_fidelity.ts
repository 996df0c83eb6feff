import {
  COLOR_NAMES,
  PALETTE,
  POSITION_ANCHORS,
  POSITIONS,
  SHAPES,
  SIZE_EXTENTS,
  parseProceduralCaption,
  renderCoverage,
  shapeArea,
  shapeCentroidOffsetY,
  type ColorName,
  type PositionName,
  type ProceduralAttributes,
  type ShapeName,
  type SizeName,
} from './procedural.js';

/**
 * Does a generated image show what its procedural-grammar prompt asked for? A fixed pipeline, no
 * learned parts: background = median of the border ring; shape colour = median of the pixels
 * farthest from it; per-pixel coverage by unmixing each pixel onto the background→shape-colour
 * line; shape = the template (rendered at the measured area and centroid) that overlaps the
 * coverage map best; position = nearest anchor to that template's box centre.
 */

/** Uint8Array holds 0–255, Float32Array 0–1; HWC RGB either way. */
export interface FidelityImage {
  rgb: Uint8Array | Float32Array;
  width: number;
  height: number;
}

export interface DetectedAttributes {
  background: ColorName | null;
  color: ColorName | null;
  shape: ShapeName | null;
  position: PositionName | null;
  size: SizeName | null;
  /** Soft intersection-over-union of the coverage map with the best shape template, 0–1. */
  shapeMatch: number;
  /** Estimated colours, sRGB 0–255. */
  backgroundRgb: [number, number, number];
  shapeRgb: [number, number, number] | null;
}

export interface FidelityResult {
  color: boolean;
  position: boolean;
  shape: boolean;
  background: boolean;
  /** null when the prompt names no size; not part of `score`. */
  size: boolean | null;
  /** Mean of color, position, shape and background: 0, 0.25, …, 1. */
  score: number;
  detected: DetectedAttributes;
}

export interface FidelitySummary {
  count: number;
  score: number;
  accuracy: { color: number; position: number; shape: number; background: number; size: number | null };
}

/** Distance (sRGB, 0–255 units) within which a pixel counts as "the same colour" as a reference. */
const SAME_COLOR = 40;
/** A pixel this far from the background may belong to the shape. Below half the closest palette pair (≈110). */
const FOREGROUND_DISTANCE = 48;
/** Share of border (resp. shape-core) pixels that must match their median for a flat colour to be declared. */
const FLAT_SHARE = 0.6;
/**
 * Coverage below the floor is treated as background noise and the rest stretched back to [0, 1]:
 * at least this much, more when the border shows pixel noise (3σ along the unmixing axis).
 */
const MIN_COVERAGE_FLOOR = 0.1;
const MAX_COVERAGE_FLOOR = 0.4;
/** A template overlap under this means no recognisable shape is present. */
const MIN_SHAPE_MATCH = 0.5;
const MIN_SIDE = 16;

/** CIE L*a*b* (D65) of an sRGB 0–255 colour. */
export function srgbToLab(rgb: readonly [number, number, number] | readonly number[]): [number, number, number] {
  const lin = rgb.map((v) => {
    const c = v / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const [r, g, b] = lin as [number, number, number];
  const x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
  const y = 0.2126729 * r + 0.7151522 * g + 0.072175 * b;
  const z = (0.0193339 * r + 0.119192 * g + 0.9503041 * b) / 1.08883;
  const f = (t: number): number => (t > (6 / 29) ** 3 ? Math.cbrt(t) : t / (3 * (6 / 29) ** 2) + 4 / 29);
  const fx = f(x);
  const fy = f(y);
  const fz = f(z);
  return [116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)];
}

const PALETTE_LAB = COLOR_NAMES.map((name) => [name, srgbToLab(PALETTE[name])] as const);

/** The palette colour nearest in Lab (ΔE*76). */
export function nearestPaletteColor(rgb: readonly number[]): ColorName {
  const lab = srgbToLab(rgb);
  let best: ColorName = COLOR_NAMES[0]!;
  let bestD = Infinity;
  for (const [name, ref] of PALETTE_LAB) {
    const d = (lab[0] - ref[0]) ** 2 + (lab[1] - ref[1]) ** 2 + (lab[2] - ref[2]) ** 2;
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function dist(p: readonly number[], q: readonly number[]): number {
  return Math.hypot(p[0]! - q[0]!, p[1]! - q[1]!, p[2]! - q[2]!);
}

/** Median colour of the given pixels and whether most of them sit close to it. */
function flatColor(pixels: number[][]): { rgb: [number, number, number]; flat: boolean } {
  const rgb: [number, number, number] = [0, 1, 2].map((c) => median(pixels.map((p) => p[c]!))) as [number, number, number];
  const close = pixels.filter((p) => dist(p, rgb) <= SAME_COLOR).length;
  return { rgb, flat: close >= FLAT_SHARE * pixels.length };
}

interface ShapeFit {
  shape: ShapeName;
  match: number;
  extent: number;
  /** Bounding-box centre of the fitted template, pixels. */
  cx: number;
  cy: number;
}

/** Coverage by unmixing each pixel between `bg` and `fg`, then the best-overlapping shape template. */
function fitShape(
  px: (i: number) => number[],
  w: number,
  h: number,
  bg: readonly number[],
  fg: readonly number[],
  noiseSigma: number,
): ShapeFit | null {
  const n = w * h;
  const axis = fg.map((v, c) => v - bg[c]!);
  const axisSq = axis[0]! ** 2 + axis[1]! ** 2 + axis[2]! ** 2;
  if (axisSq === 0) return null;
  const floor = Math.min(MAX_COVERAGE_FLOOR, Math.max(MIN_COVERAGE_FLOOR, (3 * noiseSigma) / Math.sqrt(axisSq)));
  const coverage = new Float32Array(n);
  let mass = 0;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    const p = px(i);
    const t = ((p[0]! - bg[0]!) * axis[0]! + (p[1]! - bg[1]!) * axis[1]! + (p[2]! - bg[2]!) * axis[2]!) / axisSq;
    const a = Math.min(1, Math.max(0, (t - floor) / (1 - 2 * floor)));
    coverage[i] = a;
    mass += a;
    mx += a * ((i % w) + 0.5);
    my += a * (Math.floor(i / w) + 0.5);
  }
  if (mass < 1) return null;
  mx /= mass;
  my /= mass;
  let best: ShapeFit | null = null;
  for (const shape of SHAPES) {
    const extent = Math.sqrt(mass / shapeArea(shape, 1));
    const cy = my - shapeCentroidOffsetY(shape, extent);
    const template = renderCoverage(w, h, shape, mx, cy, extent);
    let inter = 0;
    let union = 0;
    for (let i = 0; i < n; i++) {
      inter += Math.min(coverage[i]!, template[i]!);
      union += Math.max(coverage[i]!, template[i]!);
    }
    const match = inter / union;
    if (!best || match > best.match) best = { shape, match, extent, cx: mx, cy };
  }
  return best;
}

/** What is in the image, independent of any prompt. */
export function analyzeProceduralImage(image: FidelityImage): DetectedAttributes {
  const { width: w, height: h } = image;
  if (w < MIN_SIDE || h < MIN_SIDE) throw new RangeError(`caption fidelity needs images of at least ${MIN_SIDE}×${MIN_SIDE}, got ${w}×${h}`);
  if (image.rgb.length !== w * h * 3) throw new RangeError(`image buffer has ${image.rgb.length} values, expected ${w * h * 3}`);
  const unit = image.rgb instanceof Float32Array ? 255 : 1;
  const px = (i: number): number[] => [image.rgb[3 * i]! * unit, image.rgb[3 * i + 1]! * unit, image.rgb[3 * i + 2]! * unit];

  const border: number[][] = [];
  for (let x = 0; x < w; x++) border.push(px(x), px((h - 1) * w + x));
  for (let y = 1; y < h - 1; y++) border.push(px(y * w), px(y * w + w - 1));
  const bg = flatColor(border);
  // For Gaussian noise of σ per channel, the median distance to the true colour is ≈ 1.54σ.
  const noiseSigma = median(border.map((p) => dist(p, bg.rgb))) / 1.54;
  const none: DetectedAttributes = {
    background: bg.flat ? nearestPaletteColor(bg.rgb) : null,
    color: null,
    shape: null,
    position: null,
    size: null,
    shapeMatch: 0,
    backgroundRgb: bg.rgb,
    shapeRgb: null,
  };

  const n = w * h;
  const far: number[] = [];
  const distance = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    distance[i] = dist(px(i), bg.rgb);
    if (distance[i]! > FOREGROUND_DISTANCE) far.push(i);
  }
  if (far.length === 0) return none;
  // The shape's interior is the bulk of the far pixels; its edges are blends, so keep the farthest.
  const sortedFar = far.map((i) => distance[i]!).sort((a, b) => a - b);
  const p90 = sortedFar[Math.floor(0.9 * (sortedFar.length - 1))]!;
  const fg = flatColor(far.filter((i) => distance[i]! >= 0.85 * p90).map(px));
  const color = fg.flat ? nearestPaletteColor(fg.rgb) : null;
  // Thin or tiny shapes have no fully covered pixel, so the measured colour is itself a blend;
  // unmixing towards the named palette colour instead can then fit far better. Keep the better.
  const ends: number[][] = [fg.rgb];
  if (color) ends.push([...PALETTE[color]]);
  let fit: ShapeFit | null = null;
  for (const end of ends) {
    const f = fitShape(px, w, h, bg.rgb, end, noiseSigma);
    if (f && (!fit || f.match > fit.match)) fit = f;
  }
  if (!fit) return { ...none, shapeRgb: fg.rgb, color };
  const best = fit;
  const found = best.match >= MIN_SHAPE_MATCH;
  const bx = best.cx / w;
  const by = best.cy / h;
  let position: PositionName = POSITIONS[0];
  let bestD = Infinity;
  for (const p of POSITIONS) {
    const [ax, ay] = POSITION_ANCHORS[p];
    const d = (bx - ax) ** 2 + (by - ay) ** 2;
    if (d < bestD) {
      bestD = d;
      position = p;
    }
  }
  const side = Math.min(w, h);
  const sizeSplit = (SIZE_EXTENTS.small + SIZE_EXTENTS.large) / 2;
  return {
    ...none,
    color,
    shapeRgb: fg.rgb,
    shape: found ? best.shape : null,
    position: found ? position : null,
    size: found ? (best.extent / side >= sizeSplit ? 'large' : 'small') : null,
    shapeMatch: best.match,
  };
}

/** Scores one image against a prompt (attributes, or a caption in the procedural grammar). */
export function scoreCaptionFidelity(image: FidelityImage, prompt: ProceduralAttributes | string): FidelityResult {
  const want = typeof prompt === 'string' ? parseProceduralCaption(prompt) : prompt;
  if (!want) throw new Error(`prompt is not in the procedural caption grammar: ${JSON.stringify(prompt)}`);
  const got = analyzeProceduralImage(image);
  const color = got.color === want.color;
  const position = got.position === want.position;
  const shape = got.shape === want.shape;
  const background = got.background === want.background;
  return {
    color,
    position,
    shape,
    background,
    size: want.size ? got.size === want.size : null,
    score: (Number(color) + Number(position) + Number(shape) + Number(background)) / 4,
    detected: got,
  };
}

/** Mean score and per-attribute accuracy; size accuracy counts only prompts that named a size. */
export function aggregateFidelity(results: FidelityResult[]): FidelitySummary {
  const n = results.length;
  const mean = (f: (r: FidelityResult) => number): number => (n === 0 ? 0 : results.reduce((s, r) => s + f(r), 0) / n);
  const sized = results.filter((r) => r.size !== null);
  return {
    count: n,
    score: mean((r) => r.score),
    accuracy: {
      color: mean((r) => Number(r.color)),
      position: mean((r) => Number(r.position)),
      shape: mean((r) => Number(r.shape)),
      background: mean((r) => Number(r.background)),
      size: sized.length === 0 ? null : sized.filter((r) => r.size).length / sized.length,
    },
  };
}
