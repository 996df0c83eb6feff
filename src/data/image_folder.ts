import { readFile, stat } from 'node:fs/promises';
import { extname, join, posix, resolve, sep } from 'node:path';
import fg from 'fast-glob';
import pLimit from 'p-limit';
import sharp from 'sharp';
import { UsageError } from '../util/errors.js';
import { checkIndex, type Dataset, type Sample } from './dataset.js';

/**
 * A folder tree of captioned images, decoded once into memory at a fixed square size.
 *
 * Captions, per image `dir/name.ext`, first found wins:
 *   1. a sidecar `dir/name.txt` or `dir/name.caption` (kohya style);
 *   2. a line `{"file_name": "name.ext", "text": "…"}` (or `"caption"`) in a `metadata.jsonl` or
 *      `captions.jsonl` anywhere above it, `file_name` relative to that manifest's folder
 *      (Hugging Face imagefolder style).
 *
 * Decoding: EXIF orientation applied, converted to sRGB, alpha flattened onto white, the shorter
 * side resized to the target with Lanczos3 and the centre cropped square. Bad files do not stop
 * loading; they are listed in `skipped` with the reason.
 *
 * Memory: every image is held as size²·3 bytes (64² → 12 KiB, 256² → 192 KiB). Loading refuses
 * more than `maxImages` (default 50 000) files or `maxBytes` (default 2 GiB) of decoded pixels
 * before decoding anything.
 */

export const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg', 'webp'] as const;
const MANIFEST_NAMES = ['metadata.jsonl', 'captions.jsonl'];
const SIDECAR_EXTENSIONS = ['.txt', '.caption'];

export interface ImageFolderOptions {
  root: string;
  /** Side of the square images produced, pixels. */
  size: number;
  /** Upscale images whose shorter side is below `size` instead of skipping them. */
  allowUpscale?: boolean;
  /** 'skip' (default) drops images without any caption; 'empty' keeps them with caption "". */
  missingCaption?: 'skip' | 'empty';
  maxImages?: number;
  maxBytes?: number;
  /** Parallel decodes. Default 4. */
  concurrency?: number;
  /** Files declaring more pixels than this are skipped before decoding (decompression bombs). Default 100 M. */
  maxPixels?: number;
}

export const DEFAULT_MAX_PIXELS = 100_000_000;

export interface SkippedFile {
  path: string;
  reason: string;
}

export interface ImageFolderMeta {
  /** Path relative to the root, with forward slashes. */
  file: string;
  sourceWidth: number;
  sourceHeight: number;
}

interface Entry {
  image: Uint8Array;
  caption: string;
  meta: ImageFolderMeta;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function toPosix(p: string): string {
  return p.split(sep).join('/');
}

export class ImageFolderDataset implements Dataset<ImageFolderMeta> {
  readonly width: number;
  readonly height: number;

  private constructor(
    readonly root: string,
    size: number,
    private readonly entries: Entry[],
    /** Files that were found but not used, and why. */
    readonly skipped: SkippedFile[],
  ) {
    this.width = size;
    this.height = size;
  }

  get length(): number {
    return this.entries.length;
  }

  get(index: number): Sample<ImageFolderMeta> {
    checkIndex(this, index);
    const e = this.entries[index]!;
    return { image: e.image, caption: e.caption, meta: e.meta };
  }

