import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageFolderDataset } from '../src/data/image_folder.js';
import { ProceduralDataset } from '../src/data/procedural.js';
import { UsageError } from '../src/util/errors.js';

const root = await mkdtemp(join(tmpdir(), 'sf-imagefolder-'));
afterAll(() => rm(root, { recursive: true, force: true }));

type Rgb = [number, number, number];

/** Raw RGB(A) buffer with fill(x, y) per pixel. */
function raster(w: number, h: number, channels: 3 | 4, fill: (x: number, y: number) => number[]): Buffer {
  const buf = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) buf.set(fill(x, y), (y * w + x) * channels);
  return buf;
}

async function writeImage(rel: string, w: number, h: number, fill: (x: number, y: number) => number[], channels: 3 | 4 = 3, fmt: 'png' | 'jpeg' | 'webp' = 'png', orientation?: number) {
  const path = join(root, rel);
  await mkdir(join(path, '..'), { recursive: true });
  let img = sharp(raster(w, h, channels, fill), { raw: { width: w, height: h, channels } });
  img = fmt === 'png' ? img.png() : fmt === 'jpeg' ? img.jpeg({ quality: 95 }) : img.webp({ lossless: true });
  if (orientation) img = img.withMetadata({ orientation });
  await img.toFile(path);
}

function px(ds: ImageFolderDataset, i: number, x: number, y: number): number[] {
  const im = ds.get(i).image;
  const k = 3 * (y * ds.width + x);
  return [im[k]!, im[k + 1]!, im[k + 2]!];
}

function near(actual: number[], expected: number[], tol: number) {
  actual.forEach((v, c) => expect(Math.abs(v - expected[c]!), `${actual} vs ${expected}`).toBeLessThanOrEqual(tol));
}

const RED: Rgb = [255, 0, 0];
const GREEN: Rgb = [0, 255, 0];
const BLUE: Rgb = [0, 0, 255];

beforeAll(async () => {
  // Three 16-px bands (blue | green | red) 48×32: shorter side 32 → 16 halves the bands to 8 px,
  // and the centre 16 of 24 columns keeps 4 blue, 8 green, 4 red.
  await writeImage('bands.png', 48, 32, (x) => (x < 16 ? BLUE : x < 32 ? GREEN : RED));
  await writeFile(join(root, 'bands.txt'), '  three bands \n');
  // Stored 20×40, red top / blue bottom, EXIF orientation 6 (display = rotated 90° clockwise):
  // displayed 40×20 with blue on the left, red on the right.
  await writeImage('rotated.jpg', 20, 40, (_x, y) => (y < 20 ? RED : BLUE), 3, 'jpeg', 6);
  await writeFile(join(root, 'rotated.caption'), 'rotated');
  // Transparent left half, opaque green right half, as lossless WebP.
  await writeImage('sub/alpha.webp', 32, 32, (x) => (x < 16 ? [0, 0, 0, 0] : [0, 255, 0, 255]), 4, 'webp');
  await writeImage('sub/deeper/grey.png', 20, 20, () => [100, 100, 100]);
  await writeFile(join(root, 'sub', 'metadata.jsonl'), '{"file_name": "alpha.webp", "text": "half transparent"}\n\n{"file_name": "deeper/grey.png", "caption": "grey"}\n{"file_name": "gone.png", "text": "missing"}\n');
  await writeImage('small.png', 8, 12, () => [10, 20, 30]);
  await writeFile(join(root, 'small.txt'), 'small');
  await writeFile(join(root, 'corrupt.png'), Buffer.from('definitely not a png'));
  await writeFile(join(root, 'corrupt.txt'), 'corrupt');
  await writeImage('badcaption.png', 16, 16, () => RED);
  await writeFile(join(root, 'badcaption.txt'), Buffer.from([0x61, 0xc3, 0x28, 0x62]));
  await writeImage('uncaptioned.png', 16, 16, () => BLUE);
  await writeFile(join(root, 'notes.md'), 'not an image');
});

