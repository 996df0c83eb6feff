import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { encodePng, readImageRgb8 } from '../io/image.js';
import { Rng } from '../util/rng.js';
import { checkIndex, type Dataset, type Sample } from './dataset.js';

/**
 * A captioned toy dataset drawn on the fly: one flat shape per image, named colour, named place,
 * two sizes, on a flat background of another named colour. Each image depends only on
 * (seed, index), so any sample can be rendered alone and the set is identical on every machine.
 * Shapes and colours were chosen to stay tellable apart after downsampling to 16×16.
 */

export const SHAPES = ['circle', 'square', 'triangle', 'cross'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** sRGB 0–255. Hue/lightness spread so the nearest-colour test has wide margins. */
export const PALETTE = {
  red: [220, 30, 30],
  green: [30, 170, 50],
  blue: [35, 70, 225],
  yellow: [245, 215, 30],
  purple: [140, 45, 175],
  orange: [250, 135, 15],
  white: [245, 245, 245],
  black: [20, 20, 20],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColorName = keyof typeof PALETTE;
export const COLOR_NAMES = Object.keys(PALETTE) as ColorName[];

export const POSITIONS = ['top left', 'top right', 'bottom left', 'bottom right', 'center'] as const;
export type PositionName = (typeof POSITIONS)[number];
/** Where each named position puts the shape's bounding-box centre, as fractions of width/height. */
export const POSITION_ANCHORS: Record<PositionName, readonly [number, number]> = {
  'top left': [0.25, 0.25],
  'top right': [0.75, 0.25],
  'bottom left': [0.25, 0.75],
  'bottom right': [0.75, 0.75],
  center: [0.5, 0.5],
};

export const SIZES = ['small', 'large'] as const;
export type SizeName = (typeof SIZES)[number];
/** Bounding-box side as a fraction of the image side. */
export const SIZE_EXTENTS: Record<SizeName, number> = { small: 0.24, large: 0.38 };

/**
 * Per-sample variation inside one caption: ±3% of the side in position, ±6% in extent. The
 * largest shape at an edge anchor then still clears the border (0.25 − 0.03 − 0.38·1.06/2 > 0),
 * and small/large never overlap (0.24·1.06 < 0.38·0.94).
 */
const POSITION_JITTER = 0.03;
const EXTENT_JITTER = 0.06;
const SUPERSAMPLE = 4;

export interface ProceduralAttributes {
  shape: ShapeName;
  color: ColorName;
  background: ColorName;
  position: PositionName;
  /** Optional in a parsed prompt; always present in generated captions. */
  size?: SizeName;
}

export interface ProceduralMeta extends ProceduralAttributes {
  size: SizeName;
  /** Bounding-box centre as fractions of width and height. */
  center: [number, number];
  /** Bounding-box side as a fraction of the image side. */
  extent: number;
}

/** Is the point (dx, dy), relative to the bounding-box centre, inside a shape of side `e`? (y points down) */
export function shapeContains(shape: ShapeName, dx: number, dy: number, e: number): boolean {
  const h = e / 2;
  const ax = Math.abs(dx);
  const ay = Math.abs(dy);
  switch (shape) {
    case 'circle':
      return dx * dx + dy * dy <= h * h;
    case 'square':
      return ax <= h && ay <= h;
    case 'triangle':
      // Apex up at the top edge, base along the bottom edge: half-width grows from 0 to e/2.
      return dy >= -h && dy <= h && ax <= (dy + h) / 2;
    case 'cross':
      return (ax <= e / 6 && ay <= h) || (ay <= e / 6 && ax <= h);
  }
}

/** Exact area of a shape whose bounding box has side `e`. */
export function shapeArea(shape: ShapeName, e: number): number {
  const k = { circle: Math.PI / 4, square: 1, triangle: 0.5, cross: 5 / 9 }[shape];
  return k * e * e;
}

/** Vertical offset from the bounding-box centre to the area centroid (the triangle's sits low). */
export function shapeCentroidOffsetY(shape: ShapeName, e: number): number {
  return shape === 'triangle' ? e / 6 : 0;
}

/**
 * Fraction of each pixel covered by the shape, by a SUPERSAMPLE² grid of point samples per
 * pixel (the box-downsample of a ×SUPERSAMPLE render). Centre and extent are in pixels.
 */
export function renderCoverage(
  width: number,
  height: number,
  shape: ShapeName,
  cx: number,
  cy: number,
  extent: number,
): Float32Array {
  const out = new Float32Array(width * height);
  const r = extent / 2 + 1;
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(width - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(height - 1, Math.ceil(cy + r));
  const n = SUPERSAMPLE;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      let hits = 0;
      for (let sy = 0; sy < n; sy++) {
        const dy = y + (sy + 0.5) / n - cy;
        for (let sx = 0; sx < n; sx++) {
          if (shapeContains(shape, x + (sx + 0.5) / n - cx, dy, extent)) hits++;
        }
      }
      out[y * width + x] = hits / (n * n);
    }
  }
  return out;
}

/** Blends the shape colour over the background by coverage (in sRGB values, as the scorer assumes). */
export function renderProcedural(meta: ProceduralMeta, width: number, height: number): Uint8Array {
  const side = Math.min(width, height);
  const alpha = renderCoverage(width, height, meta.shape, meta.center[0] * width, meta.center[1] * height, meta.extent * side);
  const fg = PALETTE[meta.color];
  const bg = PALETTE[meta.background];
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    const a = alpha[i]!;
    for (let c = 0; c < 3; c++) rgb[3 * i + c] = Math.round(bg[c]! + (fg[c]! - bg[c]!) * a);
  }
  return rgb;
}

