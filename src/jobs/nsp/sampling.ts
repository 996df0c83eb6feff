import { tf } from '../../backend/tf.js';
import { aggregateFidelity, FidelitySummary, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { formatProceduralCaption, parseProceduralCaption, sampleProceduralMeta } from '../../data/procedural.js';
import { RgbImage } from '../../data/dataset.js';
import { saveGridPng, tensorToRgb8 } from '../../io/image.js';
import { disposeTextEncoding } from '../../models/text/text_encoder.js';
import { Rng } from '../../util/rng.js';
import { NspPipeline } from './pipeline.js';

/** Maps the generated space (pixels or latents) to RGB images in [-1, 1]; identity for pixel space. */
export type Decoder = (x: tf.Tensor4D) => tf.Tensor4D;

export interface GenerateOptions {
  /** Prompt i uses noise from seed + i, so a sample does not depend on what else is in the batch. */
  seed: number;
  lastStage?: number;
  batchSize?: number;
}

/** Noise latent for prompt i: N(0, σ²) drawn from Rng(seed + i). */
export function noiseFor(count: number, seed: number, size: number, channels: number, std = 1): tf.Tensor4D {
  const per = size * size * channels;
  const data = new Float32Array(count * per);
  for (let i = 0; i < count; i++) new Rng(seed + i).fillNormal(data.subarray(i * per, (i + 1) * per), 0, std);
  return tf.tensor4d(data, [count, size, size, channels]);
}

/**
 * Runs the cascade for each prompt; returns one tensor per scale ([P, S_k, S_k, C]), in generated
 * space. The caller disposes the results.
 */
export function generate(pipeline: NspPipeline, prompts: string[], opts: GenerateOptions): tf.Tensor4D[] {
  const g = pipeline.generator;
  const last = opts.lastStage ?? g.numStages - 1;
  const bs = opts.batchSize ?? 16;
  const perScale: tf.Tensor4D[][] = Array.from({ length: last + 1 }, () => []);
  for (let start = 0; start < prompts.length; start += bs) {
    const chunk = prompts.slice(start, start + bs);
    const outs = tf.tidy(() => {
      const enc = pipeline.textEncoder.encode(chunk);
      const noise = noiseFor(chunk.length, opts.seed + start, g.config.sizes[0]!, g.config.imageChannels, g.config.baseNoiseStd ?? 1);
      const result = g.generate(noise, enc, { lastStage: last });
      disposeTextEncoding(enc);
      return result;
    });
    outs.forEach((t, k) => perScale[k]!.push(t));
  }
  return perScale.map((parts) => {
    if (parts.length === 1) return parts[0]!;
    const joined = tf.concat(parts, 0);
    parts.forEach((p) => p.dispose());
    return joined;
  });
}

/** Decoded RGB8 images of every scale, each upscaled (nearest) to the finest size for side-by-side viewing. */
export async function chainImages(scales: tf.Tensor4D[], decode: Decoder | null): Promise<RgbImage[][]> {
  const decoded = scales.map((s) => (decode ? decode(s) : s));
  const finest = decoded[decoded.length - 1]!.shape[1];
  const rows: RgbImage[][] = [];
  for (const d of decoded) {
    const up = d.shape[1] === finest ? d : tf.image.resizeNearestNeighbor(d, [finest, finest]);
    rows.push(await tensorToRgb8(up as tf.Tensor4D, { range: 'signed' }));
    if (up !== d) up.dispose();
  }
  decoded.forEach((d, k) => d !== scales[k] && d.dispose());
  return rows;
}

/** One PNG: a row per prompt, a column per scale (coarse → fine), the prompt under the finest. */
export async function saveChainGrid(file: string, pipeline: NspPipeline, prompts: string[], opts: GenerateOptions & { decode?: Decoder | null }): Promise<RgbImage> {
  const scales = generate(pipeline, prompts, opts);
  const perScale = await chainImages(scales, opts.decode ?? null);
  scales.forEach((s) => s.dispose());
  const sizes = pipeline.generator.config.sizes.slice(0, perScale.length);
  const cells: RgbImage[] = [];
  const labels: string[] = [];
  prompts.forEach((p, i) => {
    perScale.forEach((row, k) => {
      cells.push(row[i]!);
      labels.push(k === perScale.length - 1 ? p : `${sizes[k]}px`);
    });
  });
  const scale = Math.max(1, Math.round(128 / perScale[0]![0]!.width));
  return saveGridPng(file, cells, { cols: perScale.length, scale, labels });
}

/** Prompts of the procedural grammar for the fidelity check, drawn from a seed that training data never uses. */
export function fidelityPrompts(count: number, seed = 987_654): string[] {
  return Array.from({ length: count }, (_, i) => formatProceduralCaption(sampleProceduralMeta(seed, i)));
}

/**
 * Caption fidelity of generated samples: how often the shape, colour, position and background that
 * a prompt names are recognisable in the image (data/caption_fidelity.ts). Prompts outside the
 * procedural grammar cannot be scored and are rejected.
 */
export async function evaluateFidelity(
  pipeline: NspPipeline,
  prompts: string[],
  opts: GenerateOptions & { decode?: Decoder | null },
): Promise<FidelitySummary> {
  for (const p of prompts) if (!parseProceduralCaption(p)) throw new Error(`prompt is not in the procedural grammar: "${p}"`);
  const scales = generate(pipeline, prompts, opts);
  const finest = scales[scales.length - 1]!;
  scales.slice(0, -1).forEach((s) => s.dispose());
  const rgb = opts.decode ? opts.decode(finest) : finest;
  const images = await tensorToRgb8(rgb, { range: 'signed' });
  if (rgb !== finest) rgb.dispose();
  finest.dispose();
  return aggregateFidelity(images.map((img, i) => scoreCaptionFidelity(img, prompts[i]!)));
}
