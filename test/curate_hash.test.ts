import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ahash,
  bitsToHash,
  dctLowBlock,
  decodeForHash,
  dhash,
  exactPixelHash,
  hammingDistance,
  hashBit,
  hashFile,
  hashToHex,
  hexToHash,
  phash,
  phashFromGrey32,
  whash,
  whashFromGrey,
  type Hash64,
  type PixelImage,
} from '../src/curate/hash.js';
import { resizeLanczos8, rgbToLuma8 } from '../src/curate/pil_resize.js';
import { Rng } from '../src/util/rng.js';

interface HashRef {
  phash: { name: string; grey: number[]; dct8x8: number[]; hex: string }[];
  whash: { name: string; side: number; grey: number[]; hex: string }[];
}
const ref = JSON.parse(await readFile(new URL('./fixtures/curate/hash_ref.json', import.meta.url), 'utf8')) as HashRef;

function image(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): PixelImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) rgb.set(pixel(x, y), (y * width + x) * 3);
  }
  return { rgb, width, height };
}

/** A smooth, photo-like colour image: random Gaussian blobs and low-frequency waves plus a little grain. */
function naturalish(seed: number, width = 320, height = 240): PixelImage {
  const rng = new Rng(seed);
  const blobs = Array.from({ length: 12 }, () => ({
    x: rng.range(0, width),
    y: rng.range(0, height),
    r: rng.range(0.05, 0.3) * width,
    c: [rng.range(-120, 120), rng.range(-120, 120), rng.range(-120, 120)],
  }));
  const waves = Array.from({ length: 3 }, () => ({ fx: rng.range(0.5, 3), fy: rng.range(0.5, 3), p: rng.range(0, 6.3), a: rng.range(10, 40) }));
  return image(width, height, (x, y) => {
    const px: [number, number, number] = [128, 128, 128];
    for (let c = 0; c < 3; c++) {
      let v = 128;
      for (const b of blobs) v += b.c[c]! * Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r));
      for (const w of waves) v += w.a * Math.sin((2 * Math.PI * (w.fx * x)) / width + (2 * Math.PI * (w.fy * y)) / height + w.p + c);
      v += rng.range(-6, 6);
      px[c] = Math.max(0, Math.min(255, Math.round(v)));
    }
    return px;
  });
}

async function throughSharp(img: PixelImage, edit: (s: Sharp) => Sharp): Promise<PixelImage> {
  const { data, info } = await edit(sharp(img.rgb, { raw: { width: img.width, height: img.height, channels: 3 } }))
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { rgb: new Uint8Array(data), width: info.width, height: info.height };
}

function naiveHamming(a: Hash64, b: Hash64): number {
  let d = 0;
  for (let i = 0; i < 64; i++) d += hashBit(a, i) !== hashBit(b, i) ? 1 : 0;
  return d;
}

describe('hash representation', () => {
  it('puts bit 0 in the most significant position and prints 16 hex characters', () => {
    const bits = new Array<number>(64).fill(0);
    bits[0] = 1;
    expect(hashToHex(bitsToHash(bits))).toBe('8000000000000000');
    bits[0] = 0;
    bits[63] = 1;
    expect(hashToHex(bitsToHash(bits))).toBe('0000000000000001');
    bits[63] = 0;
    // bits 4..7 of each row of the 8×8 grid: packbits of [0,0,0,0,1,1,1,1] is 0x0f per row.
    for (let r = 0; r < 8; r++) for (let c = 4; c < 8; c++) bits[r * 8 + c] = 1;
    expect(hashToHex(bitsToHash(bits))).toBe('0f0f0f0f0f0f0f0f');
  });

  it('round-trips hex and rejects anything but 16 hex characters', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 50; i++) {
      const h = { hi: rng.nextU32(), lo: rng.nextU32() };
      const back = hexToHash(hashToHex(h));
      expect(back).toEqual(h);
      expect(BigInt('0x' + hashToHex(h))).toBe((BigInt(h.hi) << 32n) | BigInt(h.lo));
    }
    expect(() => hexToHash('abc')).toThrow(/16 hex/);
    expect(() => hexToHash('zz00000000000000')).toThrow(/16 hex/);
  });

  it('Hamming distance by popcount matches a bit-by-bit count', () => {
    const rng = new Rng(4);
    for (let i = 0; i < 200; i++) {
      const a = { hi: rng.nextU32(), lo: rng.nextU32() };
      const b = i % 2 ? { hi: rng.nextU32(), lo: rng.nextU32() } : { hi: (a.hi ^ (1 << (i % 32))) >>> 0, lo: a.lo };
      expect(hammingDistance(a, b)).toBe(naiveHamming(a, b));
    }
    expect(hammingDistance({ hi: 0, lo: 0 }, { hi: 0xffffffff, lo: 0xffffffff })).toBe(64);
  });
});

