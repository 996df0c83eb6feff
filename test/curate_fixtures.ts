import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { Rng } from '../src/util/rng.js';

/**
 * Small images for the curate tests, made with sharp at test time. Patterns are sums of a few low-frequency
 * sinusoids per channel, so they survive re-encoding, resizing and slight crops with a similar perceptual hash,
 * while two different seeds give unrelated hashes.
 */

export function pattern(width: number, height: number, seed: number): Buffer {
  const rng = new Rng(seed);
  const waves = Array.from({ length: 3 }, () =>
    Array.from({ length: 4 }, () => ({
      fx: (rng.uniform() * 4 - 2) * Math.PI * 2,
      fy: (rng.uniform() * 4 - 2) * Math.PI * 2,
      ph: rng.uniform() * Math.PI * 2,
      a: 20 + rng.uniform() * 30,
    })),
  );
  const out = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let v = 128;
        for (const w of waves[c]!) v += w.a * Math.sin((w.fx * x) / width + (w.fy * y) / height + w.ph);
        out[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return out;
}

export function rawImage(width: number, height: number, seed: number): Sharp {
  return sharp(pattern(width, height, seed), { raw: { width, height, channels: 3 } });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `sf-${prefix}-`));
}

export interface FixtureSet {
  dir: string;
  /** File name → what it is, for assertions. */
  files: Record<string, string>;
}

/**
 * A folder covering every stage: originals, an exact duplicate (lossless re-encode), near duplicates (JPEG
 * re-encode, downscale, slight crop), CMYK, EXIF rotation, alpha, a corrupt, a truncated, an empty and a
 * non-image file, a dark and a flat image, and captions in sidecars.
 */
export async function makeFixtureFolder(dir = tempDir('curate-in')): Promise<FixtureSet> {
  mkdirSync(join(dir, 'sub'), { recursive: true });
  const files: Record<string, string> = {};
  const put = (name: string, bytes: Uint8Array, what: string) => {
    writeFileSync(join(dir, name), bytes);
    files[name] = what;
  };
  put('a.png', await rawImage(64, 48, 1).png().toBuffer(), 'original');
  put('sub/a_lossless.webp', await rawImage(64, 48, 1).webp({ lossless: true }).toBuffer(), 'exact duplicate of a.png');
  put('a_small.jpg', await rawImage(64, 48, 1).resize(48, 36).jpeg({ quality: 90 }).toBuffer(), 'near duplicate (downscaled) of a.png');
  put('b.png', await rawImage(64, 64, 2).png().toBuffer(), 'original');
  put('b_crop.jpg', await rawImage(64, 64, 2).extract({ left: 2, top: 2, width: 60, height: 60 }).jpeg({ quality: 92 }).toBuffer(), 'near duplicate (slight crop) of b.png');
  put('c_cmyk.jpg', await rawImage(64, 64, 3).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer(), 'CMYK JPEG');
  put('d_rotated.jpg', await rawImage(64, 32, 4).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer(), 'EXIF orientation 6 (64x32 stored)');
  const rgba = Buffer.alloc(40 * 40 * 4);
  const base = pattern(40, 40, 5);
  for (let i = 0; i < 40 * 40; i++) {
    rgba[4 * i] = base[3 * i]!;
    rgba[4 * i + 1] = base[3 * i + 1]!;
    rgba[4 * i + 2] = base[3 * i + 2]!;
    rgba[4 * i + 3] = i % 40 < 20 ? 0 : 255; // left half transparent
  }
  put('e_alpha.png', await sharp(rgba, { raw: { width: 40, height: 40, channels: 4 } }).png().toBuffer(), 'PNG with alpha');
  put('corrupt.jpg', Buffer.from('\xff\xd8\xff\xe0 this is not really a jpeg at all'.repeat(4), 'latin1'), 'corrupt');
  const full = await rawImage(64, 64, 6).jpeg({ quality: 90 }).toBuffer();
  put('truncated.jpg', full.subarray(0, Math.floor(full.length * 0.6)), 'truncated JPEG');
  put('empty.png', new Uint8Array(0), 'zero bytes');
  put('notes.png', Buffer.from('just some text\n'), 'not an image');
  const dark = Buffer.alloc(48 * 48 * 3);
  const darkNoise = pattern(48, 48, 7);
  for (let i = 0; i < dark.length; i++) dark[i] = darkNoise[i]! >> 4; // 0..15: very dark but textured
  put('dark.png', await sharp(dark, { raw: { width: 48, height: 48, channels: 3 } }).png().toBuffer(), 'too dark');
  put('flat.png', await sharp({ create: { width: 48, height: 48, channels: 3, background: { r: 120, g: 130, b: 140 } } }).png().toBuffer(), 'flat (no information, no edges)');
  writeFileSync(join(dir, 'a.txt'), 'a  photo &amp; a   test, a photo &amp; a test, sunset\n');
  writeFileSync(join(dir, 'b.caption'), 'second image');
  writeFileSync(join(dir, 'c_cmyk.json'), JSON.stringify({ caption: 'cmyk &lt;print&gt;' }));
  return { dir, files };
}
