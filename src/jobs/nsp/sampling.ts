import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { aggregateFidelity, FidelitySummary, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { formatProceduralCaption, parseProceduralCaption, sampleProceduralMeta } from '../../data/procedural.js';
import { RgbImage } from '../../data/dataset.js';
import { savePng, saveGridPng, tensorToRgb8 } from '../../io/image.js';
import { UsageError } from '../../util/errors.js';
import type { SampleRequest } from '../registry.js';
import { disposeTextEncoding } from '../../models/text/text_encoder.js';
import { Rng } from '../../util/rng.js';
import { loadNspForSampling, NspPipeline } from './model.js';

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

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'prompt';
}

/**
 * `scaleforge sample` for NSP: `n` PNGs per prompt (sample j of a prompt uses noise seed + j,
 * independent of the other prompts), optionally every coarser scale too; procedural captions get
 * their fidelity score printed. Returns the files written.
 */
export async function sampleNsp(target: string, req: SampleRequest): Promise<string[]> {
  if (req.prompts.length === 0) throw new UsageError('--prompt: an nsp-progressive model needs at least one prompt');
  const loaded = loadNspForSampling(target, { ema: req.ema });
  try {
    const { pipeline, lastStage } = loaded;
    const sizes = pipeline.generator.config.sizes;
    fs.mkdirSync(req.out, { recursive: true });
    const written: string[] = [];
    for (const prompt of req.prompts) {
      const group = Array.from({ length: req.n }, () => prompt);
      const scales = generate(pipeline, group, { seed: req.seed, lastStage });
      for (let k = 0; k < scales.length; k++) {
        const last = k === scales.length - 1;
        if (!last && !req.saveIntermediates) continue;
        // Latent runs generate VAE latents: only the decoder turns them into pixels.
        const rgb = loaded.decode ? loaded.decode(scales[k]!) : scales[k]!;
        const images = await tensorToRgb8(rgb, { range: 'signed' });
        if (rgb !== scales[k]) rgb.dispose();
        for (let j = 0; j < images.length; j++) {
          const file = path.join(req.out, `${slug(prompt)}-seed${req.seed + j}${last ? '' : `-${images[j]!.width}px`}.png`);
          await savePng(file, images[j]!.rgb, images[j]!.width, images[j]!.height);
          written.push(file);
          if (!last) continue;
          // Caption fidelity reads 16 px and up; a checkpoint of the first stage samples smaller.
          if (parseProceduralCaption(prompt) && images[j]!.width >= 16 && images[j]!.height >= 16) {
            const f = scoreCaptionFidelity(images[j]!, prompt);
            const ok = (b: boolean) => (b ? 'ok' : 'no');
            req.log(`${file}  fidelity ${(f.score * 100).toFixed(0)}% (colour ${ok(f.color)}, shape ${ok(f.shape)}, position ${ok(f.position)}, background ${ok(f.background)})`);
          } else req.log(file);
        }
      }
      scales.forEach((s) => s.dispose());
    }
    const side = loaded.vae ? sizes[lastStage]! * 2 ** (loaded.vae.config.blockOutChannels.length - 1) : sizes[lastStage]!;
    req.log(
      `${written.length} PNG(s) from ${loaded.source}${loaded.usedEma ? ' (EMA weights)' : ''}, ${side}×${side}` +
        `${loaded.vae ? ` (decoded from ${sizes[lastStage]}×${sizes[lastStage]} latents by ${loaded.architecture.vae!.path})` : ''}, in ${req.out}/`,
    );
    return written;
  } finally {
    loaded.dispose();
  }
}
