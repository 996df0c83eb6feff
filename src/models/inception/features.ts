import { tf } from '../../backend/tf.js';
import { resizeForInception, type FidResizeMode, type RgbImageData } from '../../eval/resize.js';
import type { FidInceptionV3, InceptionInputScaling } from './model.js';

/**
 * Images → FID features: each image resized to 299×299 ('clean' PIL-bicubic by default, or pytorch-fid's
 * 'legacy' bilinear), batched through the FID Inception. Returns pool3 features (FID, KID, precision/recall)
 * and the unbiased logits (Inception Score), row-major, one row per image in input order.
 */
export interface InceptionFeatures {
  n: number;
  /** pool3 width (2048 for the real network). */
  dim: number;
  pool3: Float32Array;
  classes: number;
  logitsUnbiased: Float32Array;
  resize: FidResizeMode;
}

export interface InceptionFeatureOptions {
  resize?: FidResizeMode;
  batchSize?: number;
  /** Input size (299 for FID). */
  size?: number;
  scaling?: InceptionInputScaling;
  /** Called after each batch with the number of images done. */
  onBatch?: (done: number) => void;
}

export function inceptionFeatures(model: FidInceptionV3, images: readonly RgbImageData[], opts: InceptionFeatureOptions = {}): InceptionFeatures {
  const resize = opts.resize ?? 'clean';
  const batchSize = opts.batchSize ?? 16;
  const size = opts.size ?? 299;
  const dim = model.featureDim;
  const classes = model.config.numClasses;
  const pool3 = new Float32Array(images.length * dim);
  const logitsUnbiased = new Float32Array(images.length * classes);
  for (let start = 0; start < images.length; start += batchSize) {
    const chunk = images.slice(start, start + batchSize);
    const flat = new Float32Array(chunk.length * size * size * 3);
    chunk.forEach((img, i) => flat.set(resizeForInception(img, resize, size), i * size * size * 3));
    const input = tf.tensor4d(flat, [chunk.length, size, size, 3]);
    const out = model.forward(input, opts.scaling);
    pool3.set(out.pool3.dataSync() as Float32Array, start * dim);
    logitsUnbiased.set(out.logitsUnbiased.dataSync() as Float32Array, start * classes);
    tf.dispose([input, out.pool3, out.logits, out.logitsUnbiased]);
    opts.onBatch?.(start + chunk.length);
  }
  return { n: images.length, dim, pool3, classes, logitsUnbiased, resize };
}
