import { type Dataset } from '../../data/dataset.js';
import { ImageFolderDataset, type ImageFolderMeta } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { reportImageFolder } from '../../train/datasets.js';
import { UsageError } from '../../util/errors.js';
import type { JobContext } from '../registry.js';
import { latentSourceFor, type LatentTrainingSource } from '../nsp/latent.js';
import { pixelSource, type TrainingSource } from '../nsp/data.js';
import type { DitRecipe } from './schema.js';

/**
 * The DiT job's data: captioned images (procedural or a folder), served as pixels in [-1, 1] or as
 * VAE latents cached once per dataset (the NSP job's latent cache), with class labels taken from
 * the first folder level (torchvision ImageFolder: sorted subfolder names) for class conditioning.
 */
export async function loadDitDataset(r: DitRecipe, latentFactor: number | null, log: (l: string) => void): Promise<Dataset> {
  if (r.data.source === 'procedural') {
    const size = r.space === 'latent' ? r.data.procedural.size : (r.model.input_size ?? r.data.procedural.size);
    if (size !== r.data.procedural.size) log(`data.procedural.size ${r.data.procedural.size} → ${size} to match model.input_size`);
    return ProceduralDataset.create({ size, count: r.data.procedural.count, seed: r.data.procedural.seed });
  }
  if (!r.data.folder) throw new UsageError('data.folder: required when data.source is "folder"');
  const size = r.data.image_size ?? (r.model.input_size !== undefined ? r.model.input_size * (latentFactor ?? 1) : undefined);
  if (size === undefined) throw new UsageError('data.image_size (or model.input_size): the side images are resized to');
  const ds = await ImageFolderDataset.load({ root: r.data.folder, size, allowUpscale: r.data.allow_upscale });
  reportImageFolder(ds, r.data.folder, log);
  return ds;
}

/** The training source in the space the recipe generates in. */
export async function ditSourceFor(r: DitRecipe, dataset: Dataset, ctx: JobContext, vaePath?: string): Promise<TrainingSource & { latent: LatentTrainingSource | null }> {
  if (r.space === 'pixel') {
    if (dataset.width !== dataset.height) throw new UsageError(`data: DiT needs square images, got ${dataset.width}×${dataset.height}`);
    return Object.assign(pixelSource(dataset), { latent: null });
  }
  const latentSize = r.model.input_size;
  const latent = await latentSourceFor(
    { vae: r.vae, backend: r.backend, data: r.data, model: { sizes: [latentSize ?? dataset.width / 8] } },
    dataset,
    ctx,
    vaePath ? { vaePath } : {},
  );
  return Object.assign(latent, { latent });
}

/** Class names (sorted first-level subfolders) and each dataset item's class index. */
export function folderClasses(dataset: Dataset): { names: string[]; labels: Int32Array } {
  if (!(dataset instanceof ImageFolderDataset)) throw new UsageError('class conditioning needs an image folder with one subfolder per class (data.source: folder)');
  const dirs: string[] = [];
  for (let i = 0; i < dataset.length; i++) {
    const file = (dataset.get(i).meta as ImageFolderMeta).file;
    const slash = file.indexOf('/');
    if (slash < 0) throw new UsageError(`class conditioning: ${file} is not inside a class subfolder of ${dataset.root}`);
    dirs.push(file.slice(0, slash));
  }
  const names = [...new Set(dirs)].sort();
  const index = new Map(names.map((n, i) => [n, i]));
  return { names, labels: Int32Array.from(dirs, (d) => index.get(d)!) };
}
