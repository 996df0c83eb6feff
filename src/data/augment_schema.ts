import { z } from 'zod';

/**
 * The `augment:` section trainers embed in their recipe schemas (`augment: augmentSchema.prefault({})`). Every stage is
 * off unless its section is present, so adding the section to a schema changes nothing for existing recipes; `p` is the
 * chance a present stage is applied to a sample (default 1: always, like torchvision's transforms).
 *
 * Captions: flips use the dataset's `mirrorCaption`, so "top left" becomes "top right". Crops and colour jitter do not
 * touch captions: on data whose captions name positions or colours (the procedural set), a small crop can cut the
 * named shape out and a hue shift turns "red" into another colour, so keep `crop.scale` near 1 and `hue` at 0 there.
 */
const probability = z.number().min(0).max(1);

function orderedPair(item: z.ZodNumber) {
  return z.tuple([item, item]).refine((pair: [number, number]) => pair[0] <= pair[1], { message: 'expected [min, max] with min ≤ max' });
}

const factorJitter = z
  .union([z.number().min(0), orderedPair(z.number().min(0))])
  .default(0)
  .describe('b draws a factor in [max(0, 1−b), 1+b]; [lo, hi] draws in that range; 0 = off');

export const cropSchema = z.strictObject({
  p: probability.default(1),
  scale: orderedPair(z.number().gt(0).max(1)).default([0.08, 1]).describe('crop area as a fraction of the image area'),
  ratio: orderedPair(z.number().positive()).default([3 / 4, 4 / 3]).describe('crop width / height, drawn log-uniformly'),
  antialias: z.boolean().default(true).describe('widen the bilinear filter when a crop is shrunk (as torchvision antialias=True)'),
});

export const colorJitterSchema = z.strictObject({
  p: probability.default(1),
  brightness: factorJitter,
  contrast: factorJitter,
  saturation: factorJitter,
  hue: z
    .union([z.number().min(0).max(0.5), orderedPair(z.number().min(-0.5).max(0.5))])
    .default(0)
    .describe('h shifts the hue by a uniform draw in [−h, h] turns (h ≤ 0.5); 0 = off'),
});

export const cutmixSchema = z.strictObject({
  p: probability.default(1),
  alpha: z.number().positive().default(1).describe('λ ~ Beta(alpha, alpha) is the share of the sample that survives'),
  caption: z
    .enum(['dominant', 'both'])
    .default('dominant')
    .describe("'dominant': the caption of whichever image covers more; 'both': \"<larger> and <smaller>\""),
});

export const augmentSchema = z.strictObject({
  flip: probability.default(0).describe('chance of a horizontal mirror (captions mirrored by the dataset)'),
  crop: cropSchema.optional().describe('RandomResizedCrop back to the dataset size'),
  color_jitter: colorJitterSchema.optional().describe('ColorJitter: ops in a random order per sample'),
  cutmix: cutmixSchema.optional().describe('paste a box of another sample of the dataset'),
});

export type AugmentConfig = z.output<typeof augmentSchema>;
export type AugmentInput = z.input<typeof augmentSchema>;
