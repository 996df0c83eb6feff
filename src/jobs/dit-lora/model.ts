import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { loadRecipe } from '../../config/recipe.js';
import { DIT_LORA_EXTRA_TARGETS, injectLora, type LoraModel } from '../../lora/inject.js';
import { RECIPE_FILE, runBaseName } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { runDitJob } from '../dit/index.js';
import { DIT_MODEL_FILE, type DitPipeline, loadDitModel, type LoadedDit } from '../dit/model.js';
import type { JobContext } from '../registry.js';
import { ditLoraAdapterSchema, type DitLoraRecipe } from './schema.js';

export const DIT_LORA_KIND = 'dit-lora';
/** Written next to the final adapter: which base it was trained on and in which format it is stored. */
export const ADAPTER_INFO_FILE = 'adapter.json';

/** The dit-lora part of each checkpoint: the base it adapts, the adapter settings, and the bucket sampler's place. */
export const ditLoraJobStateSchema = z.strictObject({
  base: z.string(),
  lora: ditLoraAdapterSchema,
  sampler: z.strictObject({ epoch: z.number().int().min(0), position: z.number().int().min(0) }),
});
export type DitLoraJobState = z.infer<typeof ditLoraJobStateSchema>;

export const adapterInfoSchema = z.strictObject({ base: z.string(), file: z.string(), format: z.string() });

/**
 * The newest run of the dit recipe `recipe` under `runsRoot` that finished (has its model.safetensors),
 * by the start time in the folder name.
 */
export function findFinishedDitRun(runsRoot: string, recipe: string): string | undefined {
  const root = path.resolve(runsRoot);
  if (!fs.existsSync(root)) return undefined;
  const base = runBaseName(recipe).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^${base}-(\\d{8}-\\d{6})(?:-(\\d+))?$`);
  return fs
    .readdirSync(root)
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter(({ name, m }) => m && fs.existsSync(path.join(root, name, RECIPE_FILE)) && fs.existsSync(path.join(root, name, DIT_MODEL_FILE)))
    .map(({ name, m }) => ({ file: path.join(root, name, DIT_MODEL_FILE), stamp: m![1]!, n: m![2] ? Number(m![2]) : 1 }))
    .sort((a, b) => (a.stamp === b.stamp ? a.n - b.n : a.stamp < b.stamp ? -1 : 1))
    .at(-1)?.file;
}

/** The base model file: `base.path`, else the newest finished run of `base.recipe` (trained now if there is none). */
export async function resolveBase(r: DitLoraRecipe, ctx: JobContext): Promise<string> {
  if (r.base.path) {
    if (!fs.existsSync(r.base.path)) throw new UsageError(`base.path: ${r.base.path} does not exist`);
    return path.resolve(r.base.path);
  }
  const runsRoot = ctx.runsRoot ?? 'checkpoints';
  const existing = findFinishedDitRun(runsRoot, r.base.recipe);
  if (existing) {
    ctx.log(`base: using ${existing} (newest finished run of ${r.base.recipe})`);
    return existing;
  }
  const loaded = loadRecipe(r.base.recipe);
  if (loaded.kind !== 'dit') throw new UsageError(`base.recipe: ${r.base.recipe} is a recipe of kind '${loaded.kind}', expected kind 'dit'`);
  ctx.log(`base: no finished run of ${r.base.recipe} under ${path.resolve(runsRoot)}/ — training it first (the same as: npx scaleforge train --recipe ${r.base.recipe})`);
  const result = await runDitJob({ loaded, recipeArg: r.base.recipe, runsRoot, backend: ctx.backend ?? r.backend, log: (l) => ctx.log(`[base] ${l}`) });
  if (!result.modelFile) throw new Error(`training ${r.base.recipe} stopped before writing its ${DIT_MODEL_FILE}`);
  return path.resolve(result.modelFile);
}

/** The base pipeline, frozen whole (text encoder included). */
export function loadBase(file: string): LoadedDit {
  const loaded = loadDitModel(file, { ema: true });
  loaded.pipeline.freeze();
  return loaded;
}

/** Adapters on the DiT (names relative to it, `blocks.0.attn.qkv`, as the LoRA files store them). */
export function injectAdapters(pipeline: DitPipeline, lora: DitLoraRecipe['lora'], seed: number): LoraModel {
  const targets = [...lora.targets, ...lora.extra_targets.flatMap((k) => DIT_LORA_EXTRA_TARGETS[k] ?? [])];
  try {
    return injectLora(pipeline.dit, {
      targets,
      exclude: lora.exclude,
      r: lora.r,
      ...(lora.alpha !== undefined ? { alpha: lora.alpha } : {}),
      dropout: lora.dropout,
      init: lora.init,
      rslora: lora.rslora,
      dora: lora.dora,
      rankPattern: lora.rank_pattern,
      alphaPattern: lora.alpha_pattern,
      trainable: lora.trainable,
      rng: new Rng(seed).fork('lora'),
    });
  } catch (e) {
    throw new UsageError(`lora: ${(e as Error).message}`);
  }
}

/** Strength s of every adapter at once: B scaled by s for the duration of `f` (exact for LoRA; DoRA magnitudes stay). */
export async function withStrength<T>(lm: LoraModel, strength: number, f: () => Promise<T>): Promise<T> {
  if (strength === 1) return f();
  if (strength === 0) return lm.withAdaptersDisabled(f);
  const saved = [...lm.adapters.values()].map((a) => ({ v: a.loraB.weight, value: a.loraB.weight.clone() }));
  for (const s of saved) s.v.assign(s.value.mul(strength));
  try {
    return await f();
  } finally {
    for (const s of saved) {
      s.v.assign(s.value);
      s.value.dispose();
    }
  }
}
