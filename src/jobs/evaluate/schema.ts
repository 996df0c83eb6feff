import { z } from 'zod';

/** Schema of `kind: evaluate` recipes: which run, how many samples, which metrics against what. */
const positiveInt = z.number().int().positive();

export const EVALUATE_METRICS = ['caption_fidelity', 'fid', 'kid', 'is', 'clip_score'] as const;

export const evaluateRecipeSchema = z
  .strictObject({
    run: z.string().default('latest').describe("a run folder, or 'latest' = the newest run of `recipe_name` under runs_root"),
    runs_root: z.string().default('checkpoints'),
    recipe_name: z.string().default('nsp-progressive'),
    checkpoints: z.enum(['all', 'last']).default('all').describe('every step-*.safetensors and the final model, or only the newest'),
    ema: z.boolean().default(true),
    samples_per_checkpoint: positiveInt.default(16),
    seed: z.number().int().min(0).default(0).describe('sample i uses noise seed + i, the same at every checkpoint'),
    prompt_seed: z.number().int().min(0).default(987_654).describe('prompts of the procedural grammar drawn from this seed'),
    metrics: z.array(z.enum(EVALUATE_METRICS)).min(1).default(['caption_fidelity', 'fid', 'kid', 'is', 'clip_score']),
    reference: z
      .strictObject({
        source: z.string().default('procedural').describe("'procedural' (the default data) or an image folder / .npz"),
        count: positiveInt.default(256),
        seed: z.number().int().min(0).default(1),
      })
      .prefault({}),
    inception: z
      .strictObject({
        weights: z.string().nullable().default(null).describe('inception-fid .safetensors; null = the weights cache'),
        resize: z.enum(['clean', 'legacy']).default('clean'),
      })
      .prefault({}),
    clip: z
      .strictObject({
        model: z.enum(['clip-vit-b32', 'clip-vit-l14']).default('clip-vit-b32'),
        weights: z.string().nullable().default(null).describe('a Hugging Face CLIPModel folder; null = the weights cache'),
      })
      .prefault({}),
    kid: z.strictObject({ subsets: positiveInt.default(100), subset_size: positiveInt.default(1000) }).prefault({}),
    is: z.strictObject({ splits: positiveInt.default(10) }).prefault({}),
    batch_size: positiveInt.default(32),
    out: z.string().nullable().default(null).describe('report folder; null = <run>/eval-<timestamp>'),
    backend: z.string().nullable().default(null),
  })
  .superRefine((r, ctx) => {
    if (r.metrics.includes('is') && r.samples_per_checkpoint < r.is.splits) {
      ctx.addIssue({ code: 'custom', path: ['is', 'splits'], message: `${r.is.splits} splits need at least as many samples; samples_per_checkpoint is ${r.samples_per_checkpoint}` });
    }
  });

export type EvaluateRecipe = z.output<typeof evaluateRecipeSchema>;
