import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { dctScaleFor, decodeImage, isRejection, type DecodedImage, type DecodeOptions } from '../src/curate/decode.js';
import { qualityOfJs } from '../src/curate/filters.js';
import { imageAddon } from '../src/curate/image_addon.js';
import { resizeLanczos8Js } from '../src/curate/pil_resize.js';
import { planResize, resizeAndEncode } from '../src/curate/resize.js';
import { Rng } from '../src/util/rng.js';
import { pattern, rawImage } from './curate_fixtures.js';

/**
 * The image addon (native/src/jpeg.cc, pil_resample.cc) against independent references: sharp/libvips for JPEG
 * decoding (the same libjpeg family: full-size pixels must agree exactly), sharp's rotate() for EXIF orientation,
 * and the JS Pillow resize (itself checked against Pillow in curate_hash.test.ts) for the native resize.
 */

const addon = imageAddon();
const opts: DecodeOptions = { background: [255, 255, 255], maxPixels: 1e8 };

async function sharpPixels(bytes: Uint8Array): Promise<{ rgb: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(bytes).rotate().toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { rgb: data, width: info.width, height: info.height };
}

function maxAbsDiff(a: Uint8Array, b: Uint8Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function decoded(bytes: Uint8Array, o: DecodeOptions = opts): Promise<DecodedImage> {
  const d = await decodeImage(bytes, o);
  if (isRejection(d)) throw new Error(`unexpected rejection: ${d.reason}`);
  return d;
}

function noise(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rng.uniform() * 256));
}

describe.skipIf(!addon)('image addon: Pillow resize', () => {
  it('matches the JS Pillow resize byte for byte (down, up, one axis, 1/3/4 channels)', () => {
    const cases: [number, number, number, number, number][] = [
      [1024, 768, 3, 32, 32],
      [512, 384, 3, 256, 192],
      [256, 192, 3, 9, 8],
      [100, 50, 3, 37, 91],
      [64, 48, 1, 256, 256],
      [7, 5, 4, 3, 2],
      [300, 200, 3, 300, 120],
      [300, 200, 3, 150, 200],
    ];
    for (const [w, h, c, ow, oh] of cases) {
      const src = noise(w * h * c, w * 7 + h);
      const native = addon!.pilResize(src, w, h, c, ow, oh);
      expect(Buffer.compare(native, Buffer.from(resizeLanczos8Js(src, w, h, c, ow, oh))), `${w}x${h}x${c} -> ${ow}x${oh}`).toBe(0);
    }
  });

  it('computes the quality measures as the JS does (same sums; entropy within an ulp of log2)', () => {
    for (const [w, h, seed] of [[256, 192, 1], [31, 7, 2], [2, 5, 3]] as const) {
      const img = { rgb: Uint8Array.from(pattern(w, h, seed)), width: w, height: h };
      const native = addon!.lumaMeasures(img.rgb, w, h);
      const js = qualityOfJs(img);
      expect(native.brightness).toBe(js.brightness);
      expect(native.blurVariance).toBe(js.blurVariance);
      expect(native.entropy).toBeCloseTo(js.entropy, 12);
    }
    const flat = new Uint8Array(30 * 20 * 3).fill(77);
    expect(addon!.lumaMeasures(flat, 30, 20)).toEqual({ brightness: qualityOfJs({ rgb: flat, width: 30, height: 20 }).brightness, entropy: 0, blurVariance: 0 });
  });

  it('rejects a buffer that does not match its size', () => {
    expect(() => addon!.pilResize(new Uint8Array(10), 4, 4, 3, 2, 2)).toThrow(/width × height × channels/);
  });
});

