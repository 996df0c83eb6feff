import type { Argv, CommandModule } from 'yargs';
import { loadRecipe, parseRecipe } from '../../config/recipe.js';
import { mergeShards } from '../../curate/merge.js';
import { interruptOnSignals } from '../../curate/interrupt.js';
import { runCurate } from '../../curate/pipeline.js';
import { resolveShard, shardOutputDir } from '../../curate/scan.js';
import { CurateRecipeSchema, OUTPUT_FORMATS, RESIZE_MODES, type CurateConfig } from '../../curate/schema.js';
import { UsageError } from '../../util/errors.js';
import { previewAugCommand } from './preview_aug.js';

interface CurateArgs {
  inputs?: string[];
  recipe?: string;
  set?: string[];
  out?: string;
  size?: number;
  mode?: string;
  format?: string;
  'image-format'?: string;
  quality?: number;
  threshold?: number;
  trigger?: string;
  concurrency?: number;
  'shard-index'?: number;
  'num-shards'?: number;
}

interface MergeArgs {
  shards: string[];
  out: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(out[k]) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  return out;
}

/** The recipe (if any) with the flags laid over it, validated as a whole. */
export function curateConfigFromArgs(args: CurateArgs): CurateConfig {
  const base = args.recipe ? (parseRecipe(CurateRecipeSchema, loadRecipe(args.recipe, { sets: args.set ?? [] })) as Record<string, unknown>) : {};
  if (!args.recipe && args.set?.length) throw new UsageError('--set changes a recipe; pass --recipe too (or use the flags)');
  const flags: Record<string, Record<string, unknown>> = { input: {}, resize: {}, output: {}, dedup: {}, captions: {} };
  if (args.inputs?.length) flags.input!.paths = args.inputs;
  if (args.size !== undefined) flags.resize!.size = args.size;
  if (args.mode !== undefined) flags.resize!.mode = args.mode;
  if (args.format !== undefined) flags.output!.format = args.format;
  if (args['image-format'] !== undefined) flags.output!.image_format = args['image-format'];
  if (args.quality !== undefined) flags.output!.quality = args.quality;
  if (args.out !== undefined) flags.output!.dir = args.out;
  if (args.threshold !== undefined) flags.dedup!.threshold = args.threshold;
  if (args.trigger !== undefined) flags.captions!.trigger = args.trigger;
  const merged = deepMerge(base, { ...flags, ...(args.concurrency !== undefined ? { concurrency: args.concurrency } : {}) });
  if (!isObject(merged.input) || !Array.isArray(merged.input.paths)) {
    throw new UsageError('curate needs input folders: `scaleforge curate IN... --out DIR` or a recipe with input.paths');
  }
  const parsed = CurateRecipeSchema.safeParse(merged);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.') || '(config)'}: ${i.message}`);
    throw new UsageError(`invalid curate settings:\n${lines.join('\n')}`);
  }
  if (!parsed.data.output.dir) throw new UsageError('curate needs an output folder: --out DIR (or output.dir in the recipe)');
  return parsed.data;
}

const mergeCommand: CommandModule<object, MergeArgs> = {
  command: 'merge <shards..>',
  describe: 'Merge sharded curate outputs: global dedup across shards, one manifest, one output',
  builder: (y) =>
    y
      .positional('shards', { type: 'string', array: true, demandOption: true, describe: 'shard output folders' })
      .option('out', { type: 'string', demandOption: true, describe: 'merged output folder' }) as unknown as Argv<MergeArgs>,
  handler: async (args) => {
    await mergeShards(args.shards, args.out, { log: (l) => process.stdout.write(`${l}\n`) });
  },
};

export const curateCommand: CommandModule<object, CurateArgs> = {
  command: 'curate [inputs..]',
  describe: 'Curate an image dataset: decode, dedup, filter, resize, caption, package (folder or WebDataset)',
  builder: (y) =>
    (y
      .command(mergeCommand)
      .command(previewAugCommand)
      .positional('inputs', { type: 'string', array: true, describe: 'image folders or files (override input.paths)' })
      .option('recipe', { type: 'string', describe: 'curate recipe file or name in recipes/ (e.g. curate)' })
      .option('set', { type: 'string', array: true, describe: 'override a recipe value: --set resize.size=256 (repeatable)' })
      .option('out', { type: 'string', describe: 'output folder (a shard writes into shard-IIIII-of-NNNNN/ inside it)' })
      .option('size', { type: 'number', describe: 'output side in pixels' })
      .option('mode', { type: 'string', choices: [...RESIZE_MODES], describe: 'resize mode (img2dataset names)' })
      .option('format', { type: 'string', choices: ['folder', 'webdataset'], describe: 'output layout' })
      .option('image-format', { type: 'string', choices: [...OUTPUT_FORMATS], describe: 'encoded image format' })
      .option('quality', { type: 'number', describe: 'jpg/webp quality 1..100' })
      .option('threshold', { type: 'number', describe: 'near-duplicate Hamming distance threshold (0..64)' })
      .option('trigger', { type: 'string', describe: 'token put first in every caption' })
      .option('concurrency', { type: 'number', describe: 'parallel images (default: CPU cores)' })
      .option('shard-index', { type: 'number', describe: 'this shard (default: JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX)' })
      .option('num-shards', { type: 'number', describe: 'split the input into this many shards by a hash of each relative path' })
      .example('$0 curate photos/ --out data/photos-512 --size 512 --mode border', 'flag form')
      .example('$0 curate --recipe curate', 'recipe form (recipes/curate.yaml)')
      .example('$0 curate merge out/shard-* --out data/merged', 'merge shard outputs')) as unknown as Argv<CurateArgs>,
  handler: async (args) => {
    const cfg = curateConfigFromArgs(args);
    const shard = resolveShard({ shardIndex: args['shard-index'], numShards: args['num-shards'] });
    const outDir = shardOutputDir(cfg.output.dir!, shard);
    const interrupt = interruptOnSignals('curate');
    let result;
    try {
      result = await runCurate(cfg, { outDir, shard, log: (l) => process.stdout.write(`${l}\n`), stopSignal: interrupt.signal });
    } finally {
      interrupt.dispose();
    }
    if (interrupt.received) {
      const { inShard, analysed, reused } = result.counts;
      process.stderr.write(
        `curate: interrupted by ${interrupt.received} with ${analysed + reused} of ${inShard} files analysed` +
          `${result.statePath ? ` (saved in ${result.statePath})` : ''}${result.complete ? '; the output is complete' : ''}.\n` +
          `To continue, run the same command again: files already analysed are not decoded again.\n`,
      );
      process.exitCode = interrupt.exitCode;
      return;
    }
    process.exitCode = result.complete ? 0 : 1;
  },
};
