import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { cosineSimilarity, loadClipModel } from '../src/models/clip/clip_model.js';
import { CLIP_MEAN, CLIP_STD, clipCropOrigin, clipPreprocess, clipResizeCrop, clipResizeSize } from '../src/models/clip/preprocess.js';
import { disposeClipVisionOutput, loadClipVisionFromHfFolder } from '../src/models/clip/vision_model.js';

// Reference numbers: scripts/fixtures/clip_vision_ref.py (HF CLIPModel forward written out in torch, float64).
const MODEL = fileURLToPath(new URL('./fixtures/clip/tiny-clip-vision/clip/', import.meta.url));
type Flat = { shape: number[]; data: number[] };
const ref = JSON.parse(readFileSync(new URL('./fixtures/clip/tiny-clip-vision/ref.json', import.meta.url), 'utf8')) as Record<string, Flat> & {
  captions: string[];
  caption_ids: number[][];
};

const tmpRoots: string[] = [];
afterAll(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

function expectClose(got: ArrayLike<number>, want: Flat, atol = 1e-5): void {
  expect(got.length).toBe(want.data.length);
  let worst = 0;
  for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want.data[i]!));
  expect(worst).toBeLessThan(atol);
}

function refPixelsNhwc(): tf.Tensor4D {
  const p = ref.pixel_values_nchw;
  return tf.tidy(() => tf.tensor4d(p.data, p.shape as [number, number, number, number]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
}

describe('CLIP vision tower vs the HF reference forward', () => {
  it('loads from a full CLIPModel folder and matches last_hidden_state, pooled and image_embeds', () => {
    const { model, config } = loadClipVisionFromHfFolder(MODEL);
    expect(config).toMatchObject({ hiddenSize: 32, numHiddenLayers: 2, imageSize: 32, patchSize: 8, projectionDim: 16 });
    const names = [...model.stateDict().keys()];
    expect(names).toContain('vision_model.pre_layrnorm.weight');
    expect(names).toContain('vision_model.embeddings.class_embedding');
    expect(names).not.toContain('vision_model.embeddings.position_ids');
    const pixels = refPixelsNhwc();
    const out = model.forward(pixels);
    expect(out.lastHiddenState.shape).toEqual(ref.last_hidden_state.shape);
    expectClose(out.lastHiddenState.dataSync(), ref.last_hidden_state);
    expectClose(out.pooled.dataSync(), ref.pooled);
    expectClose(out.imageEmbeds!.dataSync(), ref.image_embeds);
    disposeClipVisionOutput(out);
    pixels.dispose();
    model.dispose();
  });

  it('reads a CLIPVisionConfig at the top level, and names a tensor whose shape the config contradicts', () => {
    const full = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')) as { vision_config: Record<string, unknown>; projection_dim: number };
    const dir = mkdtempSync(join(tmpdir(), 'clip-vision-'));
    tmpRoots.push(dir);
    copyFileSync(join(MODEL, 'model.safetensors'), join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...full.vision_config, projection_dim: full.projection_dim }));
    const { model } = loadClipVisionFromHfFolder(dir);
    const out = model.forward(refPixelsNhwc());
    expectClose(out.imageEmbeds!.dataSync(), ref.image_embeds);
    disposeClipVisionOutput(out);
    model.dispose();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...full.vision_config, intermediate_size: 48, projection_dim: 16 }));
    expect(() => loadClipVisionFromHfFolder(dir)).toThrow(/tensor vision_model\.encoder\.layers\.0\.mlp\.fc1\.\w+ has shape \[64\S*\] but the config implies \[48/);
  });

  it('rejects pixels of the wrong size, naming the expected NHWC shape', () => {
    const { model } = loadClipVisionFromHfFolder(MODEL);
    expect(() => model.forward(tf.zeros([1, 3, 32, 32]))).toThrow(/\[batch, 32, 32, 3\] \(NHWC\)/);
    model.dispose();
  });
});

describe('full CLIP model', () => {
  const clip = loadClipModel(MODEL);
  afterAll(() => clip.dispose());

  it('tokenises captions as the reference BPE does, and matches text_embeds after normalisation', () => {
    ref.captions.forEach((c, i) => expect(clip.tokenizer.encode(c)).toEqual(ref.caption_ids[i]));
    const got = clip.encodeTexts(ref.captions);
    const d = ref.text_embeds.shape[1]!;
    got.forEach((v, i) => {
      const raw = ref.text_embeds.data.slice(i * d, (i + 1) * d);
      const norm = Math.hypot(...raw);
      expectClose(v, { shape: [d], data: raw.map((x) => x / norm) });
    });
  });

  it('image–caption cosine similarities match the reference', () => {
    const p = ref.pixel_values_nchw;
    const [b, c, h, w] = p.shape as [number, number, number, number];
    const hwc = Array.from({ length: b }, (_, i) => {
      const img = new Float32Array(h * w * c);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) img[(y * w + x) * c + ch] = p.data[((i * c + ch) * h + y) * w + x]!;
      return img;
    });
    const images = clip.encodeImages(hwc, 1);
    const texts = clip.encodeTexts(ref.captions);
    const sims = images.flatMap((im) => texts.map((t) => cosineSimilarity(im, t)));
    expectClose(sims, ref.cosine);
    images.forEach((v) => expect(Math.hypot(...v)).toBeCloseTo(1, 5));
  });
});

describe('CLIP preprocessing', () => {
  it('resizes the shorter side to the target and crops the centre', () => {
    expect(clipResizeSize(640, 480, 224)).toEqual({ width: Math.floor((224 * 640) / 480), height: 224 });
    expect(clipResizeSize(100, 300, 224)).toEqual({ width: 224, height: 672 });
    expect(clipResizeSize(50, 50, 224)).toEqual({ width: 224, height: 224 });
    expect(clipCropOrigin(298, 224, 224)).toEqual({ left: 37, top: 0 });
    expect(clipCropOrigin(224, 672, 224)).toEqual({ left: 0, top: 224 });
  });

  it('keeps the centre of a wide image: left and right thirds (different colours) are cut away', async () => {
    // 96×32: red | green | blue thirds; the shorter side is already 32, so no resampling, only the crop.
    const w = 96;
    const h = 32;
    const rgb = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rgb[(y * w + x) * 3 + Math.floor(x / 32)] = 255;
    const crop = await clipResizeCrop({ rgb, width: w, height: h }, 32);
    expect(crop.length).toBe(32 * 32 * 3);
    for (let i = 0; i < 32 * 32; i++) expect([crop[3 * i], crop[3 * i + 1], crop[3 * i + 2]]).toEqual([0, 255, 0]);
  });

  it('normalises with the OpenAI mean and std (a flat grey image, decoded from PNG, shrunk 64 → 32)', async () => {
    const png = await sharp({ create: { width: 64, height: 80, channels: 3, background: { r: 200, g: 100, b: 50 } } }).png().toBuffer();
    const px = await clipPreprocess(new Uint8Array(png), 32);
    expect(px.length).toBe(32 * 32 * 3);
    const want = [200, 100, 50].map((v, c) => (v / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!);
    for (let i = 0; i < 32 * 32; i++) for (let c = 0; c < 3; c++) expect(px[3 * i + c]).toBeCloseTo(want[c]!, 5);
    expect(want[0]).toBeCloseTo((200 / 255 - 0.48145466) / 0.26862954, 10);
  });
});