describe.skipIf(!addon)('image addon: JPEG decode', () => {
  it('decodes baseline 4:2:0 and 4:4:4, progressive and greyscale JPEGs to exactly the pixels libvips decodes', async () => {
    const variants = {
      baseline420: await rawImage(96, 64, 1).jpeg({ quality: 85 }).toBuffer(),
      baseline444: await rawImage(96, 64, 2).jpeg({ quality: 95, chromaSubsampling: '4:4:4' }).toBuffer(),
      progressive: await rawImage(97, 61, 3).jpeg({ quality: 90, progressive: true }).toBuffer(),
      grey: await rawImage(80, 48, 4).toColourspace('b-w').jpeg({ quality: 90 }).toBuffer(),
    };
    for (const [name, bytes] of Object.entries(variants)) {
      const head = addon!.jpegHeader(bytes);
      if (typeof head === 'string') throw new Error(head);
      expect(head.progressive, name).toBe(name === 'progressive');
      expect(head.components, name).toBe(name === 'grey' ? 1 : 3);
      const ours = await decoded(bytes);
      const ref = await sharpPixels(bytes);
      expect([ours.width, ours.height], name).toEqual([ref.width, ref.height]);
      expect(maxAbsDiff(ours.rgb, ref.rgb), name).toBe(0);
      const meta = await sharp(bytes).metadata();
      expect(ours.source, name).toEqual({ format: 'jpeg', space: meta.space, channels: meta.channels, depth: meta.depth, hasAlpha: false, orientation: 1 });
    }
  });

  it('applies all eight EXIF orientations as sharp rotate() does', async () => {
    for (let orientation = 1; orientation <= 8; orientation++) {
      const bytes = await rawImage(40, 24, 5).jpeg({ quality: 95 }).withMetadata({ orientation }).toBuffer();
      const head = addon!.jpegHeader(bytes);
      expect(typeof head !== 'string' && head.orientation).toBe(orientation);
      const ours = await decoded(bytes);
      const ref = await sharpPixels(bytes);
      expect([ours.width, ours.height, ours.fullWidth, ours.fullHeight]).toEqual([ref.width, ref.height, ref.width, ref.height]);
      expect(maxAbsDiff(ours.rgb, ref.rgb), `orientation ${orientation}`).toBe(0);
      expect(ours.source.orientation).toBe(orientation);
    }
  });

  it('shrinks on load in the DCT domain when the target is at most 1/2, 1/4, 1/8, then finishes with Lanczos-3', async () => {
    expect(dctScaleFor({ width: 1024, height: 768 }, { width: 512, height: 384 })).toBe(2);
    expect(dctScaleFor({ width: 2048, height: 1536 }, { width: 512, height: 384 })).toBe(4);
    expect(dctScaleFor({ width: 4096, height: 3072 }, { width: 256, height: 192 })).toBe(8);
    expect(dctScaleFor({ width: 800, height: 600 }, { width: 512, height: 384 })).toBe(1);
    expect(dctScaleFor({ width: 1023, height: 768 }, { width: 512, height: 384 })).toBe(1);
    const bytes = await rawImage(256, 192, 6).jpeg({ quality: 95 }).toBuffer();
    // 1/2 exactly: the DCT-scaled decode is the result, as libjpeg-turbo gives it.
    const half = await decoded(bytes, { ...opts, scaleTo: () => ({ width: 128, height: 96 }) });
    const direct = addon!.jpegDecode(bytes, 2, 1);
    if (typeof direct === 'string') throw new Error(direct);
    expect([half.width, half.height, half.fullWidth, half.fullHeight]).toEqual([128, 96, 256, 192]);
    expect(Buffer.compare(Buffer.from(half.rgb), direct.rgb)).toBe(0);
    // Close to the full decode followed by Lanczos-3 (the exact path): a smooth pattern, a few levels at most.
    const full = await sharpPixels(bytes);
    const exact = await sharp(full.rgb, { raw: { width: 256, height: 192, channels: 3 } }).resize(128, 96, { kernel: 'lanczos3' }).raw().toBuffer();
    let se = 0;
    for (let i = 0; i < exact.length; i++) se += (exact[i]! - half.rgb[i]!) ** 2;
    expect(10 * Math.log10((255 * 255) / (se / exact.length))).toBeGreaterThan(40);
    // 100 of 256: 1/2 in the DCT domain, then Lanczos-3 128 → 100.
    const odd = await decoded(bytes, { ...opts, scaleTo: () => ({ width: 100, height: 75 }) });
    expect([odd.width, odd.height]).toEqual([100, 75]);
  });

  it('leaves CMYK, ICC-tagged and broken JPEGs to sharp, with the same rejection text as before', async () => {
    const cmyk = await rawImage(48, 48, 7).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
    expect(typeof addon!.jpegDecode(cmyk, 1, 1)).toBe('string');
    const c = await decoded(cmyk);
    expect(c.source.space).toBe('cmyk');
    expect(maxAbsDiff(c.rgb, (await sharpPixels(cmyk)).rgb)).toBe(0);

    const icc = await rawImage(48, 48, 8).jpeg({ quality: 95 }).withIccProfile('p3').toBuffer();
    const head = addon!.jpegHeader(icc);
    expect(typeof head !== 'string' && head.icc).toBe(true);
    const i = await decoded(icc);
    // sharp converts from the embedded Display P3 profile to sRGB, libjpeg alone would not.
    const raw = addon!.jpegDecode(icc, 1, 1);
    if (typeof raw === 'string') throw new Error(raw);
    expect(maxAbsDiff(i.rgb, (await sharpPixels(icc)).rgb)).toBe(0);
    expect(maxAbsDiff(i.rgb, raw.rgb)).toBeGreaterThan(2);

    const jpg = await rawImage(64, 64, 9).jpeg({ quality: 90 }).toBuffer();
    const truncated = jpg.subarray(0, Math.floor(jpg.length * 0.6));
    expect(addon!.jpegDecode(truncated, 1, 1)).toMatch(/Premature end of JPEG file/);
    const r = await decodeImage(truncated, opts);
    expect(isRejection(r) && r).toEqual({ code: 'corrupt', reason: 'cannot decode jpeg: truncated or corrupt data (a decoder warning, treated as an error)' });
    const notJpeg = Buffer.from('\xff\xd8\xff\xe0 this is not really a jpeg at all'.repeat(4), 'latin1');
    expect(typeof addon!.jpegHeader(notJpeg)).toBe('string');
    const n = await decodeImage(notJpeg, opts);
    expect(isRejection(n) && n.code).toBe('unsupported');
  });

  it('refuses an over-sized JPEG from its header, before decoding', async () => {
    const bytes = await rawImage(64, 48, 10).jpeg().toBuffer();
    const r = await decodeImage(bytes, { ...opts, maxPixels: 3000 });
    expect(isRejection(r) && r).toEqual({ code: 'pixel_limit', reason: '64x48 = 3072 pixels exceeds max_pixels 3000 (possible decompression bomb)' });
  });
});