describe('Pillow-compatible preprocessing', () => {
  it('luma is ITU-R 601-2 rounded to nearest (16-bit fixed-point weights)', () => {
    expect(Array.from(rgbToLuma8(Uint8Array.of(255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255), 4))).toEqual([76, 150, 29, 255]);
    const rng = new Rng(5);
    const rgb = Uint8Array.from({ length: 3000 }, () => rng.nextU32() & 255);
    const luma = rgbToLuma8(rgb, 1000);
    for (let p = 0; p < 1000; p++) {
      const exact = (rgb[3 * p]! * 299 + rgb[3 * p + 1]! * 587 + rgb[3 * p + 2]! * 114) / 1000;
      // Rounding (0.5) plus the fixed-point weights' error (≤ 255 · Σ|w − w₁₆| < 0.003).
      expect(Math.abs(luma[p]! - exact)).toBeLessThanOrEqual(0.503);
    }
  });

  it('Lanczos resize matches a direct floating-point Lanczos-3 with antialiasing to within one grey level', () => {
    const rng = new Rng(6);
    const [w, h, ow, oh] = [57, 41, 16, 9];
    const src = Uint8Array.from({ length: w * h }, (_, i) => Math.round(127 + 100 * Math.sin(i * 0.37) * Math.cos(i * 0.011)) + (rng.nextU32() % 5));
    const out = resizeLanczos8(src, w, h, 1, ow, oh);
    const lanczos = (x: number) => (x === 0 ? 1 : Math.abs(x) >= 3 ? 0 : (3 * Math.sin(Math.PI * x) * Math.sin((Math.PI * x) / 3)) / (Math.PI * Math.PI * x * x));
    // Weights of output o over all inputs i: filter centred at (o + 0.5)·scale, stretched by the scale.
    const weights = (inSize: number, outSize: number, o: number) => {
      const scale = inSize / outSize;
      const ws = Array.from({ length: inSize }, (_, i) => lanczos((i + 0.5 - (o + 0.5) * scale) / Math.max(scale, 1)));
      const sum = ws.reduce((a, b) => a + b, 0);
      return ws.map((v) => v / sum);
    };
    let worst = 0;
    for (let oy = 0; oy < oh; oy++) {
      const wy = weights(h, oh, oy);
      for (let ox = 0; ox < ow; ox++) {
        const wx = weights(w, ow, ox);
        let v = 0;
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) v += wy[y]! * wx[x]! * src[y * w + x]!;
        worst = Math.max(worst, Math.abs(out[oy * ow + ox]! - Math.min(255, Math.max(0, v))));
      }
    }
    expect(worst).toBeLessThanOrEqual(1);
  });

  it("matches Pillow's Image.resize(LANCZOS) and convert('L') byte for byte (Pillow fixture)", () => {
    const pil = JSON.parse(readFileSync(new URL('./fixtures/curate/pil_resize_ref.json', import.meta.url), 'utf8')) as {
      cases: { width: number; height: number; rgb: string; outputs: { width: number; height: number; rgb: string; grey: string }[] }[];
    };
    let compared = 0;
    for (const c of pil.cases) {
      const src = Uint8Array.from(Buffer.from(c.rgb, 'hex'));
      for (const o of c.outputs) {
        const rgb = resizeLanczos8(src, c.width, c.height, 3, o.width, o.height);
        expect(Buffer.from(rgb).toString('hex'), `${c.width}x${c.height} -> ${o.width}x${o.height}`).toBe(o.rgb);
        expect(Buffer.from(rgbToLuma8(rgb, o.width * o.height)).toString('hex')).toBe(o.grey);
        compared++;
      }
    }
    expect(compared).toBe(11);
  });

  it('keeps a flat image flat, filters RGB channels independently and skips an axis whose size is unchanged', () => {
    const flat = new Uint8Array(40 * 30 * 3).fill(77);
    expect(new Set(resizeLanczos8(flat, 40, 30, 3, 7, 5))).toEqual(new Set([77]));
    const rng = new Rng(7);
    const rgb = Uint8Array.from({ length: 20 * 12 * 3 }, () => rng.nextU32() & 255);
    const both = resizeLanczos8(rgb, 20, 12, 3, 6, 5);
    for (let c = 0; c < 3; c++) {
      const plane = rgb.filter((_, i) => i % 3 === c);
      const alone = resizeLanczos8(plane, 20, 12, 1, 6, 5);
      expect(Array.from(both.filter((_, i) => i % 3 === c))).toEqual(Array.from(alone));
    }
    const rows = resizeLanczos8(rgb, 20, 12, 3, 20, 5);
    const grey = rgb.filter((_, i) => i % 3 === 0);
    // Width unchanged: each column is filtered on its own, so column 0 depends on column 0 only.
    const col0 = resizeLanczos8(Uint8Array.from({ length: 12 }, (_, y) => grey[y * 20]!), 1, 12, 1, 1, 5);
    expect(Array.from({ length: 5 }, (_, y) => rows[y * 60]!)).toEqual(Array.from(col0));
  });
});

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'curate-hash-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});
async function writeTemp(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(scratch, name);
  await writeFile(path, bytes);
  return path;
}

