import { createHash } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { decodeImage, isRejection, parseHexColour } from './decode.js';
import { measureQuality } from './filters.js';
import { exactPixelHash, hashToHex, perceptualHash } from './hash.js';
import type { Analysis } from './manifest.js';
import { planResize, resizeAndEncode } from './resize.js';
import type { CurateConfig } from './schema.js';

/**
 * The per-file work of a curation run, done once per distinct file content: decode, hash, measure quality, resize
 * and encode the output into the cache. Pixels live only inside this call, so memory is bounded by the number of
 * concurrent calls, not by the size of the dataset.
 */

export const CACHE_DIR = '.curate/cache';
const STATE_VERSION = 1;

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
  const decoded = await decodeImage(bytes, {
    background: parseHexColour(cfg.decode.background),
    maxPixels: cfg.decode.max_pixels,
  });
  if (isRejection(decoded)) return { ok: false, code: decoded.code, reason: decoded.reason };
  const img = { rgb: decoded.rgb, width: decoded.width, height: decoded.height };
  const pixelHash = exactPixelHash(img);
  const phash = hashToHex(perceptualHash(img, cfg.dedup.hash));
  const quality = await measureQuality(img.rgb, img.width, img.height, cfg.filters.analysis_size);
  const plan = planResize(img.width, img.height, cfg.resize.size, cfg.resize.mode, cfg.resize.only_if_bigger);
  const out = await resizeAndEncode(img.rgb, img.width, img.height, plan, {
    format: cfg.output.image_format,
    quality: cfg.output.quality,
    padColour: parseHexColour(cfg.resize.border_colour),
  });
  const rel = join(CACHE_DIR, analysisFingerprint(cfg), `${sha256}.${cfg.output.image_format}`);
  const abs = join(cacheRoot, rel);
  await mkdir(dirname(abs), { recursive: true });
  const tmp = `${abs}.${process.pid}.tmp`;
  await writeFile(tmp, out.bytes);
  await rename(tmp, abs);
  return {
    ok: true,
    width: img.width,
    height: img.height,
    source: decoded.source,
    pixelHash,
    perceptualHash: phash,
    quality,
    cached: { path: rel.split('\\').join('/'), width: out.width, height: out.height, bytes: out.bytes.byteLength },
  };
}