describe.skipIf(!addon)('image addon: JPEG encode', () => {
  it('pads and crops while encoding, at the quality asked, close to what sharp encodes', async () => {
    const src = pattern(120, 80, 11);
    for (const mode of ['border', 'center_crop'] as const) {
      const plan = planResize(120, 80, 80, mode, false);
      const enc = { format: 'jpg' as const, quality: 95, padColour: [250, 10, 20] as const };
      // The source is already at plan.scaled for border (longest side 80 needs 80×53: scale it first).
      const scaled = await sharp(src, { raw: { width: 120, height: 80, channels: 3 } }).resize(plan.scaled.width, plan.scaled.height, { kernel: 'lanczos3' }).raw().toBuffer();
      const ours = await resizeAndEncode(scaled, plan.scaled.width, plan.scaled.height, plan, enc);
      expect([ours.width, ours.height]).toEqual([80, 80]);
      let ref = sharp(scaled, { raw: { width: plan.scaled.width, height: plan.scaled.height, channels: 3 } });
      if (plan.crop) ref = ref.extract(plan.crop);
      if (plan.pad) ref = ref.extend({ ...plan.pad, background: { r: 250, g: 10, b: 20 } });
      const refPixels = await ref.raw().toBuffer();
      const back = await sharp(ours.bytes).raw().toBuffer({ resolveWithObject: true });
      expect([back.info.width, back.info.height, back.info.format]).toEqual([80, 80, 'raw']);
      let se = 0;
      for (let i = 0; i < refPixels.length; i++) se += (refPixels[i]! - back.data[i]!) ** 2;
      expect(10 * Math.log10((255 * 255) / (se / refPixels.length)), mode).toBeGreaterThan(38);
      if (plan.pad) {
        // A pixel in the middle of the top padding is the pad colour (within JPEG's rounding).
        const p = (3 * 80 + 40) * 3;
        expect(Math.abs(back.data[p]! - 250) + Math.abs(back.data[p + 1]! - 10) + Math.abs(back.data[p + 2]! - 20)).toBeLessThanOrEqual(6);
      }
    }
  });

  it('uses 4:4:4 chroma from quality 90 and 4:2:0 below, and optimised Huffman tables only when asked', async () => {
    const rgb = pattern(64, 64, 12);
    const chroma = async (q: number) => (await sharp(addon!.jpegEncode(rgb, 64, 64, 64, 64, 0, 0, Uint8Array.of(255, 255, 255), q, q >= 90, false)).metadata()).chromaSubsampling;
    expect(await chroma(95)).toBe('4:4:4');
    expect(await chroma(80)).toBe('4:2:0');
    const plain = addon!.jpegEncode(rgb, 64, 64, 64, 64, 0, 0, Uint8Array.of(255, 255, 255), 90, true, false);
    const optimised = addon!.jpegEncode(rgb, 64, 64, 64, 64, 0, 0, Uint8Array.of(255, 255, 255), 90, true, true);
    expect(optimised.length).toBeLessThan(plain.length);
    const [a, b] = await Promise.all([sharp(plain).raw().toBuffer(), sharp(optimised).raw().toBuffer()]);
    expect(Buffer.compare(a, b)).toBe(0);
    expect(() => addon!.jpegEncode(rgb, 64, 64, 64, 64, 0, 0, Uint8Array.of(255, 255, 255), 0, true, false)).toThrow(/quality/);
  });

  it("output.chroma_subsampling: 'auto' follows the quality rule, '4:2:0' and '4:4:4' are what they say, on the addon and on sharp", async () => {
    const rgb = pattern(64, 48, 5);
    const plan = planResize(64, 48, 32, 'border', false);
    const chroma = async (quality: number, chromaSubsampling?: 'auto' | '4:2:0' | '4:4:4') =>
      (await sharp((await resizeAndEncode(rgb, 64, 48, plan, { format: 'jpg', quality, padColour: [255, 255, 255], ...(chromaSubsampling ? { chromaSubsampling } : {}) })).bytes).metadata()).chromaSubsampling;
    expect(await chroma(95)).toBe('4:4:4');
    expect(await chroma(95, 'auto')).toBe('4:4:4');
    expect(await chroma(80, 'auto')).toBe('4:2:0');
    expect(await chroma(95, '4:2:0')).toBe('4:2:0');
    expect(await chroma(80, '4:4:4')).toBe('4:4:4');
  });
});
