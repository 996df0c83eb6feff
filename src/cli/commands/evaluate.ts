import fs from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { initBackend } from '../../backend/select.js';
import { loadRecipe, parseRecipe } from '../../config/recipe.js';
import { resolveShard } from '../../curate/scan.js';
import { readFolderCaptions } from '../../data/image_folder.js';
import { writeFileAtomic } from '../../io/atomic.js';
import '../../eval/evaluate_extractors.js';
import { createExtractor, extractFolder, type FeatureExtractor, type ResizeMode } from '../../eval/evaluate_features.js';
import { FeatureCache } from '../../eval/feature_cache.js';
import { fromFeatureSet, loadEvalInput, mergeFeatureFiles, writeFeatureFile, type EvalInput } from '../../eval/evaluate_inputs.js';
import { DEFAULT_IS, DEFAULT_KID, computeClipScore, computeFid, computeIs, computeKid, type MetricValues } from '../../eval/evaluate_metrics.js';
import { writeReport } from '../../eval/report.js';
import { evaluateRecipeSchema, evaluateRun } from '../../jobs/evaluate/index.js';
import { UsageError } from '../../util/errors.js';

/**
 * `scaleforge evaluate`: metrics of image folders, statistics and feature files (fid, kid, is,
 * clip-score), feature extraction with sharding (features, merge), and whole runs (--run, --recipe).
 */

interface CommonArgs {
  model?: string;
  resize: string;
  weights?: string;
  'batch-size': number;
  'no-cache'?: boolean;
  cache?: boolean;
  'cache-dir'?: string;
  limit?: number;
  json: boolean;
  out?: string;
  backend?: string;
}

interface PairArgs extends CommonArgs {
  a: string;
  b: string;
  'kid-subsets': number;
  'kid-subset-size': number;
}

interface OneArgs extends CommonArgs {
  a: string;
  'is-splits': number;
}

interface FeaturesArgs extends CommonArgs {
  images: string;
  'shard-index'?: number;
  'num-shards'?: number;
}

interface MergeArgs {
  parts: string[];
  out: string;
}

interface RunArgs {
  recipe?: string;
  run?: string;
  set?: string[];
  out?: string;
  json: boolean;
}

function common<T>(y: Argv<T>, defaultModel: string): Argv<T> {
  return y
    .option('model', { type: 'string', default: defaultModel, describe: 'feature network: inception-fid, clip (= clip-vit-b32), clip-vit-l14' })
    .option('resize', { type: 'string', choices: ['clean', 'legacy'], default: 'clean', describe: "resize to 299: clean-fid's PIL bicubic (clean) or pytorch-fid's bilinear (legacy)" })
    .option('weights', { type: 'string', describe: 'weights file/folder instead of the weights cache' })
    .option('batch-size', { type: 'number', default: 32 })
    .option('cache', { type: 'boolean', default: true, describe: 'reuse features of images seen before (--no-cache to recompute)' })
    .option('cache-dir', { type: 'string', describe: `feature cache (default ${FeatureCache.defaultRoot()})` })
    .option('limit', { type: 'number', describe: 'use only the first N images of each folder (sorted by path)' })
    .option('json', { type: 'boolean', default: false, describe: 'print the results as JSON' })
    .option('out', { type: 'string', describe: 'also write metrics.json and report.html into this folder' })
    .option('backend', { type: 'string', describe: 'tfjs backend (default auto)' }) as Argv<T>;
}

/** Lazily created once per command: folders need it, .npz inputs do not. */
function extractorFor(args: CommonArgs): () => Promise<FeatureExtractor> {
  let made: Promise<FeatureExtractor> | undefined;
  return () => {
    made ??= (async () => {
      await initBackend(args.backend ?? process.env.SCALEFORGE_BACKEND);
      return createExtractor(args.model ?? 'inception-fid', { resize: args.resize as ResizeMode, ...(args.weights ? { weightsPath: args.weights } : {}) });
    })();
    return made;
  };
}

