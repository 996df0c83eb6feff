import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeImage, isRejection, type DecodedImage, type DecodeOptions } from '../src/curate/decode.js';
import { applyFilters, histogramEntropy, laplacianVariance, luma, meanBrightness, measureQuality } from '../src/curate/filters.js';
import { resizeLanczos8Js } from '../src/curate/pil_resize.js';
import { planResize, resizeAndEncode } from '../src/curate/resize.js';
import { curateConfig } from '../src/curate/schema.js';
import { pattern, rawImage, tempDir } from './curate_fixtures.js';

const opts: DecodeOptions = { background: [255, 255, 255], maxPixels: 1_000_000 };

async function decoded(bytes: Uint8Array, o = opts): Promise<DecodedImage> {
  const d = await decodeImage(bytes, o);
  if (isRejection(d)) throw new Error(`unexpected rejection: ${d.reason}`);
  return d;
}

describe('curate decode', () => {
  it('rejects empty, non-image, corrupt, truncated and over-sized files with a reason', async () => {
    const jpg = await rawImage(64, 48, 1).jpeg({ quality: 90 }).toBuffer();
    const cases: [Uint8Array, string][] = [
      [new Uint8Array(0), 'empty'],
      [Buffer.from('plain text, not an image'), 'unsupported'],
      [jpg.subarray(0, Math.floor(jpg.length / 2)), 'corrupt'],
      [jpg.subarray(0, jpg.length - 4), 'corrupt'],
    ];
    for (const [bytes, code] of cases) {
      const d = await decodeImage(bytes, opts);
      expect(isRejection(d) && d.code).toBe(code);
    }
    const bomb = await decodeImage(jpg, { ...opts, maxPixels: 64 * 48 - 1 });
    expect(isRejection(bomb) && bomb.code).toBe('pixel_limit');
    expect(isRejection(bomb) && bomb.reason).toContain('64x48 = 3072 pixels');
    expect((await decoded(jpg, { ...opts, maxPixels: 64 * 48 })).width).toBe(64);
  });

  it('applies EXIF orientation 6 as a 90° clockwise turn of the stored pixels', async () => {
    const file = await rawImage(64, 32, 4).png().toBuffer();
    const stored = pattern(64, 32, 4); // lossless, so these are the stored pixels
    const tagged = await sharp(file).png().withMetadata({ orientation: 6 }).toBuffer();
    const d = await decoded(tagged);
    expect([d.width, d.height, d.source.orientation]).toEqual([32, 64, 6]);
    // Displayed (row r, col c) = stored (row Hs-1-c, col r), Hs = stored height.
    for (let r = 0; r < 64; r += 7) {
      for (let c = 0; c < 32; c += 5) {
        const s = ((32 - 1 - c) * 64 + r) * 3;
        const o = (r * 32 + c) * 3;
        expect([...d.rgb.subarray(o, o + 3)]).toEqual([...stored.subarray(s, s + 3)]);
      }
    }
  });

  it('converts CMYK JPEG to sRGB close to the original colours', async () => {
    const original = pattern(64, 64, 3);
    const cmyk = await rawImage(64, 64, 3).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk');
    const d = await decoded(cmyk);
    expect(d.source.space).toBe('cmyk');
    expect(d.rgb.length).toBe(64 * 64 * 3);
    let err = 0;
    for (let i = 0; i < original.length; i++) err += Math.abs(original[i]! - d.rgb[i]!);
    // A profile round trip plus JPEG loss; an unconverted CMYK read would be off by ~100 per channel.
    expect(err / original.length).toBeLessThan(12);
  });

  it('mattes alpha onto the configured background', async () => {
    const rgba = Buffer.alloc(8 * 2 * 4);
    for (let i = 0; i < 16; i++) rgba.set([200, 100, 50, i % 8 < 4 ? 0 : i % 8 < 6 ? 255 : 128], 4 * i);
    const png = await sharp(rgba, { raw: { width: 8, height: 2, channels: 4 } }).png().toBuffer();
    const onWhite = await decoded(png);
    const onBlack = await decoded(png, { ...opts, background: [0, 0, 0] });
    expect([...onWhite.rgb.subarray(0, 3)]).toEqual([255, 255, 255]);
    expect([...onBlack.rgb.subarray(0, 3)]).toEqual([0, 0, 0]);
    expect([...onWhite.rgb.subarray(4 * 3, 4 * 3 + 3)]).toEqual([200, 100, 50]);
    // alpha 128/255 over white: 255 + (c - 255)·128/255
    const half = [...onWhite.rgb.subarray(7 * 3, 7 * 3 + 3)];
    [200, 100, 50].forEach((c, k) => expect(Math.abs(half[k]! - (255 + ((c - 255) * 128) / 255))).toBeLessThanOrEqual(1));
  });

  it('reduces 16-bit and greyscale PNGs to 8-bit RGB', async () => {
    const v8 = [0, 1, 4, 255, 117, 48, 156, 253, 9, 10, 11, 12];
    const png16 = await sharp(Buffer.from(v8), { raw: { width: 4, height: 1, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    const stored = await sharp(png16).toColourspace('rgb16').raw({ depth: 'ushort' }).toBuffer();
    const v16 = new Uint16Array(stored.buffer, stored.byteOffset, stored.byteLength / 2);
    expect(Math.max(...v16)).toBe(65535); // really 16-bit samples
    const d = await decoded(png16);
    expect(d.source.depth).toBe('ushort');
    // libvips' 8→16-bit step is a colour transform, not ×257, so the way back is checked to ±1.
    [...d.rgb].forEach((v, i) => expect(Math.abs(v - v8[i]!)).toBeLessThanOrEqual(1));
    const grey = await sharp(Buffer.from([10, 90, 200, 255]), { raw: { width: 4, height: 1, channels: 1 } }).png().toBuffer();
    const g = await decoded(grey);
    expect([...g.rgb]).toEqual([10, 10, 10, 90, 90, 90, 200, 200, 200, 255, 255, 255]);
  });
});

describe('curate quality filters', () => {
  it('computes entropy, brightness and Laplacian variance on hand-worked images', () => {
    expect(histogramEntropy(new Float64Array([0, 0, 255, 255]))).toBeCloseTo(1, 12);
    expect(histogramEntropy(new Float64Array([1, 2, 3, 4]))).toBeCloseTo(2, 12);
    expect(histogramEntropy(new Float64Array([7, 7, 7]))).toBe(0);
    expect(meanBrightness(new Float64Array([0, 255, 255, 0]))).toBeCloseTo(0.5, 12);
    expect([...luma(new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255]), 3, 1)]).toEqual([0.299 * 255, 0.587 * 255, 0.114 * 255]);
    // 4×3, interior (1,1) and (1,2): Laplacians -40 and +10 → mean -15, variance 625.
    const y = new Float64Array([0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0]);
    expect(laplacianVariance(y, 4, 3)).toBeCloseTo(625, 10);
    expect(laplacianVariance(new Float64Array(9).fill(5), 3, 3)).toBe(0);
  });

  it('measures at analysis_size and reports every failed filter', async () => {
    const big = pattern(300, 150, 9);
    const m = measureQuality(big, 300, 150, 100);
    // Pillow's LANCZOS (the JS reference, itself checked against Pillow in curate_hash.test.ts).
    const small = resizeLanczos8Js(big, 300, 150, 3, 100, 50);
    const ys = luma(small, 100, 50);
    expect(m.blurVariance).toBeCloseTo(laplacianVariance(ys, 100, 50), 8);
    expect(m.brightness).toBeCloseTo(meanBrightness(luma(big, 300, 150)), 2);
    const f = curateConfig({ input: { paths: ['x'] }, filters: { min_side: 200, max_aspect_ratio: 1.5, min_blur_variance: 1e9, min_brightness: 0.99, min_entropy: 7.99 } }).filters;
    expect(applyFilters(m, 300, 150, f).map((r) => r.filter)).toEqual(['min_side', 'aspect_ratio', 'blur', 'too_dark', 'low_information']);
    expect(applyFilters(m, 300, 150, curateConfig({ input: { paths: ['x'] } }).filters)).toEqual([]);
    expect(applyFilters({ ...m, brightness: 0.99 }, 300, 150, { ...f, max_brightness: 0.98 }).map((r) => r.filter)).toContain('too_bright');
  });
});

describe('curate resize modes', () => {
  it('plans img2dataset geometry', () => {
    expect(planResize(64, 48, 32, 'border', false)).toEqual({
      scaled: { width: 32, height: 24 },
      pad: { top: 4, bottom: 4, left: 0, right: 0 },
      width: 32,
      height: 32,
    });
    // 17·32/30 = 18.13 → 18; 14 rows of padding split 7/7.
    expect(planResize(30, 17, 32, 'border', false).pad).toEqual({ top: 7, bottom: 7, left: 0, right: 0 });
    expect(planResize(30, 17, 32, "border", false).scaled).toEqual({ width: 32, height: 18 });
    expect(planResize(30, 17, 32, 'border', true)).toEqual({
      scaled: { width: 30, height: 17 },
      pad: { top: 7, bottom: 8, left: 1, right: 1 },
      width: 32,
      height: 32,
    });
    // 64·32/48 = 42.67 → 43 wide; crop 11 columns: 5 left, 6 right.
    expect(planResize(64, 48, 32, 'center_crop', false)).toEqual({
      scaled: { width: 43, height: 32 },
      crop: { left: 5, top: 0, width: 32, height: 32 },
      width: 32,
      height: 32,
    });
    expect(planResize(64, 48, 32, 'keep_ratio', false)).toEqual({ scaled: { width: 43, height: 32 }, width: 43, height: 32 });
    expect(planResize(64, 48, 32, 'keep_ratio_largest', false)).toEqual({ scaled: { width: 32, height: 24 }, width: 32, height: 24 });
    expect(planResize(64, 48, 32, 'no', false)).toEqual({ scaled: { width: 64, height: 48 }, width: 64, height: 48 });
    expect(planResize(20, 30, 32, 'keep_ratio', true)).toEqual({ scaled: { width: 20, height: 30 }, width: 20, height: 30 });
    expect(planResize(20, 30, 32, 'keep_ratio', false)).toEqual({ scaled: { width: 32, height: 48 }, width: 32, height: 48 });
    expect(planResize(20, 40, 32, 'center_crop', true)).toEqual({
      scaled: { width: 20, height: 40 },
      crop: { left: 0, top: 4, width: 20, height: 32 },
      width: 20,
      height: 32,
    });
    expect(planResize(32, 32, 32, 'border', false)).toEqual({ scaled: { width: 32, height: 32 }, width: 32, height: 32 });
  });

  it('pads with the border colour and crops the centre', async () => {
    const src = pattern(64, 48, 11);
    const plan = planResize(64, 48, 32, 'border', false);
    const out = await resizeAndEncode(src, 64, 48, plan, { format: 'png', quality: 95, padColour: [10, 20, 30] });
    const { data, info } = await sharp(out.bytes).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([32, 32, 3]);
    const px = (x: number, y: number) => [...data.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)];
    for (const y of [0, 3, 28, 31]) for (const x of [0, 15, 31]) expect(px(x, y)).toEqual([10, 20, 30]);
    const inside = await sharp(src, { raw: { width: 64, height: 48, channels: 3 } }).resize(32, 24, { fit: 'fill', kernel: 'lanczos3' }).raw().toBuffer();
    expect(Buffer.from(data.subarray(4 * 32 * 3, 28 * 32 * 3)).equals(inside)).toBe(true);

    const crop = await resizeAndEncode(src, 64, 48, planResize(64, 48, 32, 'center_crop', false), { format: 'png', quality: 95, padColour: [0, 0, 0] });
    const scaled = await sharp(src, { raw: { width: 64, height: 48, channels: 3 } }).resize(43, 32, { fit: 'fill', kernel: 'lanczos3' }).raw().toBuffer();
    const cropped = await sharp(crop.bytes).raw().toBuffer();
    for (let y = 0; y < 32; y += 3) {
      expect(Buffer.from(cropped.subarray(y * 96, y * 96 + 96)).equals(scaled.subarray((y * 43 + 5) * 3, (y * 43 + 5) * 3 + 96))).toBe(true);
    }
    for (const format of ['jpg', 'webp'] as const) {
      const enc = await resizeAndEncode(src, 64, 48, plan, { format, quality: 80, padColour: [0, 0, 0] });
      expect((await sharp(enc.bytes).metadata()).format).toBe(format === 'jpg' ? 'jpeg' : 'webp');
    }
  });
});

