import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { pilResize8, resizeForInception } from '../src/eval/resize.js';
import { hashUniform } from './helpers/hash_values.js';

// Pixels from scripts/fixtures/resize_ref.py: PIL 'F' bicubic per channel (clean-fid 'clean'), torch bilinear
// (pytorch-fid 'legacy'), PIL 8-bit bicubic (HF CLIPImageProcessor's resize).
const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/resize_ref.json', import.meta.url), 'utf8'));

function image(w: number, h: number): Uint8Array {
  return Uint8Array.from(hashUniform(`resize-image-${w}x${h}`, w * h * 3), (u) => Math.floor(u * 256));
}

function maxDiff(got: ArrayLike<number>, want: number[], stride = 1): number {
  let m = 0;
  for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(got[i * stride]! - want[i]!));
  return m;
}

function channelSums(y: ArrayLike<number>): number[] {
  const s = [0, 0, 0];
  for (let i = 0; i < y.length; i++) s[i % 3]! += y[i]!;
  return s;
}

describe.each(ref.cases as { width: number; height: number }[])('resize of a $width×$height image', (c) => {
  const caseRef = (ref.cases as Record<string, any>[]).find((x) => x.width === c.width && x.height === c.height)!;
  const img = { data: image(c.width, c.height), width: c.width, height: c.height };

  it("'clean' equals clean-fid's PIL float bicubic", () => {
    const y = resizeForInception(img, 'clean');
    expect(maxDiff(y, caseRef.clean_299.every101, 101)).toBeLessThan(1e-6);
    channelSums(y).forEach((s, i) => expect(Math.abs(s - caseRef.clean_299.channel_sums[i])).toBeLessThan(1e-3));
  });

  // torch interpolates in float32 (coordinates, weights, sums); this computes in float64 and agrees with
  // torch's float64 run to 3e-8. Against its float32 run the last bits differ by up to 3e-5 on the [0, 1]
  // scale (under 0.01 of a grey level).
  it("'legacy' equals torch bilinear (align_corners=False)", () => {
    const y = resizeForInception(img, 'legacy');
    expect(maxDiff(y, caseRef.legacy_299.every101, 101)).toBeLessThan(3e-5);
    channelSums(y).forEach((s, i) => expect(Math.abs(s - caseRef.legacy_299.channel_sums[i])).toBeLessThan(1e-2));
  });

  it('PIL 8-bit bicubic is bit exact', () => {
    const y = pilResize8(img.data, c.width, c.height, 3, 41, 29, 'bicubic');
    expect([...y]).toEqual(caseRef.pil8_small);
    const big = pilResize8(img.data, c.width, c.height, 3, 224, 180, 'bicubic');
    expect(maxDiff(big, caseRef.pil8_224x180.every101, 101)).toBe(0);
  });
});

describe('non-square targets', () => {
  it('41×29 clean and legacy match whole', async () => {
    const { pilResizeFloat, torchBilinear } = await import('../src/eval/resize.js');
    for (const c of ref.cases as Record<string, any>[]) {
      const data = image(c.width, c.height);
      const clean = new Float32Array(41 * 29 * 3);
      for (let ch = 0; ch < 3; ch++) {
        const plane = Float32Array.from({ length: c.width * c.height }, (_, i) => data[i * 3 + ch]!);
        const r = pilResizeFloat(plane, c.width, c.height, 41, 29);
        for (let i = 0; i < 41 * 29; i++) clean[i * 3 + ch] = Math.min(255, Math.max(0, r[i]!)) / 255;
      }
      expect(maxDiff(clean, c.clean_small)).toBeLessThan(1e-6);
      const legacy = torchBilinear(Float32Array.from(data, (v) => v / 255), c.width, c.height, 3, 41, 29);
      expect(maxDiff(legacy, c.legacy_small)).toBeLessThan(3e-5);
    }
  });

  it('rejects a buffer that does not match its size', () => {
    expect(() => resizeForInception({ data: new Uint8Array(10), width: 2, height: 2 })).toThrow(/10 values do not form a 2×2 RGB image/);
  });
});
