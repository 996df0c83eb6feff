import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { AutoencoderKL, loadVae, vaeConfig, type VaeConfig } from '../../models/vae/index.js';
import { CheckpointManager } from '../../train/checkpoint.js';
import { runDirPaths } from '../../train/run_dir.js';
import { loadWeightsInto, readCheckpointState } from '../../train/session.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import type { VaeRecipe } from './schema.js';

export const VAE_KIND = 'vae';
/** The diffusers-layout folder a finished run writes (use it as `vae.path` in a latent recipe). */
export const VAE_OUTPUT_DIR = 'vae';

/** The recipe's preset with its explicit overrides; `scaling_factor: auto` is settled after training. */
export function vaeConfigFromRecipe(r: VaeRecipe): VaeConfig {
  const m = r.model;
  const c = vaeConfig(m.preset);
  if (m.block_out_channels) c.blockOutChannels = [...m.block_out_channels];
  if (m.layers_per_block !== undefined) c.layersPerBlock = m.layers_per_block;
  if (m.latent_channels !== undefined) c.latentChannels = m.latent_channels;
  if (m.norm_num_groups !== undefined) c.normNumGroups = m.norm_num_groups;
  if (m.mid_block_add_attention !== undefined) c.midBlockAddAttention = m.mid_block_add_attention;
  c.scalingFactor = m.scaling_factor === 'auto' ? 1 : m.scaling_factor;
  c.sampleSize = r.data.source === 'procedural' ? r.data.procedural.size : r.data.size;
  return c;
}

const positive = z.number().int().positive();
export const vaeConfigSchema: z.ZodType<VaeConfig> = z.object({
  inChannels: positive,
  outChannels: positive,
  latentChannels: positive,
  blockOutChannels: z.array(positive).min(1),
  layersPerBlock: positive,
  normNumGroups: positive,
  scalingFactor: z.number(),
  shiftFactor: z.number(),
  sampleSize: positive,
  forceUpcast: z.boolean(),
  useQuantConv: z.boolean(),
  usePostQuantConv: z.boolean(),
  midBlockAddAttention: z.boolean(),
});

/** The VAE job's part of each training checkpoint: the configuration to rebuild the model from. */
export const vaeJobStateSchema = z.strictObject({ config: vaeConfigSchema });
export type VaeJobState = z.infer<typeof vaeJobStateSchema>;

/** Checkpoints written before the training session existed: `{ kind, step, sampler, rng, config }`. */
export function vaeLegacyState(x: Record<string, unknown>): unknown {
  return { kind: x.kind, step: x.step, phase: 0, phaseStep: x.step, data: x.sampler, rngs: { vae: x.rng }, lossScaler: null, job: { config: x.config } };
}

export interface LoadedVaeModel {
  kind: typeof VAE_KIND;
  model: AutoencoderKL;
  source: string;
  usedEma: boolean;
  dispose(): void;
}

/**
 * A trained autoencoder from a run folder (its final `vae/`, else its latest checkpoint), a
 * diffusers VAE folder or file, or a training checkpoint (EMA weights unless `ema` is false).
 */
export function loadVaeModel(target: string, opts: { ema?: boolean } = {}): LoadedVaeModel {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) throw new UsageError(`--checkpoint: ${target} does not exist`);
  const wrap = (model: AutoencoderKL, source: string, usedEma: boolean): LoadedVaeModel => ({ kind: VAE_KIND, model, source, usedEma, dispose: () => model.dispose() });
  let checkpointFile: string | null = null;
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    const finished = path.join(run.dir, VAE_OUTPUT_DIR);
    if (fs.existsSync(path.join(finished, 'config.json'))) return wrap(loadVae(finished).model, finished, false);
    checkpointFile = fs.existsSync(run.checkpoints) ? new CheckpointManager(run.checkpoints).latestPath() : null;
    if (!checkpointFile) return wrap(loadVae(p).model, p, false);
  } else if (/^step-\d+\.safetensors$/.test(path.basename(p))) checkpointFile = p;
  else return wrap(loadVae(p).model, p, false);

  const ckpt = new CheckpointManager(path.dirname(checkpointFile)).load(checkpointFile);
  const { job } = readCheckpointState(ckpt, VAE_KIND, vaeJobStateSchema, vaeLegacyState);
  const model = new AutoencoderKL(job.config, { rng: new Rng(0) });
  try {
    loadWeightsInto(model, ckpt.model, checkpointFile);
    // The EMA holds the trainable parameters only; buffers keep the raw weights' values.
    const useEma = (opts.ema ?? true) && ckpt.ema !== null;
    if (useEma && ckpt.ema) model.loadStateDict(ckpt.ema, { strict: false });
    return wrap(model, checkpointFile, useEma);
  } catch (e) {
    model.dispose();
    throw e;
  }
}
