import { z } from 'zod';
import { samplerNames } from '../../diffusion/samplers.js';
import { logShape, optimizerSchema, scheduleSchema } from '../../train/recipe_parts.js';
import { builtinTextSchema, vaeRefSchema } from '../nsp/schema.js';

/** Schema of `kind: dit` recipes: a DiT trained from scratch (or continued from a checkpoint) as a diffusion/flow model. */
const positiveInt = z.number().int().positive();

export const ditModelSchema = z.strictObject({
  variant: z.string().optional().describe('a named DiT (DiT-S/2, DiT-XL/2, …) whose trunk and patch size the fields below default to'),
  input_size: positiveInt.optional().describe('image (pixel space) or latent side; default: the data size (pixels) or the latent size'),
  patch_size: positiveInt.default(2),
  hidden_size: positiveInt.default(128),
  depth: positiveInt.default(4),
  num_heads: positiveInt.default(4),
  mlp_ratio: z.number().positive().default(4),
  learn_sigma: z.boolean().default(false).describe('predict the variance too (DDPM objective only), trained by the vlb term as DiT'),
  init_from: z.string().optional().describe('weights to start from: an official DiT .safetensors state dict or a diffusers DiTTransformer2DModel folder'),
});

export const ditConditioningSchema = z.strictObject({
  type: z.enum(['text', 'class']).default('text'),
  num_classes: positiveInt.default(1000).describe('class conditioning: label count (the null class is one more row)'),
  dropout: z.number().min(0).max(0.95).default(0.1).describe('share of training samples whose condition becomes the null one (empty prompt / null class) for classifier-free guidance'),
  cross_attention: z.boolean().default(true).describe('text conditioning: blocks cross-attend to the token states (PixArt-α) besides the pooled vector'),
});

export const ditTextEncoderSchema = z.strictObject({
  type: z.enum(['builtin', 'clip']).default('builtin'),
  builtin: builtinTextSchema.prefault({}),
  clip_path: z.string().optional().describe('local Hugging Face folder with config.json, model.safetensors, vocab.json, merges.txt'),
  train: z.boolean().default(true),
  lr_scale: z.number().positive().default(1),
});

export const ditObjectiveSchema = z.strictObject({
  type: z.enum(['flow', 'ddpm']).default('flow').describe('flow: rectified flow (velocity); ddpm: ε-prediction on DiT\'s linear β schedule'),
  num_timesteps: positiveInt.default(1000),
  beta_start: z.number().positive().default(1e-4),
  beta_end: z.number().positive().max(1).default(0.02),
  time_sampling: z.enum(['uniform', 'logit_normal']).default('logit_normal').describe('flow: distribution of training t'),
  logit_mean: z.number().default(0),
  logit_std: z.number().positive().default(1),
  shift: z.number().positive().default(1).describe('flow: SD3 time shift applied to training t and the sampling grid'),
  min_snr_gamma: z.number().positive().optional().describe('min-SNR-γ loss weighting (e.g. 5)'),
});

export const ditDataSchema = z.strictObject({
  source: z.enum(['procedural', 'folder']).default('procedural'),
  procedural: z
    .strictObject({ count: positiveInt.default(2048), size: positiveInt.default(32), seed: z.number().int().min(0).default(0) })
    .prefault({}),
  folder: z.string().optional().describe('image folder with sidecar .txt captions or a metadata.jsonl manifest'),
  allow_upscale: z.boolean().default(false),
  image_size: positiveInt.optional().describe('folder data: resize to this side (default: model.input_size × the VAE factor)'),
  batch_size: positiveInt.default(32),
  flip: z.boolean().default(false).describe('random horizontal flips (off for procedural data: captions name left and right)'),
});

export const ditTrainSchema = z.strictObject({
  steps: positiveInt.default(2000),
  optimizer: optimizerSchema(z.number().positive().default(1e-3)).prefault({}),
  schedule: scheduleSchema(50),
  grad_clip: z.number().positive().optional().default(1),
  grad_accum: positiveInt.default(1),
  ema: z.strictObject({ enabled: z.boolean().default(true), decay: z.number().min(0).max(1).default(0.999) }).prefault({}),
  precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32'),
});

