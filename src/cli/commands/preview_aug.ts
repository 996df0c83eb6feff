import type { CommandModule } from 'yargs';
import { loadRecipe } from '../../config/recipe.js';
import { Augmenter, type AugmentedSample, type AugmentInput } from '../../data/augment.js';
import type { Dataset } from '../../data/dataset.js';
import { ImageFolderDataset } from '../../data/image_folder.js';
import { ProceduralDataset } from '../../data/procedural.js';
import { saveGridPng, type RgbImage } from '../../io/image.js';
import '../../jobs/index.js';
import { UsageError } from '../../util/errors.js';

/**
 * Shown when no recipe is given: every stage on, at strengths that make each one visible in a grid. It is a preview
 * setting, not a training recommendation (the hue shift alone would falsify the procedural set's colour captions).
 */
export const PREVIEW_DEFAULT_AUGMENT: AugmentInput = {
  flip: 0.5,
  crop: { scale: [0.35, 1] },
  color_jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1 },
  cutmix: { p: 0.5, alpha: 1 },
};

export interface PreviewAugOptions {
  recipe?: string;
  sets?: readonly string[];
  /** Image folder to preview instead of the recipe's (or the procedural) data. */
  input?: string;
  n?: number;
  seed?: number;
  epoch?: number;
  /** Image side for procedural data and folder images. Default: the recipe's, else 64. */
  size?: number;
  out: string;
}

export interface PreviewAugResult {
  out: string;
  width: number;
  height: number;
  /** Dataset indices shown, in grid order. */
  indices: number[];
  augmented: AugmentedSample[];
  /** Where the augment config came from. */
  configSource: string;
  /** Files of an input folder that could not be used, and why. */
  skipped: { path: string; reason: string }[];
}

interface RecipeDataSection {
  source?: string;
  folder?: string;
  procedural?: { count?: number; size?: number; seed?: number };
  augment?: unknown;
}

/** A trainer's schema embeds `augment:` at the top level or under `data:`; look in both. */
function augmentOfRecipe(config: unknown): { value: unknown; key: string } | null {
  const c = (config ?? {}) as { augment?: unknown; data?: RecipeDataSection };
  if (c.augment !== undefined) return { value: c.augment, key: 'augment' };
  if (c.data?.augment !== undefined) return { value: c.data.augment, key: 'data.augment' };
  return null;
}

export async function previewAugmentations(opts: PreviewAugOptions): Promise<PreviewAugResult> {
  const n = opts.n ?? 16;
  const seed = opts.seed ?? 0;
  const epoch = opts.epoch ?? 0;
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--n: expected an integer in [1, 256], got ${opts.n}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new UsageError(`--seed: expected a uint32, got ${opts.seed}`);
  if (!Number.isInteger(epoch) || epoch < 0) throw new UsageError(`--epoch: expected a non-negative integer, got ${opts.epoch}`);
  if (opts.size !== undefined && (!Number.isInteger(opts.size) || opts.size < 8)) throw new UsageError(`--size: expected an integer ≥ 8, got ${opts.size}`);

  let augmenter: Augmenter;
  let configSource: string;
  let data: RecipeDataSection = {};
  if (opts.recipe) {
    const loaded = loadRecipe(opts.recipe, { sets: opts.sets ?? [] });
    const found = augmentOfRecipe(loaded.config);
    if (!found) {
      throw new UsageError(`recipe ${opts.recipe} (kind '${loaded.kind}') has no 'augment:' section at the top level or under 'data:'`);
    }
    augmenter = Augmenter.fromInput(found.value, `${opts.recipe}: ${found.key}`);
    configSource = `${opts.recipe}: ${found.key}`;
    data = ((loaded.config as { data?: RecipeDataSection }).data ?? {}) as RecipeDataSection;
  } else {
    augmenter = Augmenter.fromInput(PREVIEW_DEFAULT_AUGMENT, 'preview default');
    configSource = 'preview default (every stage on)';
  }

  const size = opts.size ?? data.procedural?.size ?? 64;
  const folder = opts.input ?? (data.source === 'folder' ? data.folder : undefined);
  let dataset: Dataset;
  let skipped: PreviewAugResult['skipped'] = [];
  if (folder) {
    const loaded = await ImageFolderDataset.load({ root: folder, size, missingCaption: 'empty' });
    dataset = loaded;
    skipped = loaded.skipped;
    if (dataset.length === 0) throw new UsageError(`${folder}: no usable images (png, jpg, jpeg, webp at least ${size}px on the shorter side)`);
  } else {
    dataset = await ProceduralDataset.create({
      size,
      count: Math.max(n, data.procedural?.count ?? 2048),
      seed: data.procedural?.seed ?? 0,
      cacheDir: null,
    });
  }

  const shown = Math.min(n, dataset.length);
  const indices = Array.from({ length: shown }, (_, i) => i);
  const cells: RgbImage[] = [];
  const labels: string[] = [];
  const augmented: AugmentedSample[] = [];
  for (const index of indices) {
    const original = dataset.get(index);
    const aug = augmenter.augment(dataset, { seed, epoch, index });
    augmented.push(aug);
    cells.push({ rgb: original.image, width: dataset.width, height: dataset.height });
    labels.push(`#${index}`);
    cells.push({ rgb: aug.image, width: dataset.width, height: dataset.height });
    labels.push(describeAugmentation(aug));
  }
  // Pairs side by side, roughly square overall; small images are upscaled so labels fit under them.
  const pairsPerRow = Math.ceil(Math.sqrt(shown));
  const scale = Math.max(1, Math.ceil(96 / dataset.width));
  const grid = await saveGridPng(opts.out, cells, { cols: 2 * pairsPerRow, scale, labels, pad: 3 });
  return { out: opts.out, width: grid.width, height: grid.height, indices, augmented, configSource, skipped };
}

