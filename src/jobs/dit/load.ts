import fs from 'node:fs';
import path from 'node:path';
import { loadModuleWeights, readSafetensorsHeader } from '../../io/safetensors.js';
import { loadVae } from '../../models/vae/index.js';
import type { AutoencoderKL } from '../../models/vae/index.js';
import { CheckpointManager } from '../../train/checkpoint.js';
import { runDirPaths } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import type { Decoder } from '../nsp/sampling.js';
import { type DitArchitecture, type DitPipeline, pipelineFromArchitecture } from './model.js';
import type { DitTrainState } from './train.js';

export interface LoadedDit {
  pipeline: DitPipeline;
  source: string;
  usedEma: boolean;
  /** Latent-space runs: generated latents → RGB through the run's VAE. */
  decode: Decoder | null;
  vae: AutoencoderKL | null;
  dispose(): void;
}

/** The kind a run folder or file belongs to ('dit', 'nsp-progressive', …), or null when it is not a Scaleforge model. */
export function scaleforgeKindOf(target: string): string | null {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) return null;
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    const finalModel = path.join(run.dir, 'model.safetensors');
    if (fs.existsSync(finalModel)) return scaleforgeKindOf(finalModel);
    const latest = new CheckpointManager(run.checkpoints).latestPath();
    return latest ? scaleforgeKindOf(latest) : null;
  }
  if (!p.endsWith('.safetensors')) return null;
  const meta = readSafetensorsHeader(p).metadata;
  if (meta['scaleforge.kind']) return meta['scaleforge.kind'];
  const state = meta['scaleforge.state'];
  if (!state) return null;
  const parsed = JSON.parse(state) as { extra?: { kind?: unknown } };
  return typeof parsed.extra?.kind === 'string' ? parsed.extra.kind : null;
}

function withDecoder(pipeline: DitPipeline, source: string, usedEma: boolean): LoadedDit {
  const ref = pipeline.architecture.vae;
  let vae: AutoencoderKL | null = null;
  if (ref) {
    if (!fs.existsSync(ref.path)) throw new UsageError(`${source}: this latent-space model is decoded by the VAE at ${ref.path}, which does not exist any more`);
    vae = loadVae(ref.path).model;
  }
  const v = vae;
  return {
    pipeline,
    source,
    usedEma,
    vae,
    decode: v ? (z) => v.decodeLatents(z) : null,
    dispose() {
      pipeline.dispose();
      v?.dispose();
    },
  };
}

/**
 * A DiT run for sampling: a run folder (its final model.safetensors, else its latest checkpoint), a
 * model.safetensors, or a training checkpoint step-*.safetensors (EMA weights unless ema is false).
 */
export function loadDitForSampling(target: string, opts: { ema?: boolean } = {}): LoadedDit {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) throw new UsageError(`--checkpoint: ${target} does not exist`);
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    const finalModel = path.join(run.dir, 'model.safetensors');
    if (fs.existsSync(finalModel)) return loadDitForSampling(finalModel, opts);
    const latest = new CheckpointManager(run.checkpoints).latestPath();
    if (!latest) throw new UsageError(`--checkpoint: ${target} has neither model.safetensors nor checkpoints/`);
    return loadDitForSampling(latest, opts);
  }
  const meta = readSafetensorsHeader(p).metadata;
  if (meta['scaleforge.kind'] === 'dit') {
    const arch = JSON.parse(meta['scaleforge.architecture']!) as DitArchitecture;
    const pipeline = pipelineFromArchitecture(arch);
    loadModuleWeights(p, pipeline, { strict: true });
    return withDecoder(pipeline.eval(), p, false);
  }
  if (meta['scaleforge.state']) {
    const ckpt = new CheckpointManager(path.dirname(p)).load(p);
    const st = ckpt.extra as Partial<DitTrainState>;
    if (st.kind !== 'dit' || !st.architecture) throw new UsageError(`${p}: not a dit checkpoint`);
    const pipeline = pipelineFromArchitecture(st.architecture);
    pipeline.loadStateDict(ckpt.model, { strict: true });
    const useEma = (opts.ema ?? true) && ckpt.ema !== null;
    if (useEma) pipeline.loadStateDict(ckpt.ema!, { strict: false });
    return withDecoder(pipeline.eval(), p, useEma);
  }
  throw new UsageError(`--checkpoint: ${target} is not a Scaleforge DiT model or checkpoint (no scaleforge.* metadata)`);
}
