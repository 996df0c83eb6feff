import { z } from 'zod';
import { DIT_LORA_EXTRA_TARGETS, DIT_LORA_TARGETS } from '../../lora/inject.js';
import { LORA_FORMAT_NAMES } from '../../lora/formats/types.js';
import { samplerNames } from '../../diffusion/samplers.js';
import { logShape, optimizerSchema, scheduleSchema } from '../../train/recipe_parts.js';

/** Schema of `kind: dit-lora` recipes: LoRA adapters trained on a frozen DiT from a `dit` run. */
const positiveInt = z.number().int().positive();
const rate = z.number().min(0).max(1);

export const ditLoraBaseSchema = z.strictObject({
  path: z.string().optional().describe('the base: a dit run folder, its model.safetensors or a dit training checkpoint'),
  recipe: z.string().default('dit-pretrain').describe('without path: the newest finished run of this dit recipe (trained first when there is none)'),
});

export const ditLoraAdapterSchema = z.strictObject({
  r: positiveInt.default(8),
  alpha: z.number().positive().optional().describe('scale alpha/r (alpha/√r with rslora); default r'),
  dropout: rate.default(0),
  init: z.enum(['kaiming', 'gaussian']).default('kaiming'),
  rslora: z.boolean().default(false),
  dora: z.boolean().default(false),
  targets: z.array(z.string().min(1)).min(1).default([...DIT_LORA_TARGETS]).describe('module-name patterns (PEFT target_modules) of the DiT'),
  extra_targets: z.array(z.enum(Object.keys(DIT_LORA_EXTRA_TARGETS) as [string, ...string[]])).default([]),
  exclude: z.array(z.string().min(1)).default([]),
  rank_pattern: z.record(z.string(), positiveInt).default({}),
  alpha_pattern: z.record(z.string(), z.number().positive()).default({}),
  trainable: z.array(z.string().min(1)).default([]).describe('extra base parameters (e.g. adaLN_modulation.1.bias) trained and saved as differences'),
});

export const ditLoraDataSchema = z.strictObject({
  source: z.enum(['brand', 'folder']).default('brand').describe('brand: the built-in procedural brand set; folder: an image folder or curate output'),
  brand: z
    .strictObject({
      count: positiveInt.default(256),
      seed: z.number().int().min(0).default(7),
      branded_share: rate.default(0.5).describe('share of items with the signature and trigger; the rest are plain prior-preservation images'),
    })
    .prefault({}),
  folder: z.string().optional(),
  trigger: z.string().default('sfbrand'),
  repeats: positiveInt.default(1).describe('brand set: repeats per epoch (folders: the N_ prefix)'),
  caption_dropout: rate.default(0.05),
  shuffle_tags: z.boolean().default(false),
  keep_tokens: z.number().int().min(0).default(1),
  tag_dropout: rate.default(0),
  buckets: z
    .strictObject({ step: positiveInt.default(8), no_upscale: z.boolean().default(false) })
    .prefault({})
    .describe('the DiT has a fixed token grid, so every bucket is the base input size; the report says where each image went'),
  batch_size: positiveInt.default(8),
});

export const ditLoraTrainSchema = z.strictObject({
  steps: positiveInt.default(300),
  optimizer: optimizerSchema(z.number().positive().default(2e-3)).prefault({}),
  schedule: scheduleSchema(20),
  grad_clip: z.number().positive().optional().default(1),
  grad_accum: positiveInt.default(1),
  ema: z.strictObject({ enabled: z.boolean().default(false), decay: z.number().min(0).max(1).default(0.99) }).prefault({}),
  prior_loss: z
    .strictObject({
      target: z
        .enum(['data', 'base'])
        .default('data')
        .describe("prior samples (this step's caption lacks the trigger, dropped captions included): 'data' regresses their own image as kohya's reg images do; 'base' regresses the frozen base's prediction"),
      weight: z.number().min(0).default(1).describe("their loss weight (kohya's prior_loss_weight)"),
    })
    .prefault({}),
});

export const ditLoraSampleSchema = z.strictObject({
  sampler: z.string().optional(),
  steps: positiveInt.default(20),
  cfg: z.number().min(0).default(3),
  seed: z.number().int().min(0).default(1234),
  prompts: z.array(z.string()).min(1).optional().describe('grid prompts without the trigger (default: the first data captions)'),
  strengths: z.array(z.number().min(0)).min(1).default([1]),
  eval_samples: positiveInt.default(32).describe('samples per arm of the brand-rate / prior-kept evaluation (procedural prompts)'),
});

export const ditLoraRecipeSchema = z
  .strictObject({
    seed: z.number().int().min(0).default(0),
    backend: z.string().default('auto'),
    base: ditLoraBaseSchema.prefault({}),
    lora: ditLoraAdapterSchema.prefault({}),
    data: ditLoraDataSchema.prefault({}),
    train: ditLoraTrainSchema.prefault({}),
    log: z.strictObject(logShape({ sample_every: 100, checkpoint_every: 100, keep_last: 2 })).prefault({}),
    sample: ditLoraSampleSchema.prefault({}),
    output: z.strictObject({ format: z.enum(LORA_FORMAT_NAMES).default('peft'), name: z.string().min(1).default('brand-lora') }).prefault({}),
  })
  .superRefine((r, ctx) => {
    if (r.data.source === 'folder' && !r.data.folder) ctx.addIssue({ code: 'custom', path: ['data', 'folder'], message: 'data.source: folder needs data.folder' });
    if (!/[\p{L}\p{N}]/u.test(r.data.trigger)) {
      ctx.addIssue({ code: 'custom', path: ['data', 'trigger'], message: `trigger word ${JSON.stringify(r.data.trigger)} has no letter or digit: it would tokenise to nothing` });
    }
    if (r.train.prior_loss.target === 'base' && r.lora.trainable.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['train', 'prior_loss', 'target'], message: "prior_loss.target: base needs lora.trainable empty: trained base parameters would move the 'frozen' prediction along" });
    }
    if (r.sample.sampler !== undefined && !samplerNames().includes(r.sample.sampler)) {
      ctx.addIssue({ code: 'custom', path: ['sample', 'sampler'], message: `unknown sampler '${r.sample.sampler}'; known: ${samplerNames().join(', ')}` });
    }
  });

export type DitLoraRecipe = z.infer<typeof ditLoraRecipeSchema>;
