import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cosineSimilarity, loadClipModel, type ClipModel } from '../models/clip/clip_model.js';
import { clipPreprocess } from '../models/clip/preprocess.js';
import { applyFilters, type FilterRejection } from './filters.js';
import type { ManifestRow } from './manifest.js';
import type { CurateConfig } from './schema.js';

/**
 * The optional CLIP-similarity filters of a curation run, decided over all images at once:
 * - clip_caption_similarity: the cosine similarity of an image and its caption is below min_caption_similarity
 *   (images without a caption are not judged);
 * - clip_centroid_outlier: the image's similarity to the normalised mean embedding of the images lies more than
 *   max_centroid_zscore population standard deviations below the mean similarity.
 *
 * Only images that pass decoding, captions and the pixel filters are embedded and make up the centroid, so an
 * image already rejected cannot pull it. Images are embedded from the run's cached resized output (the original
 * pixels are not kept), so a 'border' resize's padding is part of what CLIP sees. Embeddings are cached per file
 * hash in `.curate/clip-<fingerprint>.jsonl`, so re-runs and threshold changes embed only new images.
 */

export const CLIP_CAPTION_FILTER = 'clip_caption_similarity';
export const CLIP_CENTROID_FILTER = 'clip_centroid_outlier';

export interface ClipFilterOptions {
  outDir: string;
  cachedPath: (row: ManifestRow) => string;
  log?: (line: string) => void;
  /** A model already loaded (tests, repeated runs); otherwise cfg.filters.clip.model is loaded and disposed. */
  model?: ClipModel;
}

export interface ClipCentroidScore {
  similarity: number;
  /** (mean − similarity) / std: positive when the image is less like the centroid than is typical. */
  zscore: number;
}

/** Similarity of each unit vector to the normalised mean, and its z-score; z is 0 for all when the spread is 0. */
export function centroidScores(embeddings: readonly Float32Array[]): ClipCentroidScore[] {
  if (embeddings.length === 0) return [];
  const d = embeddings[0]!.length;
  const centroid = new Float64Array(d);
  for (const e of embeddings) for (let i = 0; i < d; i++) centroid[i]! += e[i]!;
  const sims = embeddings.map((e) => cosineSimilarity(e, centroid));
  const mean = sims.reduce((a, b) => a + b, 0) / sims.length;
  const std = Math.sqrt(sims.reduce((a, s) => a + (s - mean) ** 2, 0) / sims.length);
  return sims.map((s) => ({ similarity: s, zscore: std > 1e-12 ? (mean - s) / std : 0 }));
}

/** Identifies the model files and everything that changes what an image embedding is. */
function embeddingFingerprint(modelDir: string, cfg: CurateConfig): string {
  const files = ['config.json', 'model.safetensors', 'model.safetensors.index.json'].map((f) => {
    const p = join(modelDir, f);
    if (!existsSync(p)) return null;
    const st = statSync(p);
    return [f, st.size, st.mtimeMs, f === 'config.json' ? readFileSync(p, 'utf8') : ''];
  });
  const relevant = { model: resolve(modelDir), files, resize: cfg.resize, decode: cfg.decode, image_format: cfg.output.image_format, quality: cfg.output.quality };
  return createHash('sha256').update(JSON.stringify(relevant)).digest('hex').slice(0, 12);
}

function readEmbeddingCache(path: string, dim: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  if (!existsSync(path)) return out;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    try {
      const rec = JSON.parse(line) as { sha256?: unknown; embedding?: unknown };
      if (typeof rec.sha256 !== 'string' || typeof rec.embedding !== 'string') continue;
      const bytes = Buffer.from(rec.embedding, 'base64');
      if (bytes.byteLength !== dim * 4) continue;
      out.set(rec.sha256, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
    } catch {
      // A torn last line from an interrupted run: that image is embedded again.
    }
  }
  return out;
}

/** Rejections by source id; an empty map when cfg.filters.clip is not set (no model is loaded then). */
export async function clipFilterRejections(rows: readonly ManifestRow[], cfg: CurateConfig, opts: ClipFilterOptions): Promise<Map<string, FilterRejection[]>> {
  const out = new Map<string, FilterRejection[]>();
  const clipCfg = cfg.filters.clip;
  if (!clipCfg || (clipCfg.min_caption_similarity === undefined && clipCfg.max_centroid_zscore === undefined)) return out;
  const candidates = rows.filter((r) => {
    const a = r.analysis;
    if (!a.ok || r.captionError || (cfg.captions.missing === 'reject' && r.captionSource === 'none')) return false;
    return applyFilters(a.quality, a.width, a.height, cfg.filters).length === 0;
  });
  if (candidates.length === 0) return out;

  const model = opts.model ?? loadClipModel(clipCfg.model);
  try {
    const cachePath = join(opts.outDir, '.curate', `clip-${embeddingFingerprint(clipCfg.model, cfg)}.jsonl`);
    const cache = readEmbeddingCache(cachePath, model.projectionDim);
    const todo = [...new Map(candidates.filter((r) => !cache.has(r.sha256)).map((r) => [r.sha256, r])).values()];
    for (let start = 0; start < todo.length; start += clipCfg.batch_size) {
      const chunk = todo.slice(start, start + clipCfg.batch_size);
      const pixels = await Promise.all(chunk.map(async (r) => clipPreprocess(new Uint8Array(await readFile(opts.cachedPath(r))), model.imageSize)));
      const embeds = model.encodeImages(pixels, clipCfg.batch_size);
      chunk.forEach((r, i) => {
        cache.set(r.sha256, embeds[i]!);
        const bytes = Buffer.from(embeds[i]!.buffer, embeds[i]!.byteOffset, embeds[i]!.byteLength);
        appendFileSync(cachePath, `${JSON.stringify({ sha256: r.sha256, embedding: bytes.toString('base64') })}\n`);
      });
    }
    opts.log?.(`curate: CLIP filter on ${candidates.length} images (${todo.length} embedded, ${candidates.length - todo.length} from cache)`);
    const images = candidates.map((r) => cache.get(r.sha256)!);
    const add = (source: string, rejection: FilterRejection) => out.set(source, [...(out.get(source) ?? []), rejection]);

    if (clipCfg.min_caption_similarity !== undefined) {
      const min = clipCfg.min_caption_similarity;
      const captioned = candidates.map((r, i) => ({ r, i })).filter(({ r }) => r.caption.trim() !== '');
      const texts = model.encodeTexts(captioned.map(({ r }) => r.caption));
      captioned.forEach(({ r, i }, k) => {
        const sim = cosineSimilarity(images[i]!, texts[k]!);
        if (sim < min) add(r.source, { filter: CLIP_CAPTION_FILTER, reason: `CLIP image–caption similarity ${sim.toFixed(4)} < min_caption_similarity ${min}` });
      });
    }
    if (clipCfg.max_centroid_zscore !== undefined) {
      const max = clipCfg.max_centroid_zscore;
      centroidScores(images).forEach((s, i) => {
        if (s.zscore > max) {
          add(candidates[i]!.source, {
            filter: CLIP_CENTROID_FILTER,
            reason: `CLIP similarity to the centroid ${s.similarity.toFixed(4)} is ${s.zscore.toFixed(2)} standard deviations below the mean (max_centroid_zscore ${max})`,
          });
        }
      });
    }
    return out;
  } finally {
    if (!opts.model) model.dispose();
  }
}
