import { z } from 'zod';
import { checkNspConfig } from '../../models/nsp/config.js';
import { modelConfigFromRecipe } from './model.js';
import { checkPerStage, gradClipSchema, logShape, optimizerSchema, perStageSchema, perStageValue, scheduleSchema } from '../../train/recipe_parts.js';

/** Schema of `kind: nsp-progressive` recipes. Keys are snake_case as users write them in YAML. */
const positiveInt = z.number().int().positive();
const intList = z.array(positiveInt).min(1);

export const nspModelSchema = z.strictObject({
  sizes: intList.default([16, 32, 64]).describe('resolutions coarse → fine; sizes[0] is the noise latent'),
  channels: intList.default([32]).describe('feature channels: one value or one per stage'),
  blocks_per_stage: intList.default([2]).describe('residual dense blocks: one value or one per stage'),
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
  batch_size: perStageSchema(positiveInt).default(16).describe('one batch size, or one per stage (coarse stages are cheap per sample)'),
});

export const vaeRefSchema = z.strictObject({
  path: z.string().optional().describe('diffusers AutoencoderKL folder or .safetensors (e.g. the SDXL VAE)'),
  recipe: z.string().optional().describe('vae recipe to train first when no path is given'),
});

const perStageWeight = perStageSchema(z.number().min(0));
const lossSchema = z.strictObject({
  l1: perStageWeight.default(1).describe('weight of the L1 term: one value or one per stage'),
  mse: perStageWeight.default(1).describe('weight of the squared-error term: one value or one per stage'),
  scale_weights: perStageWeight.default(1).describe('weight of the whole loss: one value or one per stage'),
});

export const nspTrainSchema = z.strictObject({
  start_scale: z.number().int().min(0).default(0),
  end_scale: z.number().int().min(0).optional().describe('last stage to train (default: the last)'),
  steps_per_scale: perStageSchema(positiveInt).optional().describe('optimizer steps: one value or one per stage (wins over epochs_per_scale)'),
  epochs_per_scale: perStageSchema(z.number().positive()).optional().describe('epochs: one value or one per stage'),
  optimizer: optimizerSchema(perStageSchema(z.number().positive()).default(2e-3).describe('peak learning rate: one value or one per stage')).prefault({}),
  schedule: scheduleSchema(30),
  grad_clip: gradClipSchema(1),
  grad_accum: positiveInt.default(1),
  ema: z.strictObject({ enabled: z.boolean().default(true), decay: z.number().min(0).max(1).default(0.995) }).prefault({}),
  precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32'),
  loss: lossSchema.prefault({}),
  input_noise: z.number().min(0).default(0.05).describe('σ of Gaussian noise added to the teacher-forced input'),
  generated_inputs: perStageSchema(z.number().min(0).max(1))
    .default(0)
    .describe("share of each batch whose input is the cascade's own output at the previous scale instead of ground truth: one value or one per stage"),
  fade_in_steps: z.number().int().min(0).default(0),
  init_from_previous: z.boolean().default(true),
});

/** The recipe body (`kind:` and `extends:` are consumed by the config loader before validation). */
export const nspRecipeSchema = z
  .strictObject({
  seed: z.number().int().min(0).default(0),
  backend: z.string().default('auto'),
  space: z.enum(['pixel', 'latent']).default('pixel'),
  vae: vaeRefSchema.prefault({}),
  data: dataSchema.prefault({}),
  text_encoder: textEncoderSchema.prefault({}),
  model: nspModelSchema.prefault({}),
  train: nspTrainSchema.prefault({}),
  log: z
    .strictObject({ ...logShape({ sample_every: 250, checkpoint_every: 250, keep_last: 3 }), histogram_every: positiveInt.default(250) })
    .prefault({}),
  sample: z
    .strictObject({
      prompts: z.array(z.string()).min(1).optional(),
      seed: z.number().int().min(0).default(1234),
      fidelity_samples: positiveInt.default(64),
    })
    .prefault({}),
  })
  .superRefine((r, ctx) => {
    // Cross-field rules live here so they fail at load time with file:line, before any data is built.
    if (r.data.source === 'folder' && !r.data.folder) ctx.addIssue({ code: 'custom', path: ['data', 'folder'], message: 'required when data.source is "folder"' });
    const m = r.model;
    const n = m.sizes.length;
    const sizes = 'model.sizes';
    checkPerStage(ctx, ['model', 'channels'], r.model.channels, n, sizes);
    checkPerStage(ctx, ['model', 'blocks_per_stage'], r.model.blocks_per_stage, n, sizes);
    checkPerStage(ctx, ['data', 'batch_size'], r.data.batch_size, n, sizes);
    checkPerStage(ctx, ['train', 'steps_per_scale'], r.train.steps_per_scale, n, sizes);
    checkPerStage(ctx, ['train', 'epochs_per_scale'], r.train.epochs_per_scale, n, sizes);
    checkPerStage(ctx, ['train', 'optimizer', 'lr'], r.train.optimizer.lr, n, sizes);
    checkPerStage(ctx, ['train', 'loss', 'l1'], r.train.loss.l1, n, sizes);
    checkPerStage(ctx, ['train', 'loss', 'mse'], r.train.loss.mse, n, sizes);
    checkPerStage(ctx, ['train', 'loss', 'scale_weights'], r.train.loss.scale_weights, n, sizes);
    checkPerStage(ctx, ['train', 'generated_inputs'], r.train.generated_inputs, n, sizes);
    const end = r.train.end_scale ?? n - 1;
    if (end >= n) ctx.addIssue({ code: 'custom', path: ['train', 'end_scale'], message: `expected a stage index below ${n} (the length of model.sizes), got ${end}` });
    if (r.train.start_scale > end) {
      ctx.addIssue({ code: 'custom', path: ['train', 'start_scale'], message: `expected at most ${end} (end_scale, or the last stage), got ${r.train.start_scale}` });
    }
    // The model's own geometry checks, located at the model key each names.
    const lengthsFit = [m.channels, m.blocks_per_stage].every((l) => l.length === 1 || l.length === n);
    if (lengthsFit) {
      for (const problem of checkNspConfig(modelConfigFromRecipe(r, 3, m.cond_dim))) {
        const key = /^[a-z_]+/.exec(problem)?.[0] ?? 'sizes';
        ctx.addIssue({ code: 'custom', path: ['model', key], message: problem });
      }
    }
  });

export type NspRecipe = z.infer<typeof nspRecipeSchema>;

/** The batch size stage k trains with. */
export function batchSizeFor(r: NspRecipe, stage: number): number {
  return perStageValue(r.data.batch_size, stage);
}


