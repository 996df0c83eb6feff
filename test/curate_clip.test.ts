import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIP_CAPTION_FILTER, CLIP_CENTROID_FILTER, centroidScores } from '../src/curate/clip_filter.js';
import { runCurate, type CurateResult } from '../src/curate/pipeline.js';
import { curateConfig, type CurateConfig } from '../src/curate/schema.js';
import { loadClipModel } from '../src/models/clip/clip_model.js';
import { clipPreprocess } from '../src/models/clip/preprocess.js';
import { Rng } from '../src/util/rng.js';
import { rawImage, tempDir } from './curate_fixtures.js';

// The tiny random CLIPModel of scripts/fixtures/clip_vision_ref.py (its forward is checked in clip_vision.test.ts).
const MODEL = fileURLToPath(new URL('./fixtures/clip/tiny-clip-vision/clip/', import.meta.url));
const quiet = { write: () => true };
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

let input: string;
const SMOOTH = ['a.png', 'b.png', 'c.png', 'd.png', 'e.png', 'f.png'];
const NOISE = 'z_noise.png';
const CAPTIONS = ['a red square', 'a photo of a green cat', 'blue gradient', 'a striped dog', 'a photo of noise', 'green square', 'a cat'];

beforeAll(async () => {
  input = tempDir('clip-in');
  dirs.push(input);
  // Six slightly brightened copies of one smooth pattern, and one image of per-pixel noise: the odd one out
  // (a random tiny CLIP does not tell unrelated smooth patterns apart from noise, but it does see variants as alike).
  for (const [i, name] of SMOOTH.entries()) await rawImage(64, 64, 100).linear(1, 4 * i).png().toFile(join(input, name));
  const rng = new Rng(7);
  const noise = Buffer.from(Array.from({ length: 64 * 64 * 3 }, () => Math.floor(rng.uniform() * 256)));
  await sharp(noise, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(join(input, NOISE));
  [...SMOOTH, NOISE].forEach((name, i) => writeFileSync(join(input, name.replace('.png', '.txt')), CAPTIONS[i]!));
});

function config(clip?: NonNullable<CurateConfig['filters']['clip']> | Record<string, unknown>): CurateConfig {
  return curateConfig({
    input: { paths: [input] },
    dedup: { near: false },
    resize: { size: 64, mode: 'center_crop' },
    filters: clip ? { clip: clip as never } : {},
    output: { image_format: 'png' },
    concurrency: 2,
  });
}

async function run(cfg: CurateConfig): Promise<{ dir: string; result: CurateResult }> {
  const dir = tempDir('clip-out');
  dirs.push(dir);
  return { dir, result: await runCurate(cfg, { outDir: dir, progressStream: quiet }) };
}

/** Unit image embeddings of the run's cached images and unit caption embeddings, by source. */
async function embeddingsOf(dir: string, result: CurateResult) {
  const clip = loadClipModel(MODEL);
  try {
    const rows = result.rows.filter((r) => r.analysis.ok);
    const pixels = await Promise.all(rows.map(async (r) => clipPreprocess(new Uint8Array(readFileSync(join(dir, (r.analysis as { cached: { path: string } }).cached.path))), clip.imageSize)));
    const images = clip.encodeImages(pixels);
    const texts = clip.encodeTexts(rows.map((r) => r.caption));
    return rows.map((r, i) => ({ source: r.source, image: images[i]!, text: texts[i]! }));
  } finally {
    clip.dispose();
  }
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);

describe('centroid z-scores', () => {
  it('match a hand-worked case: three copies of e1 and one e2', () => {
    // centroid ∝ (3, 1); similarities 3/√10 (×3) and 1/√10; mean √10/4, std √(3/40) → z = −1/√3 and √3.
    const e1 = new Float32Array([1, 0]);
    const s = centroidScores([e1, e1, e1, new Float32Array([0, 1])]);
    expect(s[0]!.similarity).toBeCloseTo(3 / Math.sqrt(10), 6);
    expect(s[3]!.similarity).toBeCloseTo(1 / Math.sqrt(10), 6);
    expect(s[0]!.zscore).toBeCloseTo(-1 / Math.sqrt(3), 6);
    expect(s[3]!.zscore).toBeCloseTo(Math.sqrt(3), 6);
    expect(centroidScores([e1, e1]).map((x) => x.zscore)).toEqual([0, 0]);
  });
});

describe('curate with the CLIP filter', () => {
  it('is skipped entirely when not configured: no model is loaded, no embeddings cached, nothing rejected', async () => {
    const { dir, result } = await run(config());
    expect(result.counts.kept).toBe(7);
    expect(readdirSync(join(dir, '.curate')).filter((f) => f.startsWith('clip-'))).toEqual([]);
  });

  it('flags the centroid outlier and records the reason, agreeing with z-scores computed here', async () => {
    const { dir, result } = await run(config({ model: MODEL, max_centroid_zscore: 1.8 }));
    const emb = await embeddingsOf(dir, result);
    const centroid = emb[0]!.image.map((_, k) => emb.reduce((s, e) => s + e.image[k]!, 0));
    const norm = Math.hypot(...centroid);
    const sims = emb.map((e) => dot(e.image, centroid) / norm);
    const mean = sims.reduce((a, b) => a + b) / sims.length;
    const std = Math.sqrt(sims.reduce((a, s) => a + (s - mean) ** 2, 0) / sims.length);
    const z = new Map(emb.map((e, i) => [e.source, (mean - sims[i]!) / std]));
    const expected = [...z].filter(([, v]) => v > 1.8).map(([s]) => s);
    expect(expected).toEqual([NOISE]);
    const rejected = result.rows.filter((r) => r.decision.status === 'rejected');
    expect(rejected.map((r) => r.source)).toEqual(expected);
    const d = rejected[0]!.decision;
    expect(d.stage).toBe('filter');
    expect(d.filters).toEqual([CLIP_CENTROID_FILTER]);
    expect(d.reasons![0]).toContain(`${z.get(NOISE)!.toFixed(2)} standard deviations below the mean (max_centroid_zscore 1.8)`);
    expect(readdirSync(join(dir, '.curate')).filter((f) => f.startsWith('clip-'))).toHaveLength(1);
  });

  it('rejects images whose caption similarity is below the threshold, and reuses cached embeddings on a re-run', async () => {
    const first = await run(config({ model: MODEL, max_centroid_zscore: 10 }));
    const emb = await embeddingsOf(first.dir, first.result);
    const sims = new Map(emb.map((e) => [e.source, dot(e.image, e.text)]));
    const sorted = [...sims.values()].sort((a, b) => a - b);
    const threshold = (sorted[2]! + sorted[3]!) / 2;
    const logs: string[] = [];
    const again = await runCurate(config({ model: MODEL, min_caption_similarity: threshold }), { outDir: first.dir, progressStream: quiet, log: (l) => logs.push(l) });
    expect(logs.some((l) => l.includes('0 embedded, 7 from cache'))).toBe(true);
    const rejected = again.rows.filter((r) => r.decision.status === 'rejected');
    expect(rejected.map((r) => r.source).sort()).toEqual([...sims].filter(([, s]) => s < threshold).map(([k]) => k).sort());
    expect(rejected).toHaveLength(3);
    for (const r of rejected) {
      expect(r.decision.filters).toEqual([CLIP_CAPTION_FILTER]);
      expect(r.decision.reasons![0]).toBe(`CLIP image–caption similarity ${sims.get(r.source)!.toFixed(4)} < min_caption_similarity ${threshold}`);
    }
  });

  it('names a missing model folder (exit-2 usage error) only when the filter is configured', async () => {
    await expect(run(config({ model: join(input, 'no-such-model'), max_centroid_zscore: 2 }))).rejects.toThrow(/no-such-model/);
    expect(() => config({ model: MODEL, threshold: 2 })).toThrow(/threshold/);
  });
});
