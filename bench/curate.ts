import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImage, isRejection } from '../src/curate/decode.js';
import { measureQuality } from '../src/curate/filters.js';
import { exactPixelHash, perceptualHash } from '../src/curate/hash.js';
import { resolveConcurrency, runCurate } from '../src/curate/pipeline.js';
import { planResize, resizeAndEncode } from '../src/curate/resize.js';
import { curateConfig } from '../src/curate/schema.js';

/**
 * Curation throughput: a whole `runCurate` over generated JPEGs (decode + hashes + quality measures + Lanczos
 * resize + encode + output), then each per-image step alone on one image, single-threaded, to show where the
 * time goes. Run: `npx tsx bench/curate.ts` (or through the bench runner).
 */

import type { BenchRow } from './row.js';

export type { BenchRow };

export interface CurateBenchOptions {
  /** Number of source images (default 64). */
  images?: number;
  /** Source size, width × height (default 1024 × 768, a typical photo scaled down). */
  width?: number;
  height?: number;
  /** Output side (default 512, mode border). */
  size?: number;
  /** Parallel images (default: all cores). */
  concurrency?: number;
}

function texture(width: number, height: number, seed: number): Buffer {
  const out = Buffer.alloc(width * height * 3);
  let s = seed * 2654435761;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const i = (y * width + x) * 3;
      out[i] = (x * 255) / width + (s & 31);
      out[i + 1] = (y * 255) / height + ((s >> 5) & 31);
      out[i + 2] = 128 + 100 * Math.sin((x + y + seed * 17) / 23);
    }
  }
  return out;
}

async function timeIt(reps: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await fn();
  return (performance.now() - t0) / reps;
}

export async function runCurateBench(opts: CurateBenchOptions = {}): Promise<BenchRow[]> {
  const n = opts.images ?? 64;
  const width = opts.width ?? 1024;
  const height = opts.height ?? 768;
  const size = opts.size ?? 512;
  const root = mkdtempSync(join(tmpdir(), 'sf-curate-bench-'));
  try {
    const inDir = join(root, 'in');
    mkdirSync(inDir);
    for (let k = 0; k < n; k++) {
      const jpg = await sharp(texture(width, height, k + 1), { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
      writeFileSync(join(inDir, `${String(k).padStart(5, '0')}.jpg`), jpg);
    }
    const cfg = curateConfig({
      input: { paths: [inDir] },
      resize: { size, mode: 'border' },
      output: { image_format: 'jpg', quality: 95 },
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    });
    const quiet = { write: () => true };
    const t0 = performance.now();
    const first = await runCurate(cfg, { outDir: join(root, 'out'), progressStream: quiet });
    const seconds = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    await runCurate(cfg, { outDir: join(root, 'out'), progressStream: quiet });
    const resumeSeconds = (performance.now() - t1) / 1000;
    const threads = resolveConcurrency(cfg);
    const where = `${n} JPEGs ${width}x${height} → ${size} border jpg, ${threads} in parallel`;

    const bytes = await sharp(texture(width, height, 999), { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const dopts = { background: [255, 255, 255] as [number, number, number], maxPixels: 1e9 };
    const d = await decodeImage(bytes, dopts);
    if (isRejection(d)) throw new Error(d.reason);
    const img = { rgb: d.rgb, width: d.width, height: d.height };
    const plan = planResize(width, height, size, 'border', false);
    const reps = 5;
    const decodeMs = await timeIt(reps, () => decodeImage(bytes, dopts));
    const exactMs = await timeIt(reps, async () => exactPixelHash(img));
    const phashMs = await timeIt(reps, async () => perceptualHash(img, 'phash'));
    const qualityMs = await timeIt(reps, () => measureQuality(img.rgb, img.width, img.height, 256));
    const resizeMs = await timeIt(reps, () => resizeAndEncode(img.rgb, width, height, plan, { format: 'jpg', quality: 95, padColour: [255, 255, 255] }));
    return [
      { name: 'curate.throughput', value: first.counts.inShard / seconds, unit: 'images/s', note: where },
      { name: 'curate.resume_rescan', value: first.counts.inShard / resumeSeconds, unit: 'images/s', note: 'second run, everything reused (read + sha256 + outputs unchanged)' },
      { name: 'curate.step.decode', value: decodeMs, unit: 'ms/image', note: `sharp decode to 8-bit sRGB, ${width}x${height}, one at a time` },
      { name: 'curate.step.exact_hash', value: exactMs, unit: 'ms/image', note: 'SHA-256 of decoded pixels' },
      { name: 'curate.step.phash', value: phashMs, unit: 'ms/image', note: 'JS Lanczos to 32x32 + DCT (hash.ts)' },
      { name: 'curate.step.quality', value: qualityMs, unit: 'ms/image', note: 'shrink to 256 + luma, entropy, Laplacian variance' },
      { name: 'curate.step.resize_encode', value: resizeMs, unit: 'ms/image', note: `sharp Lanczos-3 to ${size} + pad + jpg q95` },
    ];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await runCurateBench()) console.log(`${r.name.padEnd(28)} ${r.value.toFixed(2).padStart(9)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
}