/** A label short enough to fit under a ~100 px cell: which stages fired, and CutMix's λ. */
export function describeAugmentation(aug: AugmentedSample): string {
  const r = aug.record;
  const parts: string[] = [];
  if (r.crop) parts.push('crop');
  if (r.flipped) parts.push('flip');
  if (r.jitter) parts.push('cj');
  if (r.cutmix) parts.push(`mix${r.cutmix.lambda.toFixed(2).replace(/^0/, '')}`);
  return parts.length > 0 ? parts.join(' ') : 'unchanged';
}

interface PreviewAugArgs {
  recipe?: string;
  set?: string[];
  input?: string;
  n: number;
  seed: number;
  epoch: number;
  size?: number;
  out: string;
}

/** Registered by `curate` as its `preview-aug` sub-command. */
export const previewAugCommand: CommandModule<object, PreviewAugArgs> = {
  command: 'preview-aug',
  describe: 'Write a grid PNG of samples next to their augmented versions',
  builder: (y) =>
    y
      .option('recipe', { type: 'string', describe: "recipe whose 'augment:' section (and data) to preview; default: every stage on" })
      .option('set', { type: 'string', array: true, describe: 'override a recipe value: --set augment.flip=0.5 (repeatable)' })
      .option('input', { type: 'string', describe: 'image folder to use instead of the recipe data / procedural set' })
      .option('n', { type: 'number', default: 16, describe: 'samples to show (each next to its augmented version)' })
      .option('seed', { type: 'number', default: 0, describe: 'augmentation seed (a trainer uses its run seed)' })
      .option('epoch', { type: 'number', default: 0, describe: 'epoch whose augmentations to show' })
      .option('size', { type: 'number', describe: 'image side in pixels (default: the recipe data size, else 64)' })
      .option('out', { type: 'string', demandOption: true, describe: 'grid PNG to write' })
      .example('$0 curate preview-aug --out aug.png', 'procedural samples with every augmentation on')
      .example('$0 curate preview-aug --recipe nsp-progressive --epoch 3 --out aug.png', "a recipe's augmentations in epoch 3"),
  handler: async (args) => {
    const result = await previewAugmentations({
      ...(args.recipe !== undefined ? { recipe: args.recipe } : {}),
      ...(args.set ? { sets: args.set } : {}),
      ...(args.input !== undefined ? { input: args.input } : {}),
      ...(args.size !== undefined ? { size: args.size } : {}),
      n: args.n,
      seed: args.seed,
      epoch: args.epoch,
      out: args.out,
    });
    for (const s of result.skipped) process.stdout.write(`skipped ${s.path}: ${s.reason}\n`);
    process.stdout.write(
      `wrote ${result.out}: ${result.indices.length} samples (original | augmented), ${result.width}x${result.height}, config: ${result.configSource}\n`,
    );
  },
};