function extractOptions(args: CommonArgs, extractor?: FeatureExtractor) {
  const cacheOff = args.cache === false;
  return {
    batchSize: args['batch-size'],
    ...(args.limit !== undefined ? { limit: args.limit } : {}),
    ...(cacheOff ? { cache: null } : extractor ? { cache: new FeatureCache(args['cache-dir'] ?? FeatureCache.defaultRoot(), extractor.cacheKey, extractor.featureDim, extractor.logitDim) } : {}),
  };
}

async function loadSide(p: string, args: CommonArgs, getExtractor: () => Promise<FeatureExtractor>): Promise<EvalInput> {
  const isDir = fs.existsSync(p) && fs.statSync(p).isDirectory();
  const ex = isDir ? await getExtractor() : undefined;
  return loadEvalInput(p, ex ? async () => ex : undefined, extractOptions(args, ex));
}

async function emit(args: CommonArgs, values: MetricValues, settings: Record<string, string | number | boolean>, inputs: EvalInput[], warnings: string[]): Promise<void> {
  const skipped = inputs.flatMap((i) => (i.features?.skipped ?? []).map((s) => ({ file: path.join(i.source, s.file), reason: s.reason })));
  const doc = { ...values, settings, warnings, images_skipped: skipped.length, inputs: inputs.map((i) => ({ source: i.source, kind: i.kind, n: i.n ?? null, dim: i.dim })) };
  for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
  for (const s of skipped) process.stderr.write(`skipped ${s.file}: ${s.reason}\n`);
  if (args.json) process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
  else {
    for (const [k, v] of Object.entries(values)) process.stdout.write(`${k}: ${v}\n`);
    for (const [k, v] of Object.entries(settings)) process.stdout.write(`  ${k}: ${v}\n`);
  }
  if (args.out) {
    fs.mkdirSync(args.out, { recursive: true });
    await writeFileAtomic(path.join(args.out, 'metrics.json'), `${JSON.stringify(doc, null, 2)}\n`);
    await writeReport(path.join(args.out, 'report.html'), {
      title: `Evaluation of ${inputs.map((i) => path.basename(i.source)).join(' vs ')}`,
      createdAt: new Date().toISOString(),
      settings,
      checkpoints: [{ label: inputs.map((i) => i.source).join(' vs '), metrics: { ...values }, samples: [], skippedImages: skipped.length }],
      skippedMetrics: [],
      warnings,
      skippedImages: skipped,
    });
  }
}

function settingsOf(inputs: EvalInput[], extra: Record<string, string | number>): Record<string, string | number | boolean> {
  const s: Record<string, string | number | boolean> = { ...extra };
  inputs.forEach((i, k) => {
    s[`input_${k + 1}`] = `${i.source} (${i.kind}${i.n !== undefined ? `, N = ${i.n}` : ''}, ${i.dim}-d)`;
    for (const [key, v] of Object.entries(i.features?.settings ?? {})) s[key] = v;
  });
  return s;
}

const fidCommand: CommandModule<object, PairArgs> = {
  command: 'fid <a> <b>',
  describe: 'Fréchet Inception Distance between two image folders, .npz statistics (mu, sigma) or feature files',
  builder: (y) => common(y.positional('a', { type: 'string', demandOption: true }).positional('b', { type: 'string', demandOption: true }), 'inception-fid') as Argv<PairArgs>,
  handler: async (args) => {
    const ex = extractorFor(args);
    const a = await loadSide(args.a, args, ex);
    const b = await loadSide(args.b, args, ex);
    const r = computeFid(a, b);
    await emit(args, { frechet_inception_distance: r.value }, settingsOf([a, b], { resize: args.resize }), [a, b], r.warnings);
  },
};