  static async load(opts: ImageFolderOptions): Promise<ImageFolderDataset> {
    const root = resolve(opts.root);
    const size = opts.size;
    if (!Number.isInteger(size) || size < 1) throw new UsageError(`image folder size must be a positive integer, got ${size}`);
    const info = await stat(root).catch(() => null);
    if (!info) throw new UsageError(`image folder ${opts.root} does not exist`);
    if (!info.isDirectory()) throw new UsageError(`image folder ${opts.root} is not a directory`);

    const found = await fg(`**/*.{${IMAGE_EXTENSIONS.join(',')}}`, { cwd: root, onlyFiles: true, caseSensitiveMatch: false });
    const images = found.map(toPosix).sort();
    const maxImages = opts.maxImages ?? 50_000;
    const maxBytes = opts.maxBytes ?? 2 * 1024 ** 3;
    if (images.length > maxImages) {
      throw new UsageError(`image folder ${opts.root} holds ${images.length} images, more than maxImages = ${maxImages}; raise the limit or use a subset`);
    }
    const bytes = images.length * size * size * 3;
    if (bytes > maxBytes) {
      throw new UsageError(
        `image folder ${opts.root}: ${images.length} images at ${size}×${size} need ${(bytes / 1024 ** 2).toFixed(0)} MiB in memory, ` +
          `more than maxBytes = ${(maxBytes / 1024 ** 2).toFixed(0)} MiB`,
      );
    }

    const skipped: SkippedFile[] = [];
    const manifestCaptions = await readManifests(root, new Set(images), skipped);
    const limit = pLimit(opts.concurrency ?? 4);
    const results = await Promise.all(
      images.map((file) =>
        limit(async (): Promise<Entry | SkippedFile> => {
          const full = join(root, file);
          const caption = await findCaption(root, file, manifestCaptions);
          if (typeof caption === 'object') return caption;
          if (caption === undefined && (opts.missingCaption ?? 'skip') === 'skip') {
            const stem = file.slice(0, file.length - extname(file).length);
            return { path: full, reason: `no caption: expected ${stem}.txt, ${stem}.caption or an entry in ${MANIFEST_NAMES.join('/')}` };
          }
          const decoded = await decodeImage(full, size, opts.allowUpscale ?? false, opts.maxPixels ?? DEFAULT_MAX_PIXELS);
          if ('reason' in decoded) return decoded;
          return { image: decoded.rgb, caption: caption ?? '', meta: { file, sourceWidth: decoded.width, sourceHeight: decoded.height } };
        }),
      ),
    );
    const entries: Entry[] = [];
    for (const r of results) {
      if ('reason' in r) skipped.push(r);
      else entries.push(r);
    }
    if (entries.length === 0) {
      const why = skipped.slice(0, 3).map((s) => `${s.path}: ${s.reason}`).join('; ');
      throw new UsageError(
        `image folder ${opts.root} has no usable images (looked for ${IMAGE_EXTENSIONS.join('/')}; ${skipped.length} skipped${why ? `: ${why}` : ''})`,
      );
    }
    return new ImageFolderDataset(root, size, entries, skipped);
  }
}

/** Caption text, undefined when there is none, or a skip record when the sidecar is unreadable. */
async function findCaption(root: string, file: string, manifest: Map<string, string>): Promise<string | undefined | SkippedFile> {
  const stem = join(root, file.slice(0, file.length - extname(file).length));
  for (const ext of SIDECAR_EXTENSIONS) {
    const bytes = await readFile(stem + ext).catch(() => null);
    if (!bytes) continue;
    try {
      return strictUtf8.decode(bytes).trim();
    } catch {
      return { path: join(root, file), reason: `caption file ${stem + ext} is not valid UTF-8` };
    }
  }
  return manifest.get(file);
}

/** file (relative to root, posix) → caption from every metadata.jsonl / captions.jsonl in the tree. */
async function readManifests(root: string, images: Set<string>, skipped: SkippedFile[]): Promise<Map<string, string>> {
  const manifests = (await fg(`**/{${MANIFEST_NAMES.join(',')}}`, { cwd: root, onlyFiles: true })).map(toPosix).sort();
  const captions = new Map<string, string>();
  for (const m of manifests) {
    const path = join(root, m);
    let text: string;
    try {
      text = strictUtf8.decode(await readFile(path));
    } catch {
      throw new UsageError(`caption manifest ${path} is not valid UTF-8`);
    }
    const lines = text.split(/\r?\n/);
    for (let k = 0; k < lines.length; k++) {
      const line = lines[k]!.trim();
      if (!line) continue;
      const where = `${path}:${k + 1}`;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        throw new UsageError(`${where}: not valid JSON; expected {"file_name": "...", "text": "..."}`);
      }
      if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
        throw new UsageError(`${where}: expected a JSON object such as {"file_name": "...", "text": "..."}`);
      }
      const r = rec as { file_name?: unknown; text?: unknown; caption?: unknown };
      const caption = r.text ?? r.caption;
      if (typeof r.file_name !== 'string' || typeof caption !== 'string') {
        throw new UsageError(`${where}: expected string fields "file_name" and "text" (or "caption")`);
      }
      const file = posix.normalize(posix.join(posix.dirname(m), r.file_name.split('\\').join('/')));
      if (!images.has(file)) {
        skipped.push({ path: join(root, file), reason: `listed in ${where} but no such image (${IMAGE_EXTENSIONS.join('/')}) exists` });
        continue;
      }
      captions.set(file, caption.trim());
    }
  }
  return captions;
}

async function decodeImage(
  path: string,
  size: number,
  allowUpscale: boolean,
  maxPixels: number,
): Promise<{ rgb: Uint8Array; width: number; height: number } | SkippedFile> {
  try {
    // The header only, without sharp's own limit, so an over-sized file is reported with its size.
    const meta = await sharp(path, { limitInputPixels: false }).metadata();
    if ((meta.width ?? 0) * (meta.height ?? 0) > maxPixels) {
      return { path, reason: `${meta.width}x${meta.height} exceeds max_pixels ${maxPixels} (possible decompression bomb); not decoded` };
    }
    // Orientations 5–8 swap the axes; the shorter side is the same either way.
    const swap = (meta.orientation ?? 1) >= 5;
    const width = swap ? meta.height : meta.width;
    const height = swap ? meta.width : meta.height;
    if (!width || !height) return { path, reason: 'image has no size' };
    if (Math.min(width, height) < size && !allowUpscale) {
      return { path, reason: `smaller than the target: ${width}x${height}, shorter side < ${size} (set allow_upscale to enlarge)` };
    }
    const { data, info } = await sharp(path, { limitInputPixels: maxPixels })
      .rotate()
      .toColourspace('srgb')
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .removeAlpha()
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== size || info.height !== size) {
      return { path, reason: `decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3` };
    }
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
  } catch (e) {
    return { path, reason: `cannot decode: ${(e as Error).message.split('\n')[0]}` };
  }
}


/**
 * Captions of images in a folder as the loader reads them (sidecar .txt/.caption first, then
 * metadata.jsonl/captions.jsonl), for evaluations that need each image's prompt (CLIP-score).
 * `files` are paths relative to `root` with forward slashes; images without a caption are absent.
 */
export async function readFolderCaptions(root: string, files: readonly string[]): Promise<{ captions: Map<string, string>; skipped: SkippedFile[] }> {
  const skipped: SkippedFile[] = [];
  const manifest = await readManifests(root, new Set(files), skipped);
  const captions = new Map<string, string>();
  for (const file of files) {
    const c = await findCaption(root, file, manifest);
    if (typeof c === 'string') captions.set(file, c);
    else if (c !== undefined) skipped.push(c);
  }
  return { captions, skipped };
}
