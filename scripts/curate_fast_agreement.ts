/**
 * How far `decode.mode: fast` is from `decode.mode: exact` on real photographs: Hamming distance between the two
 * modes' perceptual hashes (exact = imagededup's convention bit for bit) and the PSNR between their output images.
 *
 *   npx tsx scripts/curate_fast_agreement.ts /usr/share/backgrounds [--json out.json]
 *
 * Every JPEG/PNG/WebP under the folder is turned into several JPEG (q90) test inputs: 800×600, 1024×768 and
 * 2048×1536 cover crops and a 1024×768 crop of the centre 60 %, so both the plain Lanczos decode (800 → 512) and
 * JPEG shrink-on-load are exercised (with the image addon: 1024 → 512 is the DCT 1/2 decode alone, 2048 → 512 the
 * DCT 1/4 decode alone; with sharp alone: 2048 → 512 is DCT 1/2 plus Lanczos). Outputs are PNG, so the PSNR is
 * that of the decoded pixels, without JPEG encoding noise.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { analyseFile, sha256Hex } from '../src/curate/analyse.js';
import { hammingDistance, HASH_KINDS, hexToHash, type HashKind } from '../src/curate/hash.js';
import { curateConfig } from '../src/curate/schema.js';

const folder = process.argv[2];
if (!folder) throw new Error('usage: curate_fast_agreement.ts <folder of photographs> [--json out.json]');
const jsonAt = process.argv.indexOf('--json');
const jsonOut = jsonAt > 0 ? process.argv[jsonAt + 1] : undefined;

async function variants(path: string): Promise<{ name: string; bytes: Buffer }[]> {
  const src = sharp(path).rotate();
  const meta = await src.metadata();
  const out: { name: string; bytes: Buffer }[] = [];
  for (const [w, h] of [
    [800, 600],
    [1024, 768],
    [2048, 1536],
  ] as const) {
    if ((meta.width ?? 0) < w / 2) continue;
    out.push({ name: `${w}x${h}`, bytes: await sharp(path).rotate().resize(w, h, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer() });
  }
  const cw = Math.round((meta.width ?? 0) * 0.6);
  const ch = Math.round((meta.height ?? 0) * 0.6);
  const crop = { left: Math.round(((meta.width ?? 0) - cw) / 2), top: Math.round(((meta.height ?? 0) - ch) / 2), width: cw, height: ch };
  out.push({ name: 'centre', bytes: await sharp(path).rotate().extract(crop).resize(1024, 768, { fit: 'cover' }).jpeg({ quality: 90 }).toBuffer() });
  return out;
}

async function psnr(a: string, b: string): Promise<number> {
  const [x, y] = await Promise.all([sharp(a).raw().toBuffer(), sharp(b).raw().toBuffer()]);
  if (x.length !== y.length) return Number.NaN;
  let se = 0;
  for (let i = 0; i < x.length; i++) se += (x[i]! - y[i]!) ** 2;
  const mse = se / x.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

const root = mkdtempSync(join(tmpdir(), 'sf-agreement-'));
const histograms: Record<HashKind, number[]> = { phash: [], dhash: [], ahash: [], whash: [] };
const psnrs: number[] = [];
const psnrByVariant: Record<string, number[]> = {};
let samples = 0;
try {
  const files = readdirSync(folder).filter((f) => /\.(jpe?g|png|webp)$/i.test(f));
  for (const f of files) {
    for (const v of await variants(join(folder, f))) {
      samples++;
      const sha = sha256Hex(v.bytes);
      for (const kind of HASH_KINDS) {
        const base = { input: { paths: [folder] }, dedup: { hash: kind }, output: { image_format: 'png' as const } };
        const exact = await analyseFile(v.bytes, sha, curateConfig({ ...base, decode: { mode: 'exact' } }), join(root, 'exact'));
        const fast = await analyseFile(v.bytes, sha, curateConfig({ ...base, decode: { mode: 'fast' } }), join(root, 'fast'));
        if (!exact.ok || !fast.ok) throw new Error(`${f} ${v.name}: not decodable`);
        const d = hammingDistance(hexToHash(exact.perceptualHash), hexToHash(fast.perceptualHash));
        const hist = histograms[kind];
        hist[d] = (hist[d] ?? 0) + 1;
        if (kind === 'phash') {
          const db = await psnr(join(root, 'exact', exact.cached.path), join(root, 'fast', fast.cached.path));
          psnrs.push(db);
          (psnrByVariant[v.name] ??= []).push(db);
        }
      }
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}

const summary: Record<string, unknown> = { samples, psnr_db: {} };
for (const kind of HASH_KINDS) {
  const hist = Array.from(histograms[kind], (c) => c ?? 0);
  const total = hist.reduce((a, b) => a + b, 0);
  const mean = hist.reduce((a, c, d) => a + c * d, 0) / total;
  const bitAgreement = 1 - mean / 64;
  summary[kind] = { histogram: hist, mean_distance: mean, max_distance: hist.length - 1, bit_agreement: bitAgreement };
  console.log(
    `${kind}: ${total} images, Hamming distance exact vs fast: ${hist.map((c, d) => `${d}:${c}`).join(' ')}; mean ${mean.toFixed(2)}, max ${hist.length - 1}, bit agreement ${(100 * bitAgreement).toFixed(2)} %`,
  );
}
const finite = psnrs.filter(Number.isFinite).sort((a, b) => a - b);
summary.psnr_db = { min: finite[0], median: finite[Math.floor(finite.length / 2)], identical: psnrs.length - finite.length };
console.log(
  `output (png) PSNR fast vs exact: min ${finite[0]?.toFixed(1)} dB, median ${finite[Math.floor(finite.length / 2)]?.toFixed(1)} dB, ${psnrs.length - finite.length} of ${psnrs.length} identical`,
);
const byVariant: Record<string, { min: number; median: number; identical: number }> = {};
for (const [name, list] of Object.entries(psnrByVariant)) {
  const f = list.filter(Number.isFinite).sort((a, b) => a - b);
  byVariant[name] = { min: f[0] ?? Infinity, median: f[Math.floor(f.length / 2)] ?? Infinity, identical: list.length - f.length };
  console.log(`  ${name}: PSNR min ${(f[0] ?? Infinity).toFixed(1)} dB, median ${(f[Math.floor(f.length / 2)] ?? Infinity).toFixed(1)} dB, ${list.length - f.length} of ${list.length} identical`);
}
summary.psnr_by_input = byVariant;
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(summary, null, 1));