/** The attributes and exact geometry of sample `index`; depends on nothing but (seed, index). */
export function sampleProceduralMeta(seed: number, index: number): ProceduralMeta {
  const rng = new Rng(seed).fork(`procedural:${index}`);
  const shape = SHAPES[rng.int(SHAPES.length)]!;
  const color = COLOR_NAMES[rng.int(COLOR_NAMES.length)]!;
  const others = COLOR_NAMES.filter((c) => c !== color);
  const background = others[rng.int(others.length)]!;
  const position = POSITIONS[rng.int(POSITIONS.length)]!;
  const size = SIZES[rng.int(SIZES.length)]!;
  const [ax, ay] = POSITION_ANCHORS[position];
  const center: [number, number] = [
    ax + rng.range(-POSITION_JITTER, POSITION_JITTER),
    ay + rng.range(-POSITION_JITTER, POSITION_JITTER),
  ];
  const extent = SIZE_EXTENTS[size] * rng.range(1 - EXTENT_JITTER, 1 + EXTENT_JITTER);
  return { shape, color, background, position, size, center, extent };
}

function withArticle(word: string): string {
  return `${/^[aeiou]/.test(word) ? 'an' : 'a'} ${word}`;
}

/** "a large red circle in the top left on a blue background" (size omitted when absent). */
export function formatProceduralCaption(a: ProceduralAttributes): string {
  const noun = a.size ? `${a.size} ${a.color} ${a.shape}` : `${a.color} ${a.shape}`;
  return `${withArticle(noun)} in the ${a.position} on ${withArticle(a.background)} background`;
}

const CAPTION_PATTERN = new RegExp(
  `^an? (?:(${SIZES.join('|')}) )?(${COLOR_NAMES.join('|')}) (${SHAPES.join('|')}) ` +
    `in the (${POSITIONS.join('|')}) on an? (${COLOR_NAMES.join('|')}) background\\.?$`,
);

/** Inverse of formatProceduralCaption (case and surrounding/repeated spaces ignored); null if not in the grammar. */
export function parseProceduralCaption(caption: string): ProceduralAttributes | null {
  const m = CAPTION_PATTERN.exec(caption.trim().toLowerCase().replace(/\s+/g, ' '));
  if (!m) return null;
  const attrs: ProceduralAttributes = {
    shape: m[3] as ShapeName,
    color: m[2] as ColorName,
    background: m[5] as ColorName,
    position: m[4] as PositionName,
  };
  if (m[1]) attrs.size = m[1] as SizeName;
  return attrs;
}

export function mirrorPosition(p: PositionName): PositionName {
  return p.replace(/left|right/, (s) => (s === 'left' ? 'right' : 'left')) as PositionName;
}

export interface ProceduralOptions {
  /** Image side in pixels (square). Default 64. */
  size?: number;
  count?: number;
  seed?: number;
  /**
   * Parent folder of the PNG cache; default `datasets/.cache` under the working directory.
   * `null` keeps everything in memory (rendered lazily on first access).
   */
  cacheDir?: string | null;
}

/** Bump when rendering changes, so stale caches are not reused. */
const GENERATOR_VERSION = 1;