describe('curate tar writer', () => {
  it('writes ustar archives that system tar lists and extracts byte for byte', async () => {
    const { tarBytes, sampleMembers, ustarHeader } = await import('../src/curate/webdataset.js');
    const members = [
      ...sampleMembers({ key: '000001', fields: { txt: Buffer.from('a cat'), jpg: new Uint8Array(700).map((_, i) => i % 251), _skip: new Uint8Array(1) } }),
      ...sampleMembers({ key: '000002', fields: { json: Buffer.from('{"a":1}'), txt: new Uint8Array(0) } }),
    ];
    expect(members.map((m) => m.name)).toEqual(['000001.jpg', '000001.txt', '000002.json', '000002.txt']);
    expect(() => sampleMembers({ key: 'a.b', fields: {} })).toThrow(/without dots/);
    const tar = tarBytes(members, { mtime: 1_700_000_000 });
    expect(tar.length % 512).toBe(0);
    const dir = tempDir('tar');
    writeFileSync(join(dir, 'x.tar'), tar);
    const listing = execFileSync('tar', ['-tvf', join(dir, 'x.tar')], { encoding: 'utf8' });
    expect(listing.trim().split('\n').map((l) => l.split(/\s+/).pop())).toEqual(members.map((m) => m.name));
    mkdirSync(join(dir, 'x'));
    execFileSync('tar', ['-xf', join(dir, 'x.tar'), '-C', join(dir, 'x')]);
    for (const m of members) expect(Buffer.from(readFileSync(join(dir, 'x', m.name))).equals(Buffer.from(m.data))).toBe(true);
    // The checksum: sum of all header bytes with the checksum field read as spaces, in octal.
    const h = ustarHeader('f.txt', 5);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    expect(parseInt(Buffer.from(h.subarray(148, 154)).toString('latin1'), 8)).toBe(sum);
    expect(Buffer.from(h.subarray(124, 135)).toString('latin1')).toBe('00000000005');
  });
});