export const ditSampleSchema = z.strictObject({
  sampler: z.string().optional().describe(`one of ${samplerNames().join(', ')}; default euler for flow, ddim for ddpm`),
  steps: positiveInt.default(25),
  cfg: z.number().min(0).default(3).describe('classifier-free guidance scale (1 = conditional model only)'),
  eta: z.number().min(0).max(1).default(0),
  prompts: z.array(z.string()).min(1).optional(),
  classes: z.array(z.number().int().min(0)).min(1).optional(),
  seed: z.number().int().min(0).default(1234),
  fidelity_samples: positiveInt.default(64),
});

export const ditRecipeSchema = z
  .strictObject({
    seed: z.number().int().min(0).default(0),
    backend: z.string().default('auto'),
    space: z.enum(['pixel', 'latent']).default('pixel'),
    vae: vaeRefSchema.prefault({}),
    data: ditDataSchema.prefault({}),
    conditioning: ditConditioningSchema.prefault({}),
    text_encoder: ditTextEncoderSchema.prefault({}),
    model: ditModelSchema.prefault({}),
    objective: ditObjectiveSchema.prefault({}),
    train: ditTrainSchema.prefault({}),
    log: z.strictObject(logShape({ sample_every: 250, checkpoint_every: 250, keep_last: 3 })).prefault({}),
    sample: ditSampleSchema.prefault({}),
  })
  .superRefine((r, ctx) => {
    if (r.model.learn_sigma && r.objective.type !== 'ddpm') {
      ctx.addIssue({ code: 'custom', path: ['model', 'learn_sigma'], message: 'learn_sigma needs objective.type: ddpm (a flow model has no variance to learn)' });
    }
    if (r.objective.beta_end <= r.objective.beta_start) {
      ctx.addIssue({ code: 'custom', path: ['objective', 'beta_end'], message: `beta_end ${r.objective.beta_end} must exceed beta_start ${r.objective.beta_start}` });
    }
    if (r.sample.sampler !== undefined && !samplerNames().includes(r.sample.sampler)) {
      ctx.addIssue({ code: 'custom', path: ['sample', 'sampler'], message: `unknown sampler '${r.sample.sampler}'; known: ${samplerNames().join(', ')}` });
    }
    if (r.conditioning.type === 'class' && r.data.source === 'procedural') {
      ctx.addIssue({ code: 'custom', path: ['conditioning', 'type'], message: 'the procedural dataset has captions, not class labels: use conditioning.type: text' });
    }
    if (r.conditioning.type === 'class' && r.sample.prompts) {
      ctx.addIssue({ code: 'custom', path: ['sample', 'prompts'], message: 'a class-conditioned model samples sample.classes, not prompts' });
    }
    if (r.text_encoder.type === 'clip' && r.conditioning.type === 'text' && !r.text_encoder.clip_path) {
      ctx.addIssue({ code: 'custom', path: ['text_encoder', 'clip_path'], message: 'text_encoder.type: clip needs clip_path (a local Hugging Face CLIP folder)' });
    }
    if (r.model.hidden_size % r.model.num_heads !== 0) {
      ctx.addIssue({ code: 'custom', path: ['model', 'num_heads'], message: `hidden_size ${r.model.hidden_size} is not divisible by num_heads ${r.model.num_heads}` });
    }
    if (r.model.hidden_size % 4 !== 0) {
      ctx.addIssue({ code: 'custom', path: ['model', 'hidden_size'], message: `hidden_size ${r.model.hidden_size} must be a multiple of 4 (2-D sin-cos positions)` });
    }
  });

export type DitRecipe = z.infer<typeof ditRecipeSchema>;

/** The sampler a recipe (or CLI) asks for, defaulting by objective. */
export function defaultSamplerFor(objective: DitRecipe['objective']['type']): string {
  return objective === 'flow' ? 'euler' : 'ddim';
}
