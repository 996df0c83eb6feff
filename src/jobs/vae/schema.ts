import { z } from 'zod';
import { vaeDownsampleFactor } from '../../models/vae/index.js';
import { gradClipSchema, logShape, optimizerSchema, scheduleSchema } from '../../train/recipe_parts.js';
import { vaeConfigFromRecipe } from './model.js';

/** Schema of `kind: vae` recipes: train a diffusers-layout AutoencoderKL to serve latent-space jobs. */
const positiveInt = z.number().int().positive();

export const vaeModelSchema = z.strictObject({
  preset: z.enum(['tiny', 'sdxl', 'sdxl-fp16-fix']).default('tiny').describe('starting configuration; the keys below override it'),
  block_out_channels: z.array(positiveInt).min(1).optional(),
  layers_per_block: positiveInt.optional(),
  latent_channels: positiveInt.optional(),
  norm_num_groups: positiveInt.optional(),
  mid_block_add_attention: z.boolean().optional(),
  scaling_factor: z
    .union([z.literal('auto'), z.number().positive()])
    .default('auto')
    .describe("'auto' = 1 / std of the trained encoder's latent means (as LDM chose 0.18215), so generators see unit-variance latents"),
});

export const vaeDataSchema = z.strictObject({
  source: z.enum(['procedural', 'folder']).default('procedural'),
  procedural: z
    .strictObject({
      count: positiveInt.default(1024),
      size: positiveInt.default(64),
      seed: z.number().int().min(0).default(0),
    })
    .prefault({}),
  folder: z.string().optional().describe('image folder (captions are not needed; images without one are kept)'),
  size: positiveInt.default(64).describe('image side for folder data'),
  allow_upscale: z.boolean().default(false),
  crop: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe('train on random square crops of this side (0 = whole images); convolutions transfer to full size, at a fraction of the cost'),
  flip: z.boolean().default(true),
  batch_size: positiveInt.default(8),
});

export const vaeTrainSchema = z.strictObject({
  steps: positiveInt.default(150),
  optimizer: optimizerSchema(z.number().positive().default(2e-3)).prefault({}),
  schedule: scheduleSchema(10),
  grad_clip: gradClipSchema(1),
  grad_accum: positiveInt.default(1).describe('micro-batches averaged into one optimizer step'),
  precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32'),
  ema: z.strictObject({ enabled: z.boolean().default(false), decay: z.number().min(0).max(1).default(0.99) }).prefault({}),
  loss: z
    .strictObject({
      l1: z.number().min(0).default(1),
      mse: z.number().min(0).default(0),
      kl: z.number().min(0).default(1e-6).describe('β of the KL term (LDM: 1e-6)'),
    })
    .prefault({}),
  sample_posterior: z.boolean().default(true).describe('decode z ~ q(z|x) while training (false: the posterior mean)'),
});

export const vaeRecipeSchema = z
  .strictObject({
  seed: z.number().int().min(0).default(0),
  backend: z.string().default('auto'),
  model: vaeModelSchema.prefault({}),
  data: vaeDataSchema.prefault({}),
  train: vaeTrainSchema.prefault({}),
  log: z.strictObject(logShape({ sample_every: 50, checkpoint_every: 50, keep_last: 3 })).prefault({}),
  eval: z
    .strictObject({
      count: positiveInt.default(32).describe('images for the reconstruction grid and the final PSNR'),
      grid: positiveInt.default(8).describe('originals shown in each reconstruction grid'),
    })
    .prefault({}),
  })
  .superRefine((r, ctx) => {
    if (r.data.source === 'folder' && !r.data.folder) ctx.addIssue({ code: 'custom', path: ['data', 'folder'], message: 'required when data.source is "folder"' });
    // Image and crop sides must survive the encoder's downsampling; checked here so the error has file:line.
    const imageSize = r.data.source === 'procedural' ? r.data.procedural.size : r.data.size;
    const sizeKey = r.data.source === 'procedural' ? ['data', 'procedural', 'size'] : ['data', 'size'];
    const f = vaeDownsampleFactor(vaeConfigFromRecipe(r));
    if (r.data.crop > imageSize) {
      ctx.addIssue({ code: 'custom', path: ['data', 'crop'], message: `${r.data.crop} is larger than the ${imageSize}×${imageSize} images` });
    } else if (r.data.crop > 0 && r.data.crop % f !== 0) {
      ctx.addIssue({ code: 'custom', path: ['data', 'crop'], message: `crops of ${r.data.crop}px must be multiples of the VAE's downsampling factor ${f} (2^(len(model.block_out_channels) − 1))` });
    }
    if (imageSize % f !== 0) {
      ctx.addIssue({ code: 'custom', path: sizeKey, message: `images of ${imageSize}px must be multiples of the VAE's downsampling factor ${f} (2^(len(model.block_out_channels) − 1))` });
    }
  });

export type VaeRecipe = z.infer<typeof vaeRecipeSchema>;
