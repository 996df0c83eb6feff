import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { decodeImage, isRejection } from '../src/curate/decode.js';
import { measureQuality, qualityOf, shrinkForAnalysis } from '../src/curate/filters.js';
import { exactPixelHash, perceptualHash } from '../src/curate/hash.js';
import { resolveConcurrency, runCurate } from '../src/curate/pipeline.js';
import { AnalysisPool } from '../src/curate/pool.js';
import { planResize, resizeAndEncode } from '../src/curate/resize.js';
import { CHROMA_SUBSAMPLINGS, type ChromaSubsampling, curateConfig, type CurateConfig } from '../src/curate/schema.js';

/**
 * Curation throughput: whole `runCurate` runs over generated JPEGs (decode + exact and perceptual hash + quality
 * measures + Lanczos resize + encode + output) on one thread and on all cores, next to the peer
 * (bench/curate_peer.py), then each per-image step alone on one image, single-threaded, to show where the time
 * goes. Run: `npx tsx bench/curate.ts` (or through the bench runner).
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
  /** Workers for the all-cores figures (default: all cores). */
  concurrency?: number;
  /** Interleaved repeats of every measurement (default 5); figures are medians. */
  repeats?: number;
  /**
   * A folder of photographs to use instead of the generated images: each JPEG/PNG/WebP in it is cover-resized to
   * width × height and saved as JPEG q90, repeated until there are `images` inputs (repeats are re-encoded at a
   * different quality so their bytes differ).
   */
  photos?: string;
  /** JPEG chroma of our output (default 4:2:0, what the peer's cv2.imencode writes; 'auto' is curate's default, 4:4:4 at q95). */
  chroma?: ChromaSubsampling;
  /** Python with python3-opencv, -pil, -numpy, -scipy for the peer (default /usr/bin/python3). */
  peerPython?: string;
  log?: (line: string) => void;
}

export const PEER_PYTHON = '/usr/bin/python3';

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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function peerAvailable(python: string): string | undefined {
  const probe = spawnSync(python, ['-c', 'import cv2, PIL, numpy, scipy.fftpack'], { encoding: 'utf8' });
  return probe.status === 0 ? undefined : `${python} cannot import cv2/PIL/numpy/scipy (apt-get install python3-opencv python3-pil python3-numpy python3-scipy)`;
}

/** A run's figures: images per wall-clock second and per CPU-second (all threads or processes of the run). */
interface RunFigures {
  perSecond: number;
  perCpuSecond: number;
}

