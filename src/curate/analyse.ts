import { createHash } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isMainThread, threadId } from 'node:worker_threads';
import type { RgbImage } from '../data/dataset.js';
import { decodeImage, isRejection, parseHexColour, type DecodedImage, type DecodeOptions, type DecodeRejection } from './decode.js';
import { qualityOf, shrinkForAnalysis, type QualityMeasures } from './filters.js';
import { exactPixelHash, hashToHex, perceptualHash } from './hash.js';
import { jpegCodecName } from './image_addon.js';
import type { Analysis } from './manifest.js';
import { planResize, resizeAndEncode, type ResizePlan } from './resize.js';
import type { CurateConfig } from './schema.js';

/**
 * The per-file work of a curation run, done once per distinct file content: decode, hash, measure quality, resize
 * and encode the output into the cache. Pixels live only inside this call, so memory is bounded by the number of
 * concurrent calls, not by the size of the dataset.
 */

export const CACHE_DIR = '.curate/cache';
const STATE_VERSION = 1;
let tmpCounter = 0;

/** Settings that change what analyseFile produces; a state file made under other settings is not reused. */
export function analysisFingerprint(cfg: CurateConfig): string {
  const relevant = {
    v: STATE_VERSION,
    decode: cfg.decode,
    hash: cfg.dedup.hash,
    analysis_size: cfg.filters.analysis_size,
    resize: cfg.resize,
    image_format: cfg.output.image_format,
    quality: cfg.output.quality,
    optimize_coding: cfg.output.optimize_coding,
    chroma_subsampling: cfg.output.chroma_subsampling,
    // libjpeg-turbo and libvips decode shrink-on-load and encode slightly differently.
    jpeg: jpegCodecName(),
  };
  return createHash('sha256').update(JSON.stringify(relevant)).digest('hex').slice(0, 12);
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Analyses one file's bytes. `cacheRoot` is the output folder; the resized image goes to
 * `<cacheRoot>/.curate/cache/<fingerprint>/<sha256>.<ext>` (written to a temporary name and renamed, so a cached
 * file is always complete).
 */
export async function analyseFile(bytes: Uint8Array, sha256: string, cfg: CurateConfig, cacheRoot: string): Promise<Analysis> {
  const measured = cfg.decode.mode === 'exact' ? await measureExact(bytes, cfg) : await measureFast(bytes, cfg);
  if ('reason' in measured) return { ok: false, code: measured.code, reason: measured.reason };
  const { decoded, pixels, plan } = measured;
  const out = await resizeAndEncode(pixels.rgb, pixels.width, pixels.height, plan, {
    format: cfg.output.image_format,
    quality: cfg.output.quality,
    padColour: parseHexColour(cfg.resize.border_colour),
    optimizeCoding: cfg.output.optimize_coding,
    chromaSubsampling: cfg.output.chroma_subsampling,
  });
  const rel = join(CACHE_DIR, analysisFingerprint(cfg), `${sha256}.${cfg.output.image_format}`);
  const abs = join(cacheRoot, rel);
  // Unique per call: two files with the same bytes can be in flight at once, in one thread or in two.
  const tmp = `${abs}.${process.pid}.${threadId}.${++tmpCounter}.tmp`;
  if (isMainThread) {
    await writeCreatingDir(tmp, out.bytes);
    await rename(tmp, abs);
  } else {
    // A pool worker analyses one file at a time, so blocking calls cost it nothing and save the libuv thread-pool
    // hand-offs (two futex round trips per call) that the promise-based calls make.
    writeCreatingDirSync(tmp, out.bytes);
    renameSync(tmp, abs);
  }
  return {
    ok: true,
    width: decoded.fullWidth,
    height: decoded.fullHeight,
    source: decoded.source,
    pixelHash: measured.pixelHash,
    perceptualHash: measured.perceptualHash,
    quality: measured.quality,
    cached: { path: rel.split('\\').join('/'), width: out.width, height: out.height, bytes: out.bytes.byteLength },
  };
}

/** writeFile, making the folder only when it is missing (one mkdir per run, not one per file). */
async function writeCreatingDir(path: string, bytes: Uint8Array): Promise<void> {
  try {
    await writeFile(path, bytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, bytes);
  }
}

function writeCreatingDirSync(path: string, bytes: Uint8Array): void {
  try {
    writeFileSync(path, bytes);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, bytes);
  }
}

