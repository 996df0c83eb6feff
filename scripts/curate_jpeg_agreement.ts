/**
 * How the image addon's libjpeg-turbo decode compares with sharp/libvips on real JPEGs:
 *   - full size, EXIF orientation applied: max |difference| per file against sharp's decode (both are libjpeg-turbo
 *     family decoders with the accurate integer IDCT and smooth chroma upsampling);
 *   - DCT-scaled 1/2, 1/4, 1/8 against sharp's Lanczos-3 to the same size (different filters: mean and max).
 * Files with an ICC profile are listed apart: curation leaves those to sharp, which converts them to sRGB.
 *
 *   npx tsx scripts/curate_jpeg_agreement.ts /usr/share/backgrounds
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { imageAddon } from '../src/curate/image_addon.js';

const folder = process.argv[2];
if (!folder) throw new Error('usage: curate_jpeg_agreement.ts <folder of JPEGs>');
const addon = imageAddon();
if (!addon) throw new Error('the image addon is not built (npm run build:native)');

function diff(a: Uint8Array, b: Uint8Array): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

const full: number[] = [];
const icc: number[] = [];
const scaled: Record<number, { max: number; mean: number }[]> = { 2: [], 4: [], 8: [] };
for (const f of readdirSync(folder).filter((n) => /\.jpe?g$/i.test(n)).sort()) {
  const bytes = readFileSync(join(folder, f));
  const head = addon.jpegHeader(bytes);
  if (typeof head === 'string' || (head.components !== 3 && head.components !== 1)) continue;
  const ours = addon.jpegDecode(bytes, 1, head.orientation || 1);
  if (typeof ours === 'string') continue;
  const ref = await sharp(bytes).rotate().toColourspace('srgb').removeAlpha().raw().toBuffer();
  (head.icc ? icc : full).push(diff(ours.rgb, ref).max);
  if (head.icc) continue;
  for (const d of [2, 4, 8] as const) {
    const s = addon.jpegDecode(bytes, d, head.orientation || 1);
    if (typeof s === 'string') continue;
    const lanczos = await sharp(bytes).rotate().resize(s.width, s.height, { fit: 'fill', kernel: 'lanczos3', fastShrinkOnLoad: false }).raw().toBuffer();
    scaled[d]!.push(diff(s.rgb, lanczos));
  }
}
const hist = (xs: number[]) => Object.entries(xs.reduce<Record<number, number>>((h, x) => ({ ...h, [x]: (h[x] ?? 0) + 1 }), {})).map(([k, v]) => `${k}:${v}`).join(' ');
console.log(`full size vs sharp, max |diff| per file (value:files): ${hist(full)} (${full.length} files without an ICC profile)`);
if (icc.length) console.log(`files with an ICC profile (curation leaves them to sharp), raw libjpeg vs sharp's sRGB conversion: ${hist(icc)}`);
for (const [d, list] of Object.entries(scaled)) {
  const means = list.map((x) => x.mean).sort((a, b) => a - b);
  console.log(`DCT 1/${d} vs sharp Lanczos-3 to the same size: mean |diff| median ${means[Math.floor(means.length / 2)]?.toFixed(2)}, worst ${means.at(-1)?.toFixed(2)}; max |diff| ${Math.max(...list.map((x) => x.max))}`);
}