describe('pHash', () => {
  it('DCT block equals the direct double-sum DCT-II (scipy norm=None scaling)', () => {
    const rng = new Rng(8);
    const x = Float64Array.from({ length: 1024 }, () => rng.nextU32() & 255);
    const got = dctLowBlock(x);
    for (let k = 0; k < 8; k++) {
      for (let l = 0; l < 8; l++) {
        let s = 0;
        for (let i = 0; i < 32; i++) {
          for (let j = 0; j < 32; j++) s += x[i * 32 + j]! * Math.cos((Math.PI * k * (2 * i + 1)) / 64) * Math.cos((Math.PI * l * (2 * j + 1)) / 64);
        }
        expect(got[k * 8 + l]).toBeCloseTo(4 * s, 6);
      }
    }
  });

  it('matches scipy.fftpack coefficients and imagededup thresholding on reference arrays', () => {
    for (const c of ref.phash) {
      const block = dctLowBlock(c.grey);
      for (let i = 0; i < 64; i++) expect(Math.abs(block[i]! - c.dct8x8[i]!)).toBeLessThan(1e-6 * (1 + Math.abs(c.dct8x8[i]!)));
      expect(hashToHex(phashFromGrey32(c.grey)), c.name).toBe(c.hex);
    }
  });

  it('thresholds at the median of the 63 AC coefficients, with >=', () => {
    const rng = new Rng(9);
    const grey = Float64Array.from({ length: 1024 }, () => rng.nextU32() & 255);
    const block = Array.from(dctLowBlock(grey));
    const ac = block.slice(1).sort((a, b) => a - b);
    const med = ac[31]!;
    const h = phashFromGrey32(grey);
    for (let i = 0; i < 64; i++) expect(hashBit(h, i)).toBe(block[i]! >= med ? 1 : 0);
    // Exactly 32 of the 63 AC coefficients are >= their median when there are no ties; DC (positive) adds one.
    let ones = 0;
    for (let i = 0; i < 64; i++) ones += hashBit(h, i);
    expect(ones).toBe(33);
  });

  it('survives JPEG q90, halving and a 2% crop within Hamming 10; different images are far apart', async () => {
    const base = naturalish(11);
    const h0 = phash(base);
    const jpegBytes = await sharp(base.rgb, { raw: { width: base.width, height: base.height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const jpeg = await decodeForHash(await writeTemp('q90.jpg', jpegBytes));
    const half = await throughSharp(base, (s) => s.resize(base.width / 2, base.height / 2, { kernel: 'lanczos3' }));
    const dx = Math.round(base.width * 0.01);
    const dy = Math.round(base.height * 0.01);
    const crop = await throughSharp(base, (s) => s.extract({ left: dx, top: dy, width: base.width - 2 * dx, height: base.height - 2 * dy }));
    const dJpeg = hammingDistance(h0, phash(jpeg));
    const dHalf = hammingDistance(h0, phash(half));
    const dCrop = hammingDistance(h0, phash(crop));
    expect(dJpeg).toBeLessThanOrEqual(10);
    expect(dHalf).toBeLessThanOrEqual(10);
    expect(dCrop).toBeLessThanOrEqual(10);
    for (const seed of [12, 13, 14, 15]) expect(hammingDistance(h0, phash(naturalish(seed)))).toBeGreaterThan(10);
  });
});

describe('dHash, aHash, wHash', () => {
  it('dHash of horizontal gradients: rising rows give 1 bits, falling rows 0 bits', () => {
    // 9×8 is already the target size, so the hash sees these pixels unchanged.
    const img = image(9, 8, (x, y) => {
      const v = y % 2 === 0 ? 20 + 25 * x : 230 - 25 * x;
      return [v, v, v];
    });
    expect(hashToHex(dhash(img))).toBe('ff00ff00ff00ff00');
    const flat = image(9, 8, () => [90, 90, 90]);
    expect(hashToHex(dhash(flat))).toBe('0000000000000000');
  });

  it('aHash of a half-black, half-white image', () => {
    const leftBlack = image(64, 64, (x) => (x < 32 ? [0, 0, 0] : [255, 255, 255]));
    expect(hashToHex(ahash(leftBlack))).toBe('0f0f0f0f0f0f0f0f');
    const topBlack = image(48, 40, (_, y) => (y < 20 ? [0, 0, 0] : [255, 255, 255]));
    expect(hashToHex(ahash(topBlack))).toBe('00000000ffffffff');
    // A flat image equals its mean everywhere, and >= makes every bit 1.
    expect(hashToHex(ahash(image(8, 8, () => [40, 40, 40])))).toBe('ffffffffffffffff');
  });

  it('wHash equals a Haar-pyramid LL median threshold (numpy reference)', () => {
    for (const c of ref.whash) expect(hashToHex(whashFromGrey(c.grey, c.side)), c.name).toBe(c.hex);
  });

  it('wHash of quadrants at the default 256 scale and at a chosen scale', () => {
    const img = image(128, 96, (x, y) => ((x < 64) !== (y < 48) ? [250, 250, 250] : [10, 10, 10]));
    expect(hashToHex(whash(img))).toBe('0f0f0f0ff0f0f0f0');
    expect(hashToHex(whash(img, { imageScale: 32 }))).toBe('0f0f0f0ff0f0f0f0');
    expect(() => whash(img, { imageScale: 48 })).toThrow(/power of two/);
  });
});

describe('exact pixel hash and files', () => {
  const dir = () => scratch;

  it('depends on pixels and shape, not on the container', async () => {
    const img = naturalish(21, 64, 48);
    const png = join(dir(), 'a.png');
    const webp = join(dir(), 'a.webp');
    await sharp(img.rgb, { raw: { width: 64, height: 48, channels: 3 } }).png().toFile(png);
    await sharp(img.rgb, { raw: { width: 64, height: 48, channels: 3 } }).webp({ lossless: true }).toFile(webp);
    const [a, b] = [await hashFile(png, ['phash', 'dhash']), await hashFile(webp, ['phash', 'dhash'])];
    expect(a.exact).toBe(exactPixelHash(img));
    expect(b.exact).toBe(a.exact);
    expect(a.hashes).toEqual(b.hashes);
    expect(a.hashes.phash).toBe(hashToHex(phash(img)));
    const changed = { ...img, rgb: img.rgb.slice() };
    changed.rgb[100] ^= 1;
    expect(exactPixelHash(changed)).not.toBe(a.exact);
    const transposedShape = { rgb: img.rgb, width: 48, height: 64 };
    expect(exactPixelHash(transposedShape)).not.toBe(a.exact);
  });

  it('applies EXIF orientation before hashing', async () => {
    const img = naturalish(22, 64, 32);
    const stored = join(dir(), 'rot.jpg');
    // Orientation 6 = display rotated 90° clockwise; the decoder must hand back a 32×64 image.
    await sharp(img.rgb, { raw: { width: 64, height: 32, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(stored);
    const upright = join(dir(), 'upright.jpg');
    await sharp(img.rgb, { raw: { width: 64, height: 32, channels: 3 } }).rotate(90).jpeg({ quality: 95 }).toFile(upright);
    const decoded = await decodeForHash(stored);
    expect([decoded.width, decoded.height]).toEqual([32, 64]);
    const [a, b] = [await hashFile(stored), await hashFile(upright)];
    expect(hammingDistance(hexToHash(a.hashes.phash!), hexToHash(b.hashes.phash!))).toBeLessThanOrEqual(2);
  });
});
