import { z } from 'zod';
import { registerRecipeKind } from '../config/registry.js';

/** Schema of `kind: curate` recipes. Keys are snake_case as users write them in YAML. */

const positiveInt = z.number().int().positive();
const colour = z
  .string()
  .regex(/^#[0-9a-fA-F]{6}$/, 'a colour like "#ffffff"')
  .describe('background as #rrggbb');

export const RESIZE_MODES = ['border', 'center_crop', 'keep_ratio', 'keep_ratio_largest', 'no'] as const;
export type ResizeMode = (typeof RESIZE_MODES)[number];
export const OUTPUT_FORMATS = ['jpg', 'png', 'webp'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];
/** JPEG chroma: 'auto' is 4:4:4 from quality 90 and 4:2:0 below. */
export const CHROMA_SUBSAMPLINGS = ['auto', '4:2:0', '4:4:4'] as const;
export type ChromaSubsampling = (typeof CHROMA_SUBSAMPLINGS)[number];

export const curateInputSchema = z.strictObject({
  paths: z.array(z.string().min(1)).min(1).describe('folders (scanned recursively) or single image files'),
  include: z
    .array(z.string().min(1))
    .default(['**/*.{jpg,jpeg,png,webp,avif,tif,tiff,gif,bmp}'])
    .describe('fast-glob patterns relative to each input folder, matched case-insensitively'),
  exclude: z.array(z.string().min(1)).default([]).describe('fast-glob patterns to leave out'),
});

export const curateDecodeSchema = z.strictObject({
  background: colour.default('#ffffff').describe('alpha is matted onto this colour'),
  max_pixels: positiveInt.default(100_000_000).describe('larger images are rejected as decompression bombs'),
  mode: z
    .enum(['fast', 'exact'])
    .default('fast')
    .describe(
      "fast: decode once straight to the output scale (JPEG shrink-on-load) and derive hashes, measures and output from it; exact: full-resolution decode, perceptual hashes bit-for-bit as imagededup's",
    ),
});

export const curateDedupSchema = z.strictObject({
  exact: z.boolean().default(true).describe('drop images whose decoded pixels are identical'),
  near: z.boolean().default(true).describe('drop near duplicates by perceptual hash'),
  hash: z.enum(['phash', 'dhash', 'ahash', 'whash']).default('phash'),
  threshold: z.number().int().min(0).max(64).default(10).describe('Hamming distance ≤ threshold counts as a near duplicate'),
});

export const curateFiltersSchema = z.strictObject({
  min_side: z.number().int().min(0).default(0).describe('reject when the shorter side (after EXIF rotation) is below this; 0 = off'),
  max_aspect_ratio: z.number().min(1).optional().describe('reject when longer/shorter side exceeds this'),
  min_blur_variance: z
    .number()
    .min(0)
    .optional()
    .describe('reject when the variance of the Laplacian (greyscale 0..255, longest side ≤ analysis_size) is below this'),
  min_brightness: z.number().min(0).max(1).optional().describe('reject when mean luma (0..1) is below this'),
  max_brightness: z.number().min(0).max(1).optional().describe('reject when mean luma (0..1) is above this'),
  min_entropy: z.number().min(0).max(8).optional().describe('reject when the greyscale histogram entropy (bits) is below this'),
  analysis_size: positiveInt.default(256).describe('blur/brightness/entropy are measured on the image shrunk to this longest side'),
  clip: z
    .strictObject({
      model: z.string().min(1).describe('local Hugging Face CLIPModel folder (config.json, model.safetensors, tokenizer files)'),
      min_caption_similarity: z.number().min(-1).max(1).optional().describe('reject when the image–caption cosine similarity is below this'),
      max_centroid_zscore: z
        .number()
        .positive()
        .optional()
        .describe("reject when the image's similarity to the centroid of all images lies more than this many standard deviations below the mean"),
      batch_size: positiveInt.default(16).describe('images per CLIP forward pass'),
    })
    .optional()
    .describe('CLIP-similarity outlier filters; off unless a model is given'),
});

export const curateResizeSchema = z.strictObject({
  size: positiveInt.default(512),
  mode: z.enum(RESIZE_MODES).default('border'),
  only_if_bigger: z.boolean().default(false).describe('leave images that would be enlarged at their size'),
  border_colour: colour.default('#ffffff').describe('padding colour of mode border'),
});

export const curateCaptionsSchema = z.strictObject({
  sidecar: z.array(z.enum(['txt', 'caption', 'json'])).default(['txt', 'caption', 'json']).describe('sidecar extensions, first found wins'),
  manifest: z.string().optional().describe('CSV or JSONL file mapping images to captions (columns file_name/file/path/image and text/caption)'),
  clean: z.boolean().default(true).describe('HTML-unescape, collapse whitespace, drop repeated comma-separated tags'),
  trigger: z.string().optional().describe('token put first in every caption (e.g. a brand or subject token)'),
  missing: z.enum(['keep', 'reject']).default('keep').describe("what to do with images without a caption ('keep' writes an empty caption)"),
});

export const curateOutputSchema = z.strictObject({
  dir: z.string().min(1).optional().describe('output folder (or pass --out)'),
  format: z.enum(['folder', 'webdataset']).default('folder'),
  image_format: z.enum(OUTPUT_FORMATS).default('jpg'),
  quality: z.number().int().min(1).max(100).default(95).describe('jpg/webp quality'),
  chroma_subsampling: z
    .enum(CHROMA_SUBSAMPLINGS)
    .default('auto')
    .describe("jpg: 'auto' keeps full-resolution chroma (4:4:4) from quality 90 and halves it (4:2:0) below; '4:2:0' is what img2dataset (OpenCV), Pillow and sharp write by default"),
  optimize_coding: z.boolean().default(false).describe('jpg: optimised Huffman tables — lossless, a few % smaller files, about twice the encode time'),
  samples_per_shard: positiveInt.default(10_000).describe('webdataset: samples per .tar'),
  thumbnails: z.number().int().min(0).default(200).describe('report: at most this many duplicate groups and rejected images with thumbnails'),
});

export const CurateRecipeSchema = z.strictObject({
  input: curateInputSchema,
  decode: curateDecodeSchema.prefault({}),
  dedup: curateDedupSchema.prefault({}),
  filters: curateFiltersSchema.prefault({}),
  resize: curateResizeSchema.prefault({}),
  captions: curateCaptionsSchema.prefault({}),
  output: curateOutputSchema.prefault({}),
  concurrency: z.number().int().min(0).default(0).describe('worker threads analysing images in parallel; 0 = number of CPU cores, 1 = in the calling thread'),
});

export type CurateConfig = z.output<typeof CurateRecipeSchema>;

export const curateRecipeKind = registerRecipeKind('curate', CurateRecipeSchema, {
  describe: 'dataset curation: decode, dedup, filter, resize, caption and package images',
});

/** A full config from a partial one, with every schema default filled in (flag form, tests, bench). */
export function curateConfig(input: z.input<typeof CurateRecipeSchema>): CurateConfig {
  return CurateRecipeSchema.parse(input);
}
