import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { analyseFile, analysisFingerprint, sha256Hex, sharedDecodeSize } from '../src/curate/analyse.js';
import { decodeImage, isRejection } from '../src/curate/decode.js';
import { hammingDistance, hashFile, hexToHash } from '../src/curate/hash.js';
import { runCurate } from '../src/curate/pipeline.js';
import { AnalysisPool, vipsThreadsFor } from '../src/curate/pool.js';
import { curateConfig, type CurateConfig } from '../src/curate/schema.js';
import { JobError } from '../src/util/errors.js';
import { makeFixtureFolder, pattern, tempDir, type FixtureSet } from './curate_fixtures.js';

const quiet = { write: () => true };
let fx: FixtureSet;

/** A photo-like JPEG: smooth waves plus fine grain, so both the DCT shrink and Lanczos have detail to keep. */
async function photo(width: number, height: number, seed: number): Promise<Buffer> {
  const px = pattern(width, height, seed);
  for (let i = 0; i < px.length; i++) px[i] = Math.max(0, Math.min(255, px[i]! + ((i * 2654435761 + seed) % 17) - 8));
  return sharp(px, { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

function psnr(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255 * a.length) / se);
}

/** Every file under dir (relative path → bytes as base64), excluding temporary names. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = readFileSync(p).toString('base64');
    }
  };
  walk(dir);
  return out;
}

beforeAll(async () => {
  fx = await makeFixtureFolder();
  // Large enough that fast mode decodes with JPEG shrink-on-load (1600 → 256 analysis size: DCT 1/4, then Lanczos).
  writeFileSync(join(fx.dir, 'large.jpg'), await photo(1600, 1200, 11));
  writeFileSync(join(fx.dir, 'large_copy.jpg'), await photo(1600, 1200, 11));
  writeFileSync(join(fx.dir, 'medium.jpg'), await photo(400, 300, 12));
});

function config(mode: 'fast' | 'exact', concurrency: number): CurateConfig {
  return curateConfig({
    input: { paths: [fx.dir] },
    decode: { mode },
    resize: { size: 128, mode: 'border' },
    filters: { min_brightness: 0.1, min_entropy: 1 },
    output: { image_format: 'jpg', quality: 90 },
    concurrency,
  });
}

describe.each(['fast', 'exact'] as const)('curation pool, decode.mode %s', (mode) => {
  it('writes byte-for-byte what the single-threaded path writes: manifest, report, images, cache, state', async () => {
    const single = tempDir('curate-single');
    const pooled = tempDir('curate-pool');
    const a = await runCurate(config(mode, 1), { outDir: single, progressStream: quiet });
    const b = await runCurate(config(mode, 3), { outDir: pooled, progressStream: quiet });
    expect(b.counts).toEqual(a.counts);
    expect([a.counts.analysed, a.counts.reused]).toEqual([16, 1]); // large_copy.jpg has large.jpg's bytes
    expect(a.counts.kept).toBeGreaterThan(5);
    const ta = tree(single);
    const tb = tree(pooled);
    // State lines are appended as files finish, so their order may differ; their set may not.
    const stateName = `.curate/state-${analysisFingerprint(config(mode, 1))}.jsonl`;
    const lines = (t: Record<string, string>) => Buffer.from(t[stateName]!, 'base64').toString('utf8').trim().split('\n').sort();
    expect(lines(tb)).toEqual(lines(ta));
    delete ta[stateName];
    delete tb[stateName];
    // The config file differs only by `concurrency`.
    delete ta['.curate/config.json'];
    delete tb['.curate/config.json'];
    expect(Object.keys(tb)).toEqual(Object.keys(ta));
    expect(Object.keys(ta).filter((k) => k.startsWith('images/')).length).toBe(2 * a.counts.kept);
    const decodable = new Set(a.rows.filter((r) => r.analysis.ok).map((r) => r.sha256));
    expect(Object.keys(ta).filter((k) => k.startsWith('.curate/cache/')).length).toBe(decodable.size);
    for (const k of Object.keys(ta)) expect(tb[k], k).toBe(ta[k]);
  });
});

describe('decode.mode fast against exact', () => {
  it('decodes once at the output scale (shrink-on-load for a large JPEG) within 40 dB of full decode + Lanczos', async () => {
    const bytes = readFileSync(join(fx.dir, 'large.jpg'));
    const dopts = { background: [255, 255, 255] as const, maxPixels: 1e9 };
    const fast = await decodeImage(bytes, { ...dopts, scaleTo: () => ({ width: 341, height: 256 }) });
    if (isRejection(fast)) throw new Error(fast.reason);
    expect([fast.width, fast.height, fast.fullWidth, fast.fullHeight]).toEqual([341, 256, 1600, 1200]);
    const full = await decodeImage(bytes, dopts);
    if (isRejection(full)) throw new Error(full.reason);
    const reference = await sharp(full.rgb, { raw: { width: 1600, height: 1200, channels: 3 } })
      .resize(341, 256, { fit: 'fill', kernel: 'lanczos3' })
      .raw()
      .toBuffer();
    const db = psnr(fast.rgb, reference);
    expect(db).toBeGreaterThan(40);
    expect(db).toBeLessThan(Infinity); // the DCT shrink really was used: not the same pixels as the full decode
  });

  it('keeps full sizes, output geometry and (nearly) the perceptual hash; exact mode is imagededup bit for bit', async () => {
    const out = tempDir('curate-modes');
    for (const name of ['large.jpg', 'medium.jpg', 'a.png', 'd_rotated.jpg']) {
      const bytes = readFileSync(join(fx.dir, name));
      const sha = sha256Hex(bytes);
      const exact = await analyseFile(bytes, sha, config('exact', 1), join(out, 'exact'));
      const fast = await analyseFile(bytes, sha, config('fast', 1), join(out, 'fast'));
      if (!exact.ok || !fast.ok) throw new Error(`${name} not decoded`);
      expect([fast.width, fast.height, fast.cached.width, fast.cached.height]).toEqual([exact.width, exact.height, exact.cached.width, exact.cached.height]);
      expect(exact.perceptualHash).toBe((await hashFile(join(fx.dir, name), ['phash'], { background: '#ffffff' })).hashes.phash);
      expect(hammingDistance(hexToHash(fast.perceptualHash), hexToHash(exact.perceptualHash)), name).toBeLessThanOrEqual(4);
      const [fo, eo] = await Promise.all([join(out, 'fast', fast.cached.path), join(out, 'exact', exact.cached.path)].map((p) => sharp(p).raw().toBuffer()));
      expect(psnr(fo!, eo!), name).toBeGreaterThan(35);
      expect(Math.abs(fast.quality.brightness - exact.quality.brightness), name).toBeLessThan(0.01);
    }
    expect(analysisFingerprint(config('fast', 1))).not.toBe(analysisFingerprint(config('exact', 1)));
  });

  it('decodes to the analysis size when the output is smaller, and to the output scale otherwise', () => {
    expect(sharedDecodeSize(1600, 1200, { width: 128, height: 96 }, 256)).toEqual({ width: 256, height: 192 });
    expect(sharedDecodeSize(1600, 1200, { width: 683, height: 512 }, 256)).toEqual({ width: 683, height: 512 });
    expect(sharedDecodeSize(100, 50, { width: 64, height: 32 }, 256)).toEqual({ width: 100, height: 50 });
  });
});

describe('AnalysisPool', () => {
  it('gives libvips one thread per core left to each concurrent sharp call', () => {
    expect(vipsThreadsFor(2, 2)).toBe(1);
    expect(vipsThreadsFor(4, 16)).toBe(4);
    expect(vipsThreadsFor(16, 16)).toBe(16 / (Number(process.env.UV_THREADPOOL_SIZE) || 4));
    expect(vipsThreadsFor(1, 1)).toBe(1);
  });

  it('fails a run with a JobError naming the file when a worker cannot write, and restores sharp threads', async () => {
    const before = sharp.concurrency();
    const blocked = tempDir('curate-blocked');
    writeFileSync(join(blocked, '.curate'), 'a file where the cache folder should be');
    const pool = new AnalysisPool(2);
    const cfg = config('fast', 2);
    const bytes = readFileSync(join(fx.dir, 'medium.jpg'));
    await expect(pool.analyse(bytes, sha256Hex(bytes), cfg, blocked)).rejects.toThrow(/ENOTDIR|EEXIST|not a directory/i);
    // The pool survives a failed file: the next one in a writable folder works.
    const ok = await pool.analyse(bytes, sha256Hex(bytes), cfg, tempDir('curate-ok'));
    expect(ok.ok).toBe(true);
    await pool.close();
    expect(sharp.concurrency()).toBe(before);
    const runDir = tempDir('curate-fail');
    mkdirSync(join(runDir, '.curate'));
    writeFileSync(join(runDir, '.curate', 'cache'), 'a file where the cache folder should be');
    const err = await runCurate(cfg, { outDir: runDir, progressStream: quiet }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobError);
    expect((err as Error).message).toMatch(/failed while processing .*\.(jpg|jpeg|png|webp)/);
    expect(sharp.concurrency()).toBe(before);
  });
});
