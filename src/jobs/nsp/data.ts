import { tf } from '../../backend/tf.js';
import { BatchSampler } from '../../data/batch.js';
import { Dataset } from '../../data/dataset.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { reportImageFolder } from '../../train/datasets.js';
import { UsageError } from '../../util/errors.js';
import type { Decoder } from './sampling.js';
import type { NspRecipe } from './schema.js';

/** The recipe's images at the finest model size (pixel space) or at the size the VAE will encode (latent space). */
export async function loadNspDataset(r: NspRecipe, log: (l: string) => void): Promise<Dataset> {
  const finest = r.model.sizes[r.model.sizes.length - 1]!;
  const imageSize = r.space === 'latent' ? undefined : finest;
  if (r.data.source === 'procedural') {
    const size = imageSize ?? r.data.procedural.size;
    if (imageSize !== undefined && r.data.procedural.size !== imageSize) {
      log(`data.procedural.size ${r.data.procedural.size} → ${imageSize} to match model.sizes`);
    }
    return ProceduralDataset.create({ size, count: r.data.procedural.count, seed: r.data.procedural.seed });
  }
  if (!r.data.folder) throw new UsageError('data.folder: required when data.source is "folder"');
  const ds = await ImageFolderDataset.load({ root: r.data.folder, size: imageSize ?? finest * 8, allowUpscale: r.data.allow_upscale });
  reportImageFolder(ds, r.data.folder, log);
  return ds;
}

/**
 * What the NSP trainer draws batches from, in the space it generates: RGB pixels in [-1, 1], or
 * VAE latents (already multiplied by the VAE's scaling factor). `decode` maps generated tensors back
 * to RGB for samples and the fidelity check.
 */
export interface TrainingSource {
  readonly channels: number;
  readonly size: number;
  readonly length: number;
  captions(): string[];
  /** A batch in the generated space, with the dataset index of every sample. */
  nextBatch(sampler: BatchSampler, n: number): { x: tf.Tensor4D; captions: string[]; indices: number[] };
  readonly decode: Decoder | null;
  /** The dataset the sampler indexes. */
  readonly dataset: Dataset;
}

export function pixelSource(dataset: Dataset): TrainingSource {
  if (dataset.width !== dataset.height) throw new Error(`NSP needs square images, dataset is ${dataset.width}×${dataset.height}`);
  let captionCache: string[] | null = null;
  return {
    channels: 3,
    size: dataset.width,
    length: dataset.length,
    dataset,
    decode: null,
    captions() {
      captionCache ??= Array.from({ length: dataset.length }, (_, i) => dataset.get(i).caption);
      return captionCache;
    },
    nextBatch(sampler, n) {
      const b = sampler.nextBatch(n);
      return { x: b.images, captions: b.captions, indices: b.indices };
    },
  };
}

/** Latents cached once per dataset item ([S, S, C] each), with the dataset's captions. */
export function latentSource(dataset: Dataset, latents: Float32Array[], size: number, channels: number, decode: Decoder): TrainingSource {
  const per = size * size * channels;
  latents.forEach((l, i) => {
    if (l.length !== per) throw new Error(`latent ${i} has ${l.length} values, expected ${size}×${size}×${channels}`);
  });
  const caps = Array.from({ length: dataset.length }, (_, i) => dataset.get(i).caption);
  return {
    channels,
    size,
    length: dataset.length,
    dataset,
    decode,
    captions: () => caps,
    nextBatch(sampler, n) {
      const items = sampler.nextItems(n);
      const data = new Float32Array(items.length * per);
      items.forEach(({ index }, b) => data.set(latents[index]!, b * per));
      return {
        x: tf.tensor4d(data, [items.length, size, size, channels]),
        captions: items.map(({ index }) => caps[index]!),
        indices: items.map(({ index }) => index),
      };
    },
  };
}
