import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { tf } from '../../backend/tf.js';
import { openSafetensors } from '../../io/safetensors.js';
import { UsageError } from '../../util/errors.js';
import type { ClipTextModel } from '../text/clip_text_model.js';
import type { ClipTokenizer } from '../text/clip_tokenizer.js';
import { loadClipTextFromHfFolder } from '../text/hf_folder.js';
import { type ClipVisionModel, loadClipVisionFromHfFolder } from './vision_model.js';

/**
 * A full CLIP model (HF CLIPModel) from a local folder: config.json (a CLIPConfig with text_config and
 * vision_config), model.safetensors and the tokenizer files. Both towers must have projections of the same
 * width; embeddings come back L2-normalised, so a dot product is the cosine similarity. `logitScale` is
 * HF's `logit_scale` parameter (log of the temperature; logits_per_image = exp(logit_scale) · cos), and
 * `name` the model's identity for reports (config.json's `_name_or_path`, else the folder name).
 */

export class ClipModel {
  readonly projectionDim: number;
  readonly imageSize: number;

  constructor(
    readonly text: ClipTextModel,
    readonly vision: ClipVisionModel,
    readonly tokenizer: ClipTokenizer,
    readonly path: string,
    /** logit_scale as stored (HF initialises it to ln(1/0.07) = 2.6592); null when the file has none. */
    readonly logitScale: number | null = null,
    readonly name: string = basename(path.replace(/\/+$/, '')),
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

  /** HF CLIPModel's logits_per_image[i][j] = exp(logit_scale) · cos(image i, text j), from unit embeddings. */
  logitsPerImage(imageEmbeds: readonly Float32Array[], textEmbeds: readonly Float32Array[]): number[][] {
    if (this.logitScale === null) throw new UsageError(`${this.path}: the checkpoint has no logit_scale`);
    const scale = Math.exp(this.logitScale);
    return imageEmbeds.map((im) => textEmbeds.map((t) => scale * cosineSimilarity(im, t)));
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
    const meta = readClipIdentity(dir);
    return new ClipModel(text, vision, tokenizer, dir, meta.logitScale, meta.name);
  } catch (e) {
    text.dispose();
    vision.dispose();
    throw e;
  }
}

/** logit_scale from the weights and the model's name from config.json (`_name_or_path`), when present. */
function readClipIdentity(dir: string): { logitScale: number | null; name: string } {
  let name = basename(dir.replace(/\/+$/, ''));
  try {
    const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { _name_or_path?: unknown };
    if (typeof raw._name_or_path === 'string' && raw._name_or_path.length > 0) name = raw._name_or_path;
  } catch {
    // config.json was already validated by the tower loaders; a name is optional.
  }
  const weights = ['model.safetensors', 'model.safetensors.index.json'].map((f) => join(dir, f)).find((p) => existsSync(p));
  if (!weights) return { logitScale: null, name };
  const source = openSafetensors(weights);
  try {
    if (!source.has('logit_scale')) return { logitScale: null, name };
    const t = source.read('logit_scale');
    if (t.data.length !== 1) throw new UsageError(`${weights}: logit_scale has shape [${t.shape}], expected a scalar`);
    return { logitScale: t.data[0]!, name };
  } finally {
    source.close();
  }
}