/** Everything analyseFile learns before encoding, and the pixels the output is made from. */
interface Measured {
  decoded: DecodedImage;
  /** The pixels `plan` applies to (full resolution in exact mode, the output scale in fast mode). */
  pixels: RgbImage;
  plan: ResizePlan;
  pixelHash: string;
  perceptualHash: string;
  quality: QualityMeasures;
}

function decodeOptions(cfg: CurateConfig): DecodeOptions {
  return { background: parseHexColour(cfg.decode.background), maxPixels: cfg.decode.max_pixels };
}

function planFor(width: number, height: number, cfg: CurateConfig): ResizePlan {
  return planResize(width, height, cfg.resize.size, cfg.resize.mode, cfg.resize.only_if_bigger);
}

/** `decode.mode: exact`: every stage sees the full-resolution pixels; perceptual hashes follow imagededup bit for bit. */
async function measureExact(bytes: Uint8Array, cfg: CurateConfig): Promise<Measured | DecodeRejection> {
  const decoded = await decodeImage(bytes, decodeOptions(cfg));
  if (isRejection(decoded)) return decoded;
  const pixels = { rgb: decoded.rgb, width: decoded.width, height: decoded.height };
  return {
    decoded,
    pixels,
    plan: planFor(pixels.width, pixels.height, cfg),
    pixelHash: exactPixelHash(pixels),
    perceptualHash: hashToHex(perceptualHash(pixels, cfg.dedup.hash)),
    quality: qualityOf(shrinkForAnalysis(pixels, cfg.filters.analysis_size)),
  };
}

/**
 * `decode.mode: fast`: one decode, straight to the scale the output needs (libvips shrink-on-load for JPEG) or to
 * the analysis size when that is larger; the exact hash is of these pixels, the quality measures and the
 * perceptual hash are taken on them shrunk to `filters.analysis_size`, and the output is cropped/padded from them.
 */
async function measureFast(bytes: Uint8Array, cfg: CurateConfig): Promise<Measured | DecodeRejection> {
  let plan: ResizePlan | undefined;
  const decoded = await decodeImage(bytes, {
    ...decodeOptions(cfg),
    scaleTo: (width, height) => {
      plan = planFor(width, height, cfg);
      return sharedDecodeSize(width, height, plan.scaled, cfg.filters.analysis_size);
    },
  });
  if (isRejection(decoded)) return decoded;
  const pixels = { rgb: decoded.rgb, width: decoded.width, height: decoded.height };
  // A plan from the decoded size would differ only by rounding; the one from the full size is what exact mode makes.
  const fullPlan = plan ?? planFor(decoded.fullWidth, decoded.fullHeight, cfg);
  const analysed = shrinkForAnalysis(pixels, cfg.filters.analysis_size);
  return {
    decoded,
    pixels,
    plan: fullPlan,
    pixelHash: exactPixelHash(pixels),
    perceptualHash: hashToHex(perceptualHash(analysed, cfg.dedup.hash)),
    quality: qualityOf(analysed),
  };
}

/** The output's scaled size, or the size whose longest side is the analysis size when the output is smaller. */
export function sharedDecodeSize(
  width: number,
  height: number,
  scaled: { width: number; height: number },
  analysisSize: number,
): { width: number; height: number } {
  const long = Math.max(width, height);
  const need = Math.min(analysisSize, long);
  if (Math.max(scaled.width, scaled.height) >= need) return scaled;
  const s = need / long;
  return { width: Math.max(1, Math.round(width * s)), height: Math.max(1, Math.round(height * s)) };
}
