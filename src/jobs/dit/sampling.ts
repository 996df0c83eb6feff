import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { aggregateFidelity, type FidelitySummary, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { parseProceduralCaption } from '../../data/procedural.js';
import type { RgbImage } from '../../data/dataset.js';
import { classifierFreeGuidance, getSampler, type ModelFn, samplerNames } from '../../diffusion/samplers.js';
import { savePng, saveGridPng, tensorToRgb8 } from '../../io/image.js';
import type { DitCondition } from '../../models/dit/model.js';
import { UsageError } from '../../util/errors.js';
import type { SampleRequest } from '../registry.js';
import type { Decoder } from '../nsp/sampling.js';
import { applyLoraFiles } from '../../lora/files.js';
import { concatConditions, disposeCondition, type DitPipeline, loadDitModel, type LoadedDit, scheduleOf } from './model.js';
import { defaultSamplerFor } from './schema.js';

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

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'prompt';
}

/**
 * `scaleforge sample` for a DiT: `n` PNGs per prompt (text models) or per class (class models),
 * sample j using noise stream seed + j, with the run's sampler / steps / guidance unless the request
 * overrides them; procedural captions get their fidelity score printed. Returns the files written.
 */
export async function sampleDit(target: string, req: SampleRequest): Promise<string[]> {
  const loaded = loadDitModel(target, { ema: req.ema });
  try {
    return await sampleLoadedDit(loaded, req);
  } finally {
    loaded.dispose();
  }
}

/** `sampleDit` on a loaded model, with `req.loras` (FILE[:strength]) applied to the DiT for the duration. */
export async function sampleLoadedDit(loaded: LoadedDit, req: SampleRequest): Promise<string[]> {
  const applied = applyLoraFiles(loaded.pipeline.dit, req.loras ?? []);
  if (applied.modules.length) req.log(`LoRA: ${(req.loras ?? []).join(', ')} applied to ${applied.modules.length} module(s)`);
  try {
    const p = loaded.pipeline;
    const arch = p.architecture;
    const classes = req.classes ?? [];
    if (p.isText && classes.length) throw new UsageError('--class: this DiT is text-conditioned; give --prompt instead');
    if (!p.isText && req.prompts.length) throw new UsageError('--prompt: this DiT is class-conditioned; give --class instead');
    if (p.isText && !req.prompts.length) throw new UsageError('--prompt: a text-conditioned DiT needs at least one prompt');
    if (!p.isText && !classes.length) throw new UsageError(`--class: a class-conditioned DiT needs at least one class label (0…${arch.model.numClasses - 1})`);
    const d = arch.sampling ?? { sampler: defaultSamplerFor(arch.objective.type), steps: 25, cfg: 4, eta: 0 };
    const settings: DitSampleSettings = { sampler: req.sampler ?? d.sampler, steps: req.steps ?? d.steps, cfg: req.cfg ?? d.cfg, eta: req.eta ?? d.eta, seed: req.seed };
    if (!(Number.isInteger(settings.steps) && settings.steps >= 1)) throw new UsageError(`--steps: expected a positive integer, got ${settings.steps}`);
    if (!(settings.cfg >= 0)) throw new UsageError(`--cfg: expected a scale ≥ 0, got ${settings.cfg}`);
    if (!(settings.eta >= 0 && settings.eta <= 1)) throw new UsageError(`--eta: expected a value in [0, 1], got ${settings.eta}`);
    fs.mkdirSync(req.out, { recursive: true });
    const written: string[] = [];
    const groups: { name: string; requests: DitRequests; prompt?: string }[] = p.isText
      ? req.prompts.map((q) => ({ name: slug(q), requests: { prompts: new Array<string>(req.n).fill(q) }, prompt: q }))
      : classes.map((k) => ({ name: `class${k}${arch.classNames?.[k] ? `-${slug(arch.classNames[k]!)}` : ''}`, requests: { classes: new Array<number>(req.n).fill(k) } }));
    for (const g of groups) {
      const x = generateDit(p, g.requests, settings);
      const images = await toImages(x, loaded.decode);
      x.dispose();
      for (let j = 0; j < images.length; j++) {
        const file = path.join(req.out, `${g.name}-seed${req.seed + j}.png`);
        await savePng(file, images[j]!.rgb, images[j]!.width, images[j]!.height);
        written.push(file);
        if (g.prompt && parseProceduralCaption(g.prompt)) {
          const f = scoreCaptionFidelity(images[j]!, g.prompt);
          const ok = (b: boolean) => (b ? 'ok' : 'no');
          req.log(`${file}  fidelity ${(f.score * 100).toFixed(0)}% (colour ${ok(f.color)}, shape ${ok(f.shape)}, position ${ok(f.position)}, background ${ok(f.background)})`);
        } else req.log(file);
      }
    }
    req.log(
      `${written.length} PNG(s) from ${loaded.source}${loaded.usedEma ? ' (EMA weights)' : ''}: ${settings.sampler}, ${settings.steps} steps, cfg ${settings.cfg}` +
        `${loaded.vae ? `, decoded by ${arch.vae!.path}` : ''}, in ${req.out}/`,
    );
    return written;
  } finally {
    applied.remove();
  }
}
