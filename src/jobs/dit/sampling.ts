import { tf } from '../../backend/tf.js';
import { aggregateFidelity, type FidelitySummary, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { parseProceduralCaption } from '../../data/procedural.js';
import type { RgbImage } from '../../data/dataset.js';
import { classifierFreeGuidance, getSampler, type ModelFn, samplerNames } from '../../diffusion/samplers.js';
import { saveGridPng, tensorToRgb8 } from '../../io/image.js';
import type { DitCondition } from '../../models/dit/model.js';
import { UsageError } from '../../util/errors.js';
import type { Decoder } from '../nsp/sampling.js';
import { concatConditions, disposeCondition, type DitPipeline, scheduleOf } from './model.js';

export interface DitSampleSettings {
  sampler: string;
  steps: number;
  /** Classifier-free guidance scale; 1 runs the conditional model alone. */
  cfg: number;
  eta: number;
  /** Sample i of a call uses noise stream seed + i. */
  seed: number;
  batchSize?: number;
  onStep?: (done: number, total: number) => void;
}

/** What to condition on: prompts (text models) or class labels (class models), one sample each. */
export type DitRequests = { prompts: string[] } | { classes: number[] };

function requestCount(r: DitRequests): number {
  return 'prompts' in r ? r.prompts.length : r.classes.length;
}

function conditionFor(p: DitPipeline, r: DitRequests, start: number, end: number): DitCondition {
  return 'prompts' in r ? p.encodePrompts(r.prompts.slice(start, end)) : p.classCondition(r.classes.slice(start, end));
}

/**
 * Samples in the generated space (pixels in [-1, 1] or latents) [N, S, S, C], the model bound to its
 * condition and, for cfg ≠ 1, batched with the null condition for classifier-free guidance.
 */
export function generateDit(p: DitPipeline, requests: DitRequests, s: DitSampleSettings): tf.Tensor4D {
  const sampler = getSampler(s.sampler);
  if (!sampler) throw new UsageError(`--sampler: unknown sampler '${s.sampler}'; known: ${samplerNames().join(', ')}`);
  const arch = p.architecture;
  const wants = arch.objective.type === 'flow' ? 'velocity' : 'eps';
  if (sampler.prediction !== wants) {
    throw new UsageError(`--sampler ${s.sampler} needs a model that predicts ${sampler.prediction}; this ${arch.objective.type} model predicts ${wants} (use ${arch.objective.type === 'flow' ? 'euler' : 'ddpm or ddim'})`);
  }
  const m = arch.model;
  const total = requestCount(requests);
  const bs = s.batchSize ?? 32;
  const schedule = arch.objective.type === 'ddpm' ? scheduleOf(arch.objective) : undefined;
  const parts: tf.Tensor4D[] = [];
  const wasTraining = p.training;
  p.eval();
  try {
    for (let start = 0; start < total; start += bs) {
      const end = Math.min(total, start + bs);
      const n = end - start;
      const out = tf.tidy(() => {
        const cond = conditionFor(p, requests, start, end);
        let model: ModelFn;
        if (s.cfg === 1) model = (x, t) => p.dit.forward(x, t, cond);
        else {
          const both = concatConditions(cond, p.nullCondition(n));
          // Guide the prediction channels; a learned variance stays the conditional one.
          model = classifierFreeGuidance((x, t) => p.dit.forward(x, t, both), s.cfg, m.inChannels);
        }
        const result = sampler.run(
          model,
          {
            steps: s.steps,
            seeds: Array.from({ length: n }, (_, i) => s.seed + start + i),
            shape: [m.inputSize, m.inputSize, m.inChannels],
            eta: s.eta,
            learnSigma: m.learnSigma,
            shift: arch.objective.shift,
            ...(s.onStep ? { onStep: s.onStep } : {}),
          },
          schedule,
        );
        disposeCondition(cond);
        return result;
      });
      parts.push(out);
    }
  } finally {
    if (wasTraining) p.train();
  }
  if (parts.length === 1) return parts[0]!;
  const all = tf.concat(parts, 0) as tf.Tensor4D;
  tf.dispose(parts);
  return all;
}

/** Generated samples as RGB8 (decoded through the VAE for latent runs). */
export async function toImages(x: tf.Tensor4D, decode: Decoder | null): Promise<RgbImage[]> {
  const rgb = decode ? decode(x) : x;
  const images = await tensorToRgb8(rgb, { range: 'signed' });
  if (rgb !== x) rgb.dispose();
  return images;
}

/** One PNG grid of samples with their prompts (or class labels) written under them. */
export async function saveSampleGrid(file: string, p: DitPipeline, requests: DitRequests, s: DitSampleSettings, decode: Decoder | null): Promise<RgbImage> {
  const x = generateDit(p, requests, s);
  const images = await toImages(x, decode);
  x.dispose();
  const labels = 'prompts' in requests ? requests.prompts : requests.classes.map((c) => `class ${c}`);
  const scale = Math.max(1, Math.round(96 / images[0]!.width));
  return saveGridPng(file, images, { cols: Math.min(4, images.length), scale, labels });
}

/** Caption fidelity (data/caption_fidelity.ts) of one sample per prompt of the procedural grammar. */
export async function evaluateDitFidelity(p: DitPipeline, prompts: string[], s: DitSampleSettings, decode: Decoder | null): Promise<FidelitySummary> {
  for (const q of prompts) if (!parseProceduralCaption(q)) throw new Error(`prompt is not in the procedural grammar: "${q}"`);
  const x = generateDit(p, { prompts }, s);
  const images = await toImages(x, decode);
  x.dispose();
  return aggregateFidelity(images.map((img, i) => scoreCaptionFidelity(img, prompts[i]!)));
}