interface CaptionRecord {
  file_name: string;
  text: string;
  meta: ProceduralMeta;
}

export class ProceduralDataset implements Dataset<ProceduralMeta> {
  readonly width: number;
  readonly height: number;
  readonly length: number;
  private readonly images: (Uint8Array | undefined)[];
  private readonly metas: ProceduralMeta[];

  private constructor(
    readonly seed: number,
    size: number,
    count: number,
    /** The folder the PNGs and captions.jsonl live in, or null when in memory only. */
    readonly cachePath: string | null,
    images?: Uint8Array[],
  ) {
    this.width = size;
    this.height = size;
    this.length = count;
    this.metas = Array.from({ length: count }, (_, i) => sampleProceduralMeta(seed, i));
    this.images = images ?? new Array<Uint8Array | undefined>(count);
  }

  static async create(opts: ProceduralOptions = {}): Promise<ProceduralDataset> {
    const size = opts.size ?? 64;
    const count = opts.count ?? 2048;
    const seed = opts.seed ?? 0;
    if (!Number.isInteger(size) || size < 8) throw new RangeError(`procedural size must be an integer ≥ 8, got ${size}`);
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`procedural count must be a positive integer, got ${count}`);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`procedural seed must be a uint32, got ${seed}`);
    if (opts.cacheDir === null) return new ProceduralDataset(seed, size, count, null);
    const dir = join(opts.cacheDir ?? join('datasets', '.cache'), `procedural-${cacheKey(size, count, seed)}`);
    const cached = await loadCache(dir, size, count);
    if (cached) return new ProceduralDataset(seed, size, count, dir, cached);
    const ds = new ProceduralDataset(seed, size, count, dir);
    await ds.writeCache(dir);
    return ds;
  }

  get(index: number): Sample<ProceduralMeta> {
    checkIndex(this, index);
    const meta = this.metas[index]!;
    let image = this.images[index];
    if (!image) {
      image = renderProcedural(meta, this.width, this.height);
      this.images[index] = image;
    }
    return { image, caption: formatProceduralCaption(meta), meta };
  }

  /** Captions name left/right, so a mirrored image needs the mirrored caption to stay true. */
  mirrorCaption(caption: string): string {
    const a = parseProceduralCaption(caption);
    if (!a) return caption;
    return formatProceduralCaption({ ...a, position: mirrorPosition(a.position) });
  }

  /**
   * Renders everything into a private temp folder and renames it into place, so a concurrent or
   * interrupted run never leaves (or reads) a half-written cache.
   */
  private async writeCache(dir: string): Promise<void> {
    const tmp = `${dir}.tmp-${process.pid}-${Date.now().toString(36)}`;
    await mkdir(tmp, { recursive: true });
    try {
      const limit = pLimit(4);
      const records: CaptionRecord[] = [];
      await Promise.all(
        Array.from({ length: this.length }, (_, i) =>
          limit(async () => {
            const s = this.get(i);
            const file = `${String(i).padStart(6, '0')}.png`;
            records[i] = { file_name: file, text: s.caption, meta: s.meta };
            await writeFile(join(tmp, file), await encodePng(s.image, this.width, this.height));
          }),
        ),
      );
      await writeFile(join(tmp, 'captions.jsonl'), records.map((r) => JSON.stringify(r)).join('\n') + '\n');
      if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      // Another process finishing the same cache first is not an error: its copy is identical.
      if ((e as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (e as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw e;
    }
  }
}

function cacheKey(size: number, count: number, seed: number): string {
  const key = JSON.stringify({ v: GENERATOR_VERSION, size, count, seed });
  return createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/** The cached images, or null when the folder is missing or incomplete (then it is rebuilt). */
async function loadCache(dir: string, size: number, count: number): Promise<Uint8Array[] | null> {
  let lines: string[];
  try {
    lines = (await readFile(join(dir, 'captions.jsonl'), 'utf8')).split('\n').filter((l) => l.length > 0);
  } catch {
    return null;
  }
  if (lines.length !== count) return null;
  const limit = pLimit(4);
  try {
    return await Promise.all(
      lines.map((line) =>
        limit(async () => {
          const rec = JSON.parse(line) as CaptionRecord;
          const im = await readImageRgb8(join(dir, rec.file_name));
          if (im.width !== size || im.height !== size) throw new Error(`${rec.file_name} is ${im.width}x${im.height}`);
          return im.rgb;
        }),
      ),
    );
  } catch {
    return null;
  }
}