const kidCommand: CommandModule<object, PairArgs> = {
  command: 'kid <a> <b>',
  describe: 'Kernel Inception Distance (cubic polynomial kernel, unbiased MMD², mean ± std over subsets)',
  builder: (y) =>
    common(y.positional('a', { type: 'string', demandOption: true }).positional('b', { type: 'string', demandOption: true }), 'inception-fid')
      .option('kid-subsets', { type: 'number', default: DEFAULT_KID.subsets })
      .option('kid-subset-size', { type: 'number', default: DEFAULT_KID.subsetSize }) as Argv<PairArgs>,
  handler: async (args) => {
    const ex = extractorFor(args);
    const a = await loadSide(args.a, args, ex);
    const b = await loadSide(args.b, args, ex);
    const r = computeKid(a, b, { subsets: args['kid-subsets'], subsetSize: args['kid-subset-size'], seed: DEFAULT_KID.seed });
    await emit(
      args,
      { kernel_inception_distance_mean: r.mean, kernel_inception_distance_std: r.std },
      settingsOf([a, b], { resize: args.resize, kid_subsets: args['kid-subsets'], kid_subset_size: args['kid-subset-size'] }),
      [a, b],
      [],
    );
  },
};

const isCommand: CommandModule<object, OneArgs> = {
  command: 'is <a>',
  describe: 'Inception Score of an image folder or a feature file with logits (10 splits, mean ± std)',
  builder: (y) => common(y.positional('a', { type: 'string', demandOption: true }), 'inception-fid').option('is-splits', { type: 'number', default: DEFAULT_IS.splits }) as Argv<OneArgs>,
  handler: async (args) => {
    const a = await loadSide(args.a, args, extractorFor(args));
    const r = computeIs(a, { splits: args['is-splits'], seed: DEFAULT_IS.seed });
    await emit(args, { inception_score_mean: r.mean, inception_score_std: r.std }, settingsOf([a], { resize: args.resize, is_splits: args['is-splits'] }), [a], []);
  },
};

const clipScoreCommand: CommandModule<object, OneArgs> = {
  command: 'clip-score <a>',
  describe: 'CLIP-score of images against their captions (sidecar .txt or metadata.jsonl): mean max(100·cos, 0)',
  builder: (y) => common(y.positional('a', { type: 'string', demandOption: true, describe: 'image folder with captions' }), 'clip-vit-b32') as Argv<OneArgs>,
  handler: async (args) => {
    const ex = await extractorFor(args)();
    if (!ex.encodeTexts) throw new UsageError(`--model ${ex.name} has no text tower; CLIP-score needs a CLIP model`);
    const set = await extractFolder(args.a, ex, extractOptions(args, ex));
    const { captions, skipped } = await readFolderCaptions(args.a, set.files);
    const keep = set.files.map((f, i) => [f, i] as const).filter(([f]) => captions.has(f));
    if (!keep.length) throw new UsageError(`${args.a}: no image has a caption (expected IMAGE.txt sidecars or a metadata.jsonl with file_name/text)`);
    const d = set.featureDim;
    const img = new Float32Array(keep.length * d);
    keep.forEach(([, i], k) => img.set(set.features.subarray(i * d, (i + 1) * d), k * d));
    const s = await computeClipScore(ex, img, keep.map(([f]) => captions.get(f)!));
    const noCaption = set.files.length - keep.length;
    const warnings = noCaption ? [`${noCaption} image(s) without a caption were left out`] : [];
    for (const sk of skipped) warnings.push(`${sk.path}: ${sk.reason}`);
    const input = fromFeatureSet(set);
    await emit(args, { clip_score: s.clip_score, clip_score_hessel: s.clip_score_hessel }, settingsOf([input], { clip_model: s.model, convention: 'clip_score: torchmetrics, max(mean 100·cos, 0); clip_score_hessel: Hessel et al., mean 2.5·max(cos, 0), "A photo depicts " prefix' }), [input], warnings);
  },
};

