import { tf } from '../../backend/tf.js';
import { UsageError } from '../../util/errors.js';
import type { ClipTextModel } from '../text/clip_text_model.js';
import type { ClipTokenizer } from '../text/clip_tokenizer.js';
import { loadClipTextFromHfFolder } from '../text/hf_folder.js';
import { type ClipVisionModel, loadClipVisionFromHfFolder } from './vision_model.js';

/**
 * A full CLIP model (HF CLIPModel) from a local folder: config.json (a CLIPConfig with text_config and
 * vision_config), model.safetensors and the tokenizer files. Both towers must have projections of the same
 * width; embeddings come back L2-normalised, so a dot product is the cosine similarity.
 */

export class ClipModel {
  readonly projectionDim: number;
  readonly imageSize: number;

  constructor(
    readonly text: ClipTextModel,
    readonly vision: ClipVisionModel,
    readonly tokenizer: ClipTokenizer,
    readonly path: string,
  ) {
    const t = text.config.projectionDim;
    const v = vision.config.projectionDim;
    if (t === null || v === null) throw new UsageError(`${path}: a CLIP model needs text_projection.weight and visual_projection.weight`);
    if (t !== v) throw new UsageError(`${path}: text projection width ${t} differs from the visual projection width ${v}`);
    this.projectionDim = t;
    this.imageSize = vision.config.imageSize;
    text.freeze();
    vision.freeze();
  }

  /** pixels: preprocessed images, each imageSize×imageSize×3 HWC (clipPreprocess). Returns unit vectors. */
  encodeImages(pixels: readonly Float32Array[], batchSize = 16): Float32Array[] {
    const n = this.imageSize;
    const out: Float32Array[] = [];
    for (let start = 0; start < pixels.length; start += batchSize) {
      const chunk = pixels.slice(start, start + batchSize);
      const flat = new Float32Array(chunk.length * n * n * 3);
      chunk.forEach((p, i) => {
        if (p.length !== n * n * 3) throw new UsageError(`${this.path}: image ${start + i} has ${p.length} values, expected ${n}×${n}×3`);
        flat.set(p, i * n * n * 3);
      });
      const embeds = tf.tidy(() => {
        const res = this.vision.forward(tf.tensor4d(flat, [chunk.length, n, n, 3]));
        return l2Normalise(res.imageEmbeds!);
      });
      out.push(...rows(embeds));
    }
    return out;
  }

  /** Captions are truncated to the text tower's context (at most 77 tokens). Returns unit vectors. */
  encodeTexts(texts: readonly string[], batchSize = 64): Float32Array[] {
    const length = Math.min(77, this.text.config.maxPositionEmbeddings);
    const out: Float32Array[] = [];
    for (let start = 0; start < texts.length; start += batchSize) {
      const chunk = texts.slice(start, start + batchSize);
      const batch = this.tokenizer.call([...chunk], { contextLength: length, pad: 'eot' });
      const embeds = tf.tidy(() => {
        const res = this.text.forward(tf.tensor2d(batch.ids, [batch.batch, batch.length], 'int32'));
        return l2Normalise(res.textEmbeds!);
      });
      out.push(...rows(embeds));
    }
    return out;
  }

  dispose(): void {
    this.text.dispose();
    this.vision.dispose();
  }
}

function l2Normalise(x: tf.Tensor2D): tf.Tensor2D {
  return x.div(x.norm('euclidean', -1, true).maximum(1e-12));
}

function rows(t: tf.Tensor2D): Float32Array[] {
  const [b, d] = t.shape;
  const data = t.dataSync() as Float32Array;
  t.dispose();
  return Array.from({ length: b }, (_, i) => data.slice(i * d, (i + 1) * d));
}

/** Cosine similarity of two vectors (need not be unit length). */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosineSimilarity: lengths ${a.length} and ${b.length} differ`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return dot / Math.max(Math.sqrt(na * nb), 1e-24);
}

export function loadClipModel(dir: string): ClipModel {
  const { model: text, tokenizer } = loadClipTextFromHfFolder(dir);
  let vision: ClipVisionModel;
  try {
    vision = loadClipVisionFromHfFolder(dir).model;
  } catch (e) {
    text.dispose();
    throw e;
  }
  if (tokenizer.vocabSize > text.config.vocabSize) {
    text.dispose();
    vision.dispose();
    throw new UsageError(`${dir}: tokenizer has ${tokenizer.vocabSize} tokens but the text model's vocab_size is ${text.config.vocabSize}`);
  }
  try {
    return new ClipModel(text, vision, tokenizer, dir);
  } catch (e) {
    text.dispose();
    vision.dispose();
    throw e;
  }
}
