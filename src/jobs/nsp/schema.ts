import { z } from 'zod';
import { optimizerSchema, scheduleSchema } from '../../train/recipe_parts.js';

/** Schema of `kind: nsp-progressive` recipes. Keys are snake_case as users write them in YAML. */
const positiveInt = z.number().int().positive();
const intList = z.array(positiveInt).min(1);

export const nspModelSchema = z.strictObject({
  sizes: intList.default([16, 32, 64]).describe('resolutions coarse → fine; sizes[0] is the noise latent'),
  channels: intList.default([32]),
  blocks_per_stage: intList.default([2]),
  dense_layers: positiveInt.default(3),
  growth_channels: positiveInt.default(16),
  residual_scale: z.number().positive().max(1).default(0.2),
  attention: z
    .strictObject({
      max_size: z.number().int().min(0).default(16).describe('stages at or below this resolution get self-attention; 0 disables'),
      heads: positiveInt.default(4),
      kv_heads: positiveInt.default(1).describe('1 = multi-query, heads = multi-head, in between = grouped-query'),
      token_size: z.number().int().min(0).default(8).describe('attend on at most token_size² average-pooled tokens; 0 = every pixel'),
    })
    .prefault({}),
  cross_attention: z.boolean().default(true).describe('cross-attend to the text tokens in the stages with self-attention'),
  cond_dim: positiveInt.default(64),
  group_norm_groups: positiveInt.default(8),
  base_noise_std: z.number().min(0).default(0.1).describe('σ of the noise latent stage 0 starts from'),
  coord_channels: z.boolean().default(true).describe('append (y, x) coordinate channels to every stage input'),
  base_position_embedding: z.boolean().default(false).describe('a learned embedding per position of the base stage (added after conv_in)'),
});

export const builtinTextSchema = z.strictObject({
  dim: positiveInt.default(64),
  layers: positiveInt.default(2),
  heads: positiveInt.default(4),
  context: positiveInt.default(16),
  embedding_std: z.number().positive().default(1).describe('initial token-embedding σ (CLIP uses 0.02 for pretrained tables)'),
  pooling: z.enum(['eos', 'mean']).default('eos').describe('pooled text vector: end-of-text state or mean over tokens'),
});

export const textEncoderSchema = z.strictObject({
  type: z.enum(['builtin', 'clip']).default('builtin'),
  builtin: builtinTextSchema.prefault({}),
  clip_path: z.string().optional().describe('local Hugging Face folder with config.json, model.safetensors, vocab.json, merges.txt'),
  train: z.boolean().default(true),
  lr_scale: z.number().positive().default(1),
  /** After this stage the text encoder is frozen, so earlier stages keep seeing the embedding they learned. */
  freeze_after_stage: z.number().int().min(0).default(0),
});

export const dataSchema = z.strictObject({
  source: z.enum(['procedural', 'folder']).default('procedural'),
  procedural: z
    .strictObject({
      count: positiveInt.default(2048),
      size: positiveInt.default(64),
      seed: z.number().int().min(0).default(0),
    })
    .prefault({}),
  folder: z.string().optional().describe('image folder with sidecar .txt captions or a metadata.jsonl manifest'),
  allow_upscale: z.boolean().default(false),
  batch_size: z.union([positiveInt, intList]).default(16).describe('one batch size, or one per stage (coarse stages are cheap per sample)'),
});

export const vaeRefSchema = z.strictObject({
  path: z.string().optional().describe('diffusers AutoencoderKL folder or .safetensors (e.g. the SDXL VAE)'),
  recipe: z.string().optional().describe('vae recipe to train first when no path is given'),
});

const perStageWeight = z.union([z.number().min(0), z.array(z.number().min(0)).min(1)]);
const lossSchema = z.strictObject({
  l1: perStageWeight.default(1).describe('weight of the L1 term: one value or one per stage'),
  mse: perStageWeight.default(1).describe('weight of the squared-error term: one value or one per stage'),
  scale_weights: z.array(z.number().min(0)).optional().describe('one weight per stage'),
});

export const nspTrainSchema = z.strictObject({
  start_scale: z.number().int().min(0).default(0),
  end_scale: z.number().int().min(0).optional().describe('last stage to train (default: the last)'),
  steps_per_scale: z.array(positiveInt).optional(),
  epochs_per_scale: z.array(z.number().positive()).optional(),
  optimizer: optimizerSchema(
    z.union([z.number().positive(), z.array(z.number().positive()).min(1)]).default(2e-3).describe('peak learning rate: one value or one per stage'),
  ).prefault({}),
  schedule: scheduleSchema(30),
  grad_clip: z.number().positive().optional().default(1),
  grad_accum: positiveInt.default(1),
  ema: z.strictObject({ enabled: z.boolean().default(true), decay: z.number().min(0).max(1).default(0.995) }).prefault({}),
  precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32'),
  loss: lossSchema.prefault({}),
  input_noise: z.number().min(0).default(0.05).describe('σ of Gaussian noise added to the teacher-forced input'),
  generated_inputs: z
    .union([z.number().min(0).max(1), z.array(z.number().min(0).max(1)).min(1)])
    .default(0)
    .describe("share of each batch whose input is the cascade's own output at the previous scale instead of ground truth: one value or one per stage"),
  fade_in_steps: z.number().int().min(0).default(0),
  init_from_previous: z.boolean().default(true),
});

/** The recipe body (`kind:` and `extends:` are consumed by the config loader before validation). */
export const nspRecipeSchema = z.strictObject({
  seed: z.number().int().min(0).default(0),
  backend: z.string().default('auto'),
  space: z.enum(['pixel', 'latent']).default('pixel'),
  vae: vaeRefSchema.prefault({}),
  data: dataSchema.prefault({}),
  text_encoder: textEncoderSchema.prefault({}),
  model: nspModelSchema.prefault({}),
  train: nspTrainSchema.prefault({}),
  log: z
    .strictObject({
      every: positiveInt.default(10),
      sample_every: positiveInt.default(250),
      checkpoint_every: positiveInt.default(250),
      keep_last: positiveInt.default(3),
      histogram_every: positiveInt.default(250),
    })
    .prefault({}),
  sample: z
    .strictObject({
      prompts: z.array(z.string()).min(1).optional(),
      seed: z.number().int().min(0).default(1234),
      fidelity_samples: positiveInt.default(64),
    })
    .prefault({}),
});

export type NspRecipe = z.infer<typeof nspRecipeSchema>;

/** The batch size stage k trains with. */
export function batchSizeFor(r: NspRecipe, stage: number): number {
  return perStageValue(r.data.batch_size, stage);
}

/** A per-stage value given as one number or a list (the last entry repeats). */
export function perStageValue(v: number | number[], stage: number): number {
  return typeof v === 'number' ? v : v[Math.min(stage, v.length - 1)]!;
}