describe('ImageFolderDataset', () => {
  it('loads captioned images recursively and reports every skip with its reason', async () => {
    const ds = await ImageFolderDataset.load({ root, size: 16 });
    expect(ds.length).toBe(4);
    expect([ds.width, ds.height]).toEqual([16, 16]);
    const files = Array.from({ length: ds.length }, (_, i) => ds.get(i).meta.file);
    expect(files).toEqual(['bands.png', 'rotated.jpg', 'sub/alpha.webp', 'sub/deeper/grey.png']);
    expect(Array.from({ length: 4 }, (_, i) => ds.get(i).caption)).toEqual(['three bands', 'rotated', 'half transparent', 'grey']);
    expect(ds.get(0).meta).toEqual({ file: 'bands.png', sourceWidth: 48, sourceHeight: 32 });
    expect(ds.get(1).meta).toMatchObject({ sourceWidth: 40, sourceHeight: 20 });

    const reasons = new Map(ds.skipped.map((s) => [s.path.slice(root.length + 1), s.reason]));
    expect([...reasons.keys()].sort()).toEqual(['badcaption.png', 'corrupt.png', 'small.png', 'sub/gone.png', 'uncaptioned.png']);
    expect(reasons.get('badcaption.png')).toContain(`${join(root, 'badcaption')}.txt is not valid UTF-8`);
    expect(reasons.get('corrupt.png')).toMatch(/^cannot decode/);
    expect(reasons.get('small.png')).toMatch(/smaller than the target: 8x12/);
    expect(reasons.get('sub/gone.png')).toContain(`${join(root, 'sub', 'metadata.jsonl')}:4`);
    expect(reasons.get('uncaptioned.png')).toMatch(/no caption/);
  });

  it('resizes the shorter side with Lanczos and crops the centre', async () => {
    const ds = await ImageFolderDataset.load({ root, size: 16 });
    for (const y of [0, 8, 15]) {
      near(px(ds, 0, 0, y), BLUE, 3);
      near(px(ds, 0, 1, y), BLUE, 12);
      near(px(ds, 0, 6, y), GREEN, 12);
      near(px(ds, 0, 9, y), GREEN, 12);
      near(px(ds, 0, 14, y), RED, 12);
      near(px(ds, 0, 15, y), RED, 3);
    }
  });

  it('applies EXIF orientation, flattens alpha on white, expands grey to RGB', async () => {
    const ds = await ImageFolderDataset.load({ root, size: 16 });
    near(px(ds, 1, 2, 8), BLUE, 40);
    near(px(ds, 1, 13, 8), RED, 40);
    near(px(ds, 2, 2, 8), [255, 255, 255], 3);
    near(px(ds, 2, 13, 8), GREEN, 3);
    near(px(ds, 3, 5, 5), [100, 100, 100], 1);
  });

  it('upscales small images when allowed and keeps uncaptioned ones when asked', async () => {
    const ds = await ImageFolderDataset.load({ root, size: 16, allowUpscale: true, missingCaption: 'empty' });
    const byFile = new Map(Array.from({ length: ds.length }, (_, i) => [ds.get(i).meta.file, i]));
    expect(ds.get(byFile.get('small.png')!).caption).toBe('small');
    near(px(ds, byFile.get('small.png')!, 7, 7), [10, 20, 30], 2);
    expect(ds.get(byFile.get('uncaptioned.png')!).caption).toBe('');
    expect(ds.skipped.map((s) => s.path.slice(root.length + 1)).sort()).toEqual(['badcaption.png', 'corrupt.png', 'sub/gone.png']);
  });

  it('decodes 16-bit PNGs to 8 bits', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sf-imagefolder16-'));
    try {
      // sharp widens 8-bit input to 16 bits by ×257, so 156 is stored as 40092.
      const raw = raster(16, 16, 3, () => [156, 40, 220]);
      await sharp(raw, { raw: { width: 16, height: 16, channels: 3 } }).toColourspace('rgb16').png().toFile(join(dir, 'deep.png'));
      expect((await sharp(join(dir, 'deep.png')).metadata()).depth).toBe('ushort');
      await writeFile(join(dir, 'deep.txt'), 'deep');
      const ds = await ImageFolderDataset.load({ root: dir, size: 16 });
      near(px(ds, 0, 3, 3), [156, 40, 220], 1);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it('reads the procedural cache as an imagefolder (captions.jsonl) with identical pixels', async () => {
    const cacheDir = join(root, '..', `${root.split('/').pop()}-cache`);
    const proc = await ProceduralDataset.create({ size: 32, count: 6, seed: 2, cacheDir });
    const ds = await ImageFolderDataset.load({ root: proc.cachePath!, size: 32 });
    expect(ds.length).toBe(6);
    for (let i = 0; i < 6; i++) {
      expect(ds.get(i).caption).toBe(proc.get(i).caption);
      expect(Buffer.compare(Buffer.from(ds.get(i).image), Buffer.from(proc.get(i).image))).toBe(0);
    }
    await rm(cacheDir, { recursive: true });
  });

  it('rejects bad usage with UsageError naming the culprit', async () => {
    const missing = join(root, 'nope');
    await expect(ImageFolderDataset.load({ root: missing, size: 16 })).rejects.toThrow(new UsageError(`image folder ${missing} does not exist`));
    await expect(ImageFolderDataset.load({ root, size: 16, maxImages: 3 })).rejects.toThrow(/holds 8 images, more than maxImages = 3/);
    await expect(ImageFolderDataset.load({ root, size: 512, maxBytes: 1024 ** 2 })).rejects.toThrow(/more than maxBytes/);
    await expect(ImageFolderDataset.load({ root, size: 4096 })).rejects.toBeInstanceOf(UsageError);

    const empty = await mkdtemp(join(tmpdir(), 'sf-imagefolder-empty-'));
    await writeFile(join(empty, 'readme.txt'), 'no images');
    await expect(ImageFolderDataset.load({ root: empty, size: 16 })).rejects.toThrow(/has no usable images/);
    await writeImage('../' + empty.split('/').pop() + '/a.png', 16, 16, () => RED);
    await writeFile(join(empty, 'captions.jsonl'), '{"file_name": "a.png", "text": "ok"}\n{"file_name": "a.png", text: oops}\n');
    await expect(ImageFolderDataset.load({ root: empty, size: 16 })).rejects.toThrow(`${join(empty, 'captions.jsonl')}:2: not valid JSON`);
    await writeFile(join(empty, 'captions.jsonl'), '{"file_name": "a.png", "text": 3}\n');
    await expect(ImageFolderDataset.load({ root: empty, size: 16 })).rejects.toThrow(`${join(empty, 'captions.jsonl')}:1: expected string fields`);
    await rm(empty, { recursive: true });
  });
});
