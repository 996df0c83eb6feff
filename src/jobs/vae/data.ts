import { tf } from '../../backend/tf.js';
import { Dataset } from '../../data/dataset.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { reportImageFolder } from '../../train/datasets.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { VaeRecipe } from './schema.js';

/** Fixed images in [-1, 1] (NHWC, host memory) for reconstruction grids and the final PSNR. */
export interface EvalImages {
  data: Float32Array;
  count: number;
  size: number;
}

/** The first `count` images of a dataset as one host array in [-1, 1]. */
export function datasetImages(dataset: Dataset, count: number): EvalImages {
  const n = Math.min(count, dataset.length);
  const size = dataset.width;
  const per = size * size * 3;
  const data = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const img = dataset.get(i).image;
    for (let j = 0; j < per; j++) data[i * per + j] = img[j]! / 127.5 - 1;
  }
  return { data, count: n, size };
}

/** Held-out procedural images: the same generator under another seed, never seen in training. */
export async function heldOutProcedural(p: { size: number; seed: number }, count: number): Promise<EvalImages> {
  const heldOut = await ProceduralDataset.create({ size: p.size, count, seed: (p.seed + 1_000_003) >>> 0 });
  return datasetImages(heldOut, count);
}

/** Training images and the images PSNR is measured on. */
export async function loadVaeData(r: VaeRecipe, log: (l: string) => void): Promise<{ train: Dataset; evalImages: EvalImages; evalNote: string }> {
  if (r.data.source === 'procedural') {
    const p = r.data.procedural;
    const train = await ProceduralDataset.create({ size: p.size, count: p.count, seed: p.seed });
    return { train, evalImages: await heldOutProcedural(p, r.eval.count), evalNote: `${r.eval.count} held-out procedural images` };
  }
  const folder = r.data.folder!;
  const ds = await ImageFolderDataset.load({ root: folder, size: r.data.size, allowUpscale: r.data.allow_upscale, missingCaption: 'empty' });
  reportImageFolder(ds, folder, log);
  if (ds.length === 0) throw new UsageError(`data.folder: ${folder} holds no usable images`);
  const evalImages = datasetImages(ds, r.eval.count);
  return { train: ds, evalImages, evalNote: `the first ${evalImages.count} training images` };
}

/** One random square crop per image (offsets drawn from `rng`), or the batch itself when crop is 0 or the full size. */
export function randomCrops(x: tf.Tensor4D, crop: number, rng: Rng): tf.Tensor4D {
  const [n, h, w] = x.shape;
  if (crop === 0 || (crop === h && crop === w)) return x;
  const parts: tf.Tensor4D[] = [];
  for (let i = 0; i < n; i++) {
    const oy = rng.int(h - crop + 1);
    const ox = rng.int(w - crop + 1);
    parts.push(x.slice([i, oy, ox, 0], [1, crop, crop, x.shape[3]]));
  }
  const out = tf.concat(parts, 0);
  tf.dispose(parts);
  x.dispose();
  return out;
}
