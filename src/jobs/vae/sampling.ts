import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { RgbImage } from '../../data/dataset.js';
import { saveGridPng, tensorToRgb8 } from '../../io/image.js';
import { AutoencoderKL } from '../../models/vae/index.js';
import type { SampleRequest } from '../registry.js';
import { EvalImages, heldOutProcedural } from './data.js';
import { loadVaeModel } from './model.js';
import { psnr } from './psnr.js';

/** Posterior-mean reconstructions, clamped to [-1, 1], of every eval image (host array, same layout). */
export function reconstructImages(model: AutoencoderKL, images: EvalImages, batchSize = 8): Float32Array {
  const per = images.size * images.size * 3;
  const out = new Float32Array(images.count * per);
  for (let start = 0; start < images.count; start += batchSize) {
    const n = Math.min(batchSize, images.count - start);
    const rec = tf.tidy(() => {
      const x = tf.tensor4d(images.data.subarray(start * per, (start + n) * per), [n, images.size, images.size, 3]);
      const { reconstruction, posterior } = model.forward(x);
      posterior.dispose();
      return reconstruction.clipByValue(-1, 1);
    });
    out.set(rec.dataSync(), start * per);
    rec.dispose();
  }
  return out;
}

/** PSNR in dB of posterior-mean reconstructions, both sides mapped from [-1, 1] to [0, 1]. */
export function reconstructionPsnr(model: AutoencoderKL, images: EvalImages): number {
  const rec = reconstructImages(model, images);
  const toUnit = (a: Float32Array): Float32Array => a.map((v) => (v + 1) / 2);
  return psnr(toUnit(images.data), toUnit(rec));
}

/**
 * 1 / std of the unscaled latent means over `images`: the factor that gives a generative model
 * roughly unit-variance latents (how LDM arrived at 0.18215 for SD's VAE).
 */
export function latentScalingFactor(model: AutoencoderKL, images: EvalImages, batchSize = 8): number {
  const per = images.size * images.size * 3;
  let sum = 0;
  let sumSq = 0;
  let n = 0;
  for (let start = 0; start < images.count; start += batchSize) {
    const b = Math.min(batchSize, images.count - start);
    const x = tf.tensor4d(images.data.subarray(start * per, (start + b) * per), [b, images.size, images.size, 3]);
    const posterior = model.encode(x);
    x.dispose();
    const mean = posterior.mean.dataSync();
    posterior.dispose();
    for (const v of mean) {
      sum += v;
      sumSq += v * v;
    }
    n += mean.length;
  }
  const std = Math.sqrt(Math.max(0, sumSq / n - (sum / n) ** 2));
  if (!(std > 0) || !Number.isFinite(std)) throw new Error(`latent means have std ${std}; cannot derive a scaling factor`);
  return Number((1 / std).toPrecision(5));
}

/** Originals on the first row, reconstructions under them. */
export async function saveReconstructionGrid(file: string, model: AutoencoderKL, images: EvalImages, count: number): Promise<RgbImage> {
  const shown: EvalImages = { ...images, count: Math.min(count, images.count) };
  const per = images.size * images.size * 3;
  const rec = reconstructImages(model, shown);
  const toRgb = async (data: Float32Array): Promise<RgbImage[]> => {
    const t = tf.tensor4d(data.subarray(0, shown.count * per), [shown.count, images.size, images.size, 3]);
    const out = await tensorToRgb8(t, { range: 'signed' });
    t.dispose();
    return out;
  };
  const cells = [...(await toRgb(images.data)), ...(await toRgb(rec))];
  const scale = Math.max(1, Math.round(64 / images.size));
  return saveGridPng(file, cells, { cols: shown.count, scale });
}

/**
 * `scaleforge sample` for a VAE: reconstructions of `n` held-out procedural images at the model's
 * sample size (originals on top, reconstructions below) and their PSNR. Prompts do not apply.
 */
export async function sampleVae(target: string, req: SampleRequest): Promise<string[]> {
  const loaded = loadVaeModel(target, { ema: req.ema });
  try {
    const size = loaded.model.config.sampleSize;
    const images = await heldOutProcedural({ size, seed: req.seed }, req.n);
    fs.mkdirSync(req.out, { recursive: true });
    const file = path.join(req.out, `reconstructions-seed${req.seed}.png`);
    await saveReconstructionGrid(file, loaded.model, images, req.n);
    req.log(`${file}: ${req.n} procedural ${size}px images (top) and their reconstructions (bottom) from ${loaded.source}${loaded.usedEma ? ' (EMA weights)' : ''}`);
    req.log(`reconstruction PSNR: ${reconstructionPsnr(loaded.model, images).toFixed(2)} dB`);
    return [file];
  } finally {
    loaded.dispose();
  }
}
