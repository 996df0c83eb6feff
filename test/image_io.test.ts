import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { makeGrid, readImageRgb8, saveGridPng, savePng, tensorToRgb8, type RgbImage } from '../src/io/image.js';

const dir = await mkdtemp(join(tmpdir(), 'sf-image-io-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

function solid(w: number, h: number, c: [number, number, number]): RgbImage {
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) rgb.set(c, 3 * i);
  return { rgb, width: w, height: h };
}

function px(im: RgbImage, x: number, y: number): number[] {
  const i = 3 * (y * im.width + x);
  return [im.rgb[i]!, im.rgb[i + 1]!, im.rgb[i + 2]!];
}

describe('tensorToRgb8', () => {
  it('maps [-1,1] and [0,1] to bytes, clipping and rounding to nearest', async () => {
    // -1→0, 0→127.5→128, 1→255, 2 clipped to 255, -0.5→63.75→64
    const t = tf.tensor3d([-1, 0, 1, 2, -0.5, -3], [1, 2, 3]);
    const a = await tensorToRgb8(t);
    expect(a.width).toBe(2);
    expect(a.height).toBe(1);
    expect([...a.rgb]).toEqual([0, 128, 255, 255, 64, 0]);
    const u = await tensorToRgb8(tf.tensor3d([0, 0.5, 1, 0.2, 0.1, 1.5], [1, 2, 3]), { range: 'unit' });
    // 0.2*255 = 51, 0.1*255 = 25.5 → 26 (round half up)
    expect([...u.rgb]).toEqual([0, 128, 255, 51, 26, 255]);
    t.dispose();
  });

  it('splits a batch into images in order', async () => {
    const t = tf.tensor4d([-1, -1, -1, 1, 1, 1], [2, 1, 1, 3]);
    const ims = await tensorToRgb8(t);
    expect(ims.map((im) => [...im.rgb])).toEqual([[0, 0, 0], [255, 255, 255]]);
    t.dispose();
  });

  it('rejects tensors that are not RGB', async () => {
    await expect(tensorToRgb8(tf.zeros([2, 2, 4]) as tf.Tensor3D)).rejects.toThrow(/\[H,W,3\]/);
  });
});

describe('PNG', () => {
  it('round-trips exactly through sharp decode and leaves no temp files', async () => {
    const w = 5;
    const h = 3;
    const rgb = new Uint8Array(w * h * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 37 + 11) % 256;
    const path = join(dir, 'sub', 'a.png');
    await savePng(path, rgb, w, h);
    const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([w, h, 3]);
    expect([...data]).toEqual([...rgb]);
    const back = await readImageRgb8(path);
    expect([...back.rgb]).toEqual([...rgb]);
    expect(await readdir(join(dir, 'sub'))).toEqual(['a.png']);
  });

  it('refuses a buffer whose length does not match the size', async () => {
    await expect(savePng(join(dir, 'bad.png'), new Uint8Array(10), 2, 2)).rejects.toThrow(/expected 2x2x3 = 12/);
  });
});

describe('makeGrid', () => {
  it('places scaled cells with padding (hand-worked layout)', async () => {
    // Two 2×1 images, nearest ×2 → 4×2 cells; cols=1 → 2 rows; pad 1.
    // Width = 1 + 1·(4+1) = 6, height = 1 + 2·(2+1) = 7. Cell k starts at (1, 1 + 3k).
    const a: RgbImage = { rgb: new Uint8Array([10, 20, 30, 40, 50, 60]), width: 2, height: 1 };
    const b = solid(2, 1, [200, 100, 0]);
    const g = await makeGrid([a, b], { cols: 1, pad: 1, scale: 2, padColor: [7, 8, 9] });
    expect([g.width, g.height]).toEqual([6, 7]);
    expect(px(g, 0, 0)).toEqual([7, 8, 9]);
    expect(px(g, 1, 1)).toEqual([10, 20, 30]);
    expect(px(g, 2, 2)).toEqual([10, 20, 30]);
    expect(px(g, 3, 1)).toEqual([40, 50, 60]);
    expect(px(g, 4, 2)).toEqual([40, 50, 60]);
    expect(px(g, 5, 1)).toEqual([7, 8, 9]);
    expect(px(g, 1, 3)).toEqual([7, 8, 9]);
    expect(px(g, 1, 4)).toEqual([200, 100, 0]);
    expect(px(g, 4, 5)).toEqual([200, 100, 0]);
    expect(px(g, 4, 6)).toEqual([7, 8, 9]);
  });

  it('leaves the short last row padded and draws labels below cells', async () => {
    const ims = [solid(16, 16, [255, 0, 0]), solid(16, 16, [0, 255, 0]), solid(16, 16, [0, 0, 255])];
    const g = await makeGrid(ims, { cols: 2, pad: 0, scale: 4, labels: ['red', 'green', 'blue'], labelHeight: 14 });
    expect([g.width, g.height]).toEqual([128, 2 * (64 + 14)]);
    expect(px(g, 63, 63)).toEqual([255, 0, 0]);
    expect(px(g, 64, 0)).toEqual([0, 255, 0]);
    expect(px(g, 0, 78)).toEqual([0, 0, 255]);
    expect(px(g, 100, 100)).toEqual([255, 255, 255]);
    // The label strip under the first cell has dark text pixels; the empty slot has none.
    let dark = 0;
    for (let y = 64; y < 78; y++) for (let x = 0; x < 64; x++) if (px(g, x, y)[0]! < 128) dark++;
    expect(dark).toBeGreaterThan(5);
  });

  it('writes the grid PNG', async () => {
    const path = join(dir, 'grid.png');
    const g = await saveGridPng(path, [solid(3, 3, [1, 2, 3]), solid(3, 3, [4, 5, 6])], { cols: 2, pad: 1 });
    const back = await readImageRgb8(path);
    expect([back.width, back.height]).toEqual([9, 5]);
    expect([...back.rgb]).toEqual([...g.rgb]);
  });
});