const featuresCommand: CommandModule<object, FeaturesArgs> = {
  command: 'features <images>',
  describe: 'Compute and save features (+ logits, float64 sums, mu/sigma) of an image folder; shardable',
  builder: (y) =>
    common(y.positional('images', { type: 'string', demandOption: true }), 'inception-fid')
      .option('shard-index', { type: 'number', describe: 'this shard (default: JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX)' })
      .option('num-shards', { type: 'number', describe: 'split the images by a hash of each relative path' })
      .demandOption('out') as Argv<FeaturesArgs>,
  handler: async (args) => {
    const shard = resolveShard({ shardIndex: args['shard-index'], numShards: args['num-shards'] });
    const ex = await extractorFor(args)();
    const set = await extractFolder(args.images, ex, { ...extractOptions(args, ex), shard });
    const input = fromFeatureSet(set);
    await writeFeatureFile(args.out!, set, input.stats!, { shard: `${shard.index}/${shard.count}` });
    process.stdout.write(`${args.out}: ${set.n} images (${set.cached} cached, ${set.computed} computed, ${set.skipped.length} skipped), ${set.featureDim}-d${set.logitDim ? ` + ${set.logitDim} logits` : ''}\n`);
  },
};

const mergeCommand: CommandModule<object, MergeArgs> = {
  command: 'merge <parts..>',
  describe: 'Merge shard feature files: sums and sums of outer products added in float64',
  builder: (y) =>
    y.positional('parts', { type: 'string', array: true, demandOption: true }).option('out', { type: 'string', demandOption: true }) as unknown as Argv<MergeArgs>,
  handler: async (args) => {
    const r = await mergeFeatureFiles(args.parts, args.out);
    process.stdout.write(`${args.out}: ${r.n} images from ${args.parts.length} shard(s), ${r.dim}-d\n`);
  },
};

export const evaluateCommand: CommandModule<object, RunArgs> = {
  command: 'evaluate',
  describe: 'Evaluate images or a run: FID, KID, Inception Score, CLIP-score, caption fidelity, report.html',
  builder: (y) =>
    y
      .command(fidCommand)
      .command(kidCommand)
      .command(isCommand)
      .command(clipScoreCommand)
      .command(featuresCommand)
      .command(mergeCommand)
      .option('recipe', { type: 'string', describe: 'an evaluate recipe (e.g. evaluate = recipes/evaluate.yaml)' })
      .option('run', { type: 'string', describe: 'the run folder to evaluate (overrides the recipe; default: the newest default NSP run)' })
      .option('set', { type: 'string', array: true, describe: 'override a recipe value: --set samples_per_checkpoint=64' })
      .option('out', { type: 'string', describe: 'report folder (default <run>/eval-<timestamp>)' })
      .option('json', { type: 'boolean', default: false, describe: 'print metrics.json to stdout' })
      .example('$0 evaluate fid real/ generated/', 'FID of two folders (weights: scaleforge weights fetch inception-fid)')
      .example('$0 evaluate fid generated/ stats/cifar10_clean_train_32.npz', 'against clean-fid/pytorch-fid statistics')
      .example('$0 evaluate --run checkpoints/nsp-progressive-20261124-101500', 'every checkpoint of a run, report.html') as Argv<RunArgs>,
  handler: async (args) => {
    if (!args.recipe && !args.run) throw new UsageError('evaluate: name a sub-command (fid, kid, is, clip-score, features, merge) or pass --run RUN / --recipe evaluate');
    const loaded = loadRecipe(args.recipe ?? 'evaluate', { sets: args.set ?? [] });
    const cfg = parseRecipe(evaluateRecipeSchema, loaded);
    const r = await evaluateRun(cfg, { log: (l) => process.stderr.write(`${l}\n`), ...(args.run ? { run: args.run } : {}), ...(args.out ? { out: args.out } : {}) });
    if (args.json) process.stdout.write(fs.readFileSync(path.join(r.outDir, 'metrics.json'), 'utf8'));
    else process.stdout.write(`report: ${path.join(r.outDir, 'report.html')}\n`);
  },
};
