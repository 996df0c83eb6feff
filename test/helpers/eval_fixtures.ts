import fs from 'node:fs';
import path from 'node:path';
import type { RgbImage } from '../../src/data/dataset.js';
import { ProceduralDataset } from '../../src/data/procedural.js';
import { savePng } from '../../src/io/image.js';
import type { ExtractorSpec, FeatureExtractor } from '../../src/eval/evaluate_features.js';

/**
 * A stand-in feature network for pipeline tests: 6 features (per-channel mean and standard deviation
 * of the pixels in [0, 1]) and 4 logits, computed independently again by `pixelFeatures` in the tests.
 */
export function pixelFeatures(img: RgbImage): { features: number[]; logits: number[] } {
  const n = img.width * img.height;
  const mean = [0, 0, 0];
  const sq = [0, 0, 0];
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const v = img.rgb[i * 3 + c]! / 255;
      mean[c]! += v;
      sq[c]! += v * v;
    }
  }
  const m = mean.map((s) => s / n);
  const sd = sq.map((s, c) => Math.sqrt(Math.max(0, s / n - m[c]! * m[c]!)));
  return { features: [...m, ...sd], logits: [m[0]! * 4, m[1]! * 4, m[2]! * 4, sd[0]! * 4] };
}

export const pixelStatsSpec = (weightsId: string, calls: { images: number }): ExtractorSpec => ({
  weightsId,
  describe: 'test pixel statistics',
  create: async ({ weights, resize }): Promise<FeatureExtractor> => ({
    name: 'pixel-stats',
    cacheKey: `pixel-stats|${weights.sha256}|${resize}`,
    featureDim: 6,
    logitDim: 4,
    settings: { network: 'pixel-stats', weights_sha256: weights.sha256, resize },
    extract: async (images) => {
      calls.images += images.length;
      const features = new Float32Array(images.length * 6);
      const logits = new Float32Array(images.length * 4);
      images.forEach((img, i) => {
        const r = pixelFeatures(img);
        features.set(r.features, i * 6);
        logits.set(r.logits, i * 4);
      });
      return { features, logits };
    },
    dispose: () => undefined,
  }),
});

/** `count` procedural PNGs (size px) named 000.png…, each with a sidecar caption; returns their paths. */
export async function writeProceduralFolder(dir: string, count: number, seed: number, size = 16, start = 0): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const ds = await ProceduralDataset.create({ size, count: start + count, seed, cacheDir: null });
  const files: string[] = [];
  for (let i = start; i < start + count; i++) {
    const s = ds.get(i);
    const f = path.join(dir, `${String(i).padStart(3, '0')}.png`);
    await savePng(f, s.image, size, size);
    fs.writeFileSync(f.replace(/\.png$/, '.txt'), s.caption);
    files.push(f);
  }
  return files;
}
