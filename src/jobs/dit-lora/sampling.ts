import fs from 'node:fs';
import path from 'node:path';
import { aggregateFidelity, type FidelitySummary, scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { brandRate } from '../../data/brand_signature.js';
import type { RgbImage } from '../../data/dataset.js';
import { saveGridPng } from '../../io/image.js';
import type { LoraModel } from '../../lora/inject.js';
import { UsageError } from '../../util/errors.js';
import type { LoadedDit } from '../dit/model.js';
import { type DitSampleSettings, generateDit, sampleLoadedDit, toImages } from '../dit/sampling.js';
import { fidelityPrompts } from '../nsp/sampling.js';
import type { SampleRequest } from '../registry.js';
import { ADAPTER_INFO_FILE, adapterInfoSchema, loadBase, withStrength } from './model.js';

export function withTriggerWord(trigger: string, prompt: string): string {
  return `${trigger}, ${prompt}`;
}

async function imagesFor(base: LoadedDit, prompts: string[], settings: DitSampleSettings): Promise<RgbImage[]> {
  const x = generateDit(base.pipeline, { prompts }, settings);
  const images = await toImages(x, base.decode);
  x.dispose();
  return images;
}

export interface LoraGridOptions {
  base: LoadedDit;
  lora: LoraModel;
  prompts: string[];
  trigger: string;
  strengths: number[];
  settings: DitSampleSettings;
}

/**
 * One PNG: a row per prompt; per strength two columns, the prompt without and with the trigger, so
 * the signature showing up (or not) is seen side by side. Same noise seed along a row.
 */
export async function saveLoraGrid(file: string, o: LoraGridOptions): Promise<RgbImage> {
  const columns: { images: RgbImage[]; label: string }[] = [];
  const settings = { ...o.settings, seed: o.settings.seed };
  for (const s of o.strengths) {
    for (const trig of [false, true]) {
      const prompts = o.prompts.map((q) => (trig ? withTriggerWord(o.trigger, q) : q));
      const images = await withStrength(o.lora, s, () => imagesFor(o.base, prompts, { ...settings, seed: settings.seed }));
      columns.push({ images, label: `${trig ? o.trigger : 'no trigger'} @${s}` });
    }
  }
  const images: RgbImage[] = [];
  const labels: string[] = [];
  for (let row = 0; row < o.prompts.length; row++) {
    for (const c of columns) {
      images.push(c.images[row]!);
      labels.push(row === 0 ? c.label : '');
    }
  }
  const scale = Math.max(1, Math.round(64 / images[0]!.width));
  return saveGridPng(file, images, { cols: columns.length, scale, labels });
}

export interface BrandEvaluation {
  /** Share of samples with the signature: trigger prompts with the adapter, plain prompts with it, trigger prompts on the base. */
  brandRateWithTrigger: number;
  brandRateWithoutTrigger: number;
  brandRateBase: number;
  /** Caption fidelity of the plain prompts on the base and with the adapter. */
  fidelityBefore: FidelitySummary;
  fidelityAfter: FidelitySummary;
}

/** Held-out procedural prompts, sampled with and without the trigger, with the adapter at strength 1 and off. */
export async function evaluateBrand(base: LoadedDit, lora: LoraModel, trigger: string, count: number, settings: DitSampleSettings): Promise<BrandEvaluation> {
  const plain = fidelityPrompts(count);
  const triggered = plain.map((q) => withTriggerWord(trigger, q));
  const fidelity = (images: RgbImage[]) => aggregateFidelity(images.map((im, i) => scoreCaptionFidelity(im, plain[i]!)));
  const withTrig = await imagesFor(base, triggered, settings);
  const withoutTrig = await imagesFor(base, plain, settings);
  const { baseTrig, basePlain } = await withStrength(lora, 0, async () => ({ baseTrig: await imagesFor(base, triggered, settings), basePlain: await imagesFor(base, plain, settings) }));
  return {
    brandRateWithTrigger: brandRate(withTrig),
    brandRateWithoutTrigger: brandRate(withoutTrig),
    brandRateBase: brandRate(baseTrig),
    fidelityBefore: fidelity(basePlain),
    fidelityAfter: fidelity(withoutTrig),
  };
}

/**
 * `scaleforge sample` on a finished dit-lora run folder: its base with the run's adapter (strength 1)
 * and any `--lora` files on top, then the DiT's sampling.
 */
export async function sampleDitLora(target: string, req: SampleRequest): Promise<string[]> {
  const infoFile = path.join(target, ADAPTER_INFO_FILE);
  if (!fs.existsSync(infoFile)) throw new UsageError(`${target}: a dit-lora run without ${ADAPTER_INFO_FILE} (unfinished?); sample its base with --lora instead`);
  const parsed = adapterInfoSchema.safeParse(JSON.parse(fs.readFileSync(infoFile, 'utf8')));
  if (!parsed.success) throw new UsageError(`${infoFile}: not an adapter description (${parsed.error.issues[0]?.message})`);
  const base = loadBase(parsed.data.base);
  try {
    return await sampleLoadedDit(base, { ...req, loras: [path.join(target, parsed.data.file), ...(req.loras ?? [])] });
  } finally {
    base.dispose();
  }
}