/** One peer run (bench/curate_peer.py) over the input folder; its pool start is excluded. */
function runPeer(python: string, inDir: string, outDir: string, procs: number, size: number): RunFigures {
  rmSync(outDir, { recursive: true, force: true });
  const script = fileURLToPath(new URL('./curate_peer.py', import.meta.url));
  const out = execFileSync(python, [script, '--dir', inDir, '--out', outDir, '--procs', String(procs), '--size', String(size)], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { images: number; seconds: number; cpu_seconds: number };
  return { perSecond: r.images / r.seconds, perCpuSecond: r.images / r.cpu_seconds };
}

/**
 * Curation throughput next to the peer (img2dataset's resizer + imagededup's PHash in Python, one process per core),
 * measured interleaved in one run so that other load on the machine hits both alike; every figure is the median of
 * `repeats`. Our all-cores figure uses a started pool (worker start-up is reported on its own row, as the peer's
 * pool start is excluded from its figure).
 */
export async function runCurateBench(opts: CurateBenchOptions = {}): Promise<BenchRow[]> {
  const n = opts.images ?? 64;
  const width = opts.width ?? 1024;
  const height = opts.height ?? 768;
  const size = opts.size ?? 512;
  const repeats = opts.repeats ?? 5;
  const cores = opts.concurrency ?? resolveConcurrency(curateConfig({ input: { paths: ['.'] } }));
  const python = opts.peerPython ?? PEER_PYTHON;
  const chroma = opts.chroma ?? '4:2:0';
  const log = opts.log ?? (() => undefined);
  const root = mkdtempSync(join(tmpdir(), 'sf-curate-bench-'));
  try {
    const inDir = join(root, 'in');
    mkdirSync(inDir);
    const photos = opts.photos ? readdirSync(opts.photos).filter((f) => /\.(jpe?g|png|webp)$/i.test(f)).sort() : [];
    if (opts.photos && photos.length === 0) throw new Error(`${opts.photos}: no JPEG/PNG/WebP files`);
    for (let k = 0; k < n; k++) {
      const jpg = photos.length
        ? await sharp(join(opts.photos!, photos[k % photos.length]!))
            .rotate()
            .resize(width, height, { fit: 'cover' })
            .jpeg({ quality: 90 - Math.floor(k / photos.length) })
            .toBuffer()
        : await sharp(texture(width, height, k + 1), { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
      writeFileSync(join(inDir, `${String(k).padStart(5, '0')}.jpg`), jpg);
    }
    const quiet = { write: () => true };
    const config = (mode: 'fast' | 'exact', concurrency: number) =>
      curateConfig({
        input: { paths: [inDir] },
        decode: { mode },
        resize: { size, mode: 'border' },
        // The peer's cv2.imencode writes 4:2:0 (libjpeg's default): by default both sides encode the same format.
        output: { image_format: 'jpg', quality: 95, chroma_subsampling: chroma },
        concurrency,
      });
    const outDir = join(root, 'out');
    const ours = async (cfg: CurateConfig, pool?: AnalysisPool): Promise<RunFigures> => {
      rmSync(outDir, { recursive: true, force: true });
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      const r = await runCurate(cfg, { outDir, progressStream: quiet, ...(pool ? { pool } : {}) });
      const cpu = process.cpuUsage(cpu0);
      return {
        perSecond: r.counts.inShard / ((performance.now() - t0) / 1000),
        perCpuSecond: r.counts.inShard / ((cpu.user + cpu.system) / 1e6),
      };
    };

    const tStart = performance.now();
    const pool = new AnalysisPool(cores);
    await pool.warm(config('fast', cores), outDir);
    const startupSeconds = (performance.now() - tStart) / 1000;
    const peerMissing = peerAvailable(python);
    const fig: Record<string, RunFigures[]> = { ours1: [], oursAll: [], exactAll: [], peer1: [], peerAll: [] };
    try {
      for (let r = 0; r < repeats; r++) {
        // Alternating order, so a burst of outside load does not always land on the same contender.
        const steps: [keyof typeof fig, () => Promise<RunFigures>][] = [
          ['ours1', () => ours(config('fast', 1))],
          ['peer1', async () => runPeer(python, inDir, join(root, 'peer'), 1, size)],
          ['oursAll', () => ours(config('fast', cores), pool)],
          ['peerAll', async () => runPeer(python, inDir, join(root, 'peer'), cores, size)],
          ['exactAll', () => ours(config('exact', cores), pool)],
        ];
        if (r % 2 === 1) steps.reverse();
        for (const [name, run] of steps) {
          if (peerMissing && name.startsWith('peer')) continue;
          const v = await run();
          fig[name]!.push(v);
          log(`curate bench repeat ${r + 1}/${repeats}: ${name} ${v.perSecond.toFixed(1)} images/s, ${v.perCpuSecond.toFixed(1)} images/CPU-s`);
        }
      }
    } finally {
      await pool.close();
    }
    const t1 = performance.now();
    await runCurate(config('fast', cores), { outDir, progressStream: quiet });
    const resumeSeconds = (performance.now() - t1) / 1000;
    const m = (k: keyof typeof fig) => (fig[k]!.length ? median(fig[k]!.map((f) => f.perSecond)) : NaN);
    const cpu = (k: keyof typeof fig) => (fig[k]!.length ? median(fig[k]!.map((f) => f.perCpuSecond)) : NaN);
    // Ratios of runs made next to each other (same repeat), then the median: outside load cancels better.
    const paired = (a: keyof typeof fig, b: keyof typeof fig, per: (f: RunFigures) => number) =>
      fig[b]!.length ? median(fig[a]!.map((f, i) => per(f) / per(fig[b]![i]!))) : NaN;
    const wall = (f: RunFigures) => f.perSecond;
    const perCpu = (f: RunFigures) => f.perCpuSecond;
    const where = `${n} ${photos.length ? `photographs from ${opts.photos}, ` : 'generated '}JPEGs ${width}x${height} → ${size} border jpg q95, chroma ${chroma} (the peer: 4:2:0), median of ${repeats}, load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores`;
    const rows: BenchRow[] = [
      { name: 'curate.throughput.1', value: m('ours1'), unit: 'images/s', note: `decode.mode fast, 1 thread; ${where}` },
      { name: `curate.throughput.${cores}`, value: m('oursAll'), unit: 'images/s', note: `decode.mode fast, ${cores} workers (started)` },
      { name: `curate.throughput.exact.${cores}`, value: m('exactAll'), unit: 'images/s', note: `decode.mode exact (imagededup-exact pHash), ${cores} workers` },
      { name: 'curate.per_cpu.1', value: cpu('ours1'), unit: 'images/CPU-s', note: 'fast, 1 thread: images per second of CPU time (all threads)' },
      { name: `curate.per_cpu.${cores}`, value: cpu('oursAll'), unit: 'images/CPU-s', note: `fast, ${cores} workers` },
      { name: `curate.per_cpu.exact.${cores}`, value: cpu('exactAll'), unit: 'images/CPU-s', note: `exact, ${cores} workers` },
      { name: 'curate.pool_startup', value: startupSeconds, unit: 's', note: `${cores} workers loading tsx + sharp, once per run` },
      { name: 'curate.resume_rescan', value: n / resumeSeconds, unit: 'images/s', note: 'second run, everything reused (read + sha256 + outputs unchanged)' },
    ];
    if (peerMissing) rows.push({ name: 'curate.peer unavailable', value: NaN, unit: '', note: peerMissing });
    else {
      const peerNote = 'img2dataset resizer (cv2 INTER_AREA, q95) + imagededup PHash (PIL)';
      rows.push(
        { name: 'curate.peer.1', value: m('peer1'), unit: 'images/s', note: `${peerNote}, 1 process` },
        { name: `curate.peer.${cores}`, value: m('peerAll'), unit: 'images/s', note: `the same, ${cores} processes` },
        { name: 'curate.peer.per_cpu.1', value: cpu('peer1'), unit: 'images/CPU-s', note: 'peer, 1 process' },
        { name: `curate.peer.per_cpu.${cores}`, value: cpu('peerAll'), unit: 'images/CPU-s', note: `peer, ${cores} processes` },
        { name: 'curate.ratio.1', value: paired('ours1', 'peer1', wall), unit: '×', note: 'ours ÷ peer, images/s, one core each (> 1: faster); median of paired repeats' },
        { name: `curate.ratio.${cores}`, value: paired('oursAll', 'peerAll', wall), unit: '×', note: `ours ÷ peer, images/s, ${cores} cores each` },
        { name: `curate.ratio.exact.${cores}`, value: paired('exactAll', 'peerAll', wall), unit: '×', note: `exact mode ÷ peer, images/s, ${cores} cores each` },
        { name: 'curate.ratio_per_cpu.1', value: paired('ours1', 'peer1', perCpu), unit: '×', note: 'ours ÷ peer, images per CPU-second (per core), 1 each' },
        { name: `curate.ratio_per_cpu.${cores}`, value: paired('oursAll', 'peerAll', perCpu), unit: '×', note: `ours ÷ peer, images per CPU-second, ${cores} each` },
        { name: `curate.ratio_per_cpu.exact.${cores}`, value: paired('exactAll', 'peerAll', perCpu), unit: '×', note: `exact ÷ peer, images per CPU-second, ${cores} each` },
      );
    }

    const bytes = await sharp(texture(width, height, 999), { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const dopts = { background: [255, 255, 255] as [number, number, number], maxPixels: 1e9 };
    const d = await decodeImage(bytes, dopts);
    if (isRejection(d)) throw new Error(d.reason);
    const img = { rgb: d.rgb, width: d.width, height: d.height };
    const plan = planResize(width, height, size, 'border', false);
    const shared = await decodeImage(bytes, { ...dopts, scaleTo: () => plan.scaled });
    if (isRejection(shared)) throw new Error(shared.reason);
    const small = { rgb: shared.rgb, width: shared.width, height: shared.height };
    const analysed = shrinkForAnalysis(small, 256);
    const reps = 5;
    const enc = { format: 'jpg' as const, quality: 95, padColour: [255, 255, 255] as const, chromaSubsampling: chroma };
    rows.push(
      { name: 'curate.step.decode', value: await timeIt(reps, () => decodeImage(bytes, dopts)), unit: 'ms/image', note: `exact: full decode ${width}x${height}` },
      { name: 'curate.step.exact_hash', value: await timeIt(reps, async () => exactPixelHash(img)), unit: 'ms/image', note: 'exact: SHA-256 of full-resolution pixels' },
      { name: 'curate.step.phash', value: await timeIt(reps, async () => perceptualHash(img, 'phash')), unit: 'ms/image', note: 'exact: Pillow Lanczos from full resolution to 32x32 + DCT' },
      { name: 'curate.step.quality', value: await timeIt(reps, async () => measureQuality(img.rgb, img.width, img.height, 256)), unit: 'ms/image', note: 'exact: shrink to 256 + measures' },
      { name: 'curate.step.resize_encode', value: await timeIt(reps, () => resizeAndEncode(img.rgb, width, height, plan, enc)), unit: 'ms/image', note: `exact: Lanczos-3 to ${size} + pad + jpg q95` },
      { name: 'curate.step.fast_decode', value: await timeIt(reps, () => decodeImage(bytes, { ...dopts, scaleTo: () => plan.scaled })), unit: 'ms/image', note: `fast: decode straight to ${plan.scaled.width}x${plan.scaled.height}` },
      { name: 'curate.step.fast_exact_hash', value: await timeIt(reps, async () => exactPixelHash(small)), unit: 'ms/image', note: 'fast: SHA-256 of the shared pixels' },
      { name: 'curate.step.fast_analysis', value: await timeIt(reps, async () => qualityOf(shrinkForAnalysis(small, 256))), unit: 'ms/image', note: 'fast: shrink to 256 + measures' },
      { name: 'curate.step.fast_phash', value: await timeIt(reps, async () => perceptualHash(analysed, 'phash')), unit: 'ms/image', note: 'fast: Pillow Lanczos from the 256 analysis image + DCT' },
      { name: 'curate.step.fast_pad_encode', value: await timeIt(reps, () => resizeAndEncode(small.rgb, small.width, small.height, plan, enc)), unit: 'ms/image', note: 'fast: pad + jpg q95' },
    );
    return rows;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const photosAt = process.argv.indexOf('--photos');
  const photos = photosAt > 0 ? process.argv[photosAt + 1] : undefined;
  const chromaAt = process.argv.indexOf('--chroma');
  const chroma = chromaAt > 0 ? process.argv[chromaAt + 1] : undefined;
  const isChroma = (c: string | undefined): c is ChromaSubsampling => (CHROMA_SUBSAMPLINGS as readonly (string | undefined)[]).includes(c);
  if (chroma !== undefined && !isChroma(chroma)) throw new Error(`--chroma: one of ${CHROMA_SUBSAMPLINGS.join(', ')}, not ${chroma}`);
  for (const r of await runCurateBench({ ...(photos ? { photos } : {}), ...(isChroma(chroma) ? { chroma } : {}), log: (l) => process.stderr.write(`  ${l}\n`) })) console.log(`${r.name.padEnd(28)} ${r.value.toFixed(2).padStart(9)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
}
