import fs from 'node:fs';
import path from 'node:path';
import { HostTensor } from '../../nn/module.js';
import { loadModuleWeights, readSafetensorsHeader } from '../../io/safetensors.js';
import { CheckpointManager } from '../../train/checkpoint.js';
import { runDirPaths } from '../../train/run_dir.js';
import { UsageError } from '../../util/errors.js';
import { AutoencoderKL, loadVae } from '../../models/vae/index.js';
import { NspArchitecture, NspPipeline, pipelineFromArchitecture } from './pipeline.js';
import { Decoder } from './sampling.js';
import { NspTrainState } from './train.js';

export interface LoadedNsp {
  pipeline: NspPipeline;
  architecture: NspArchitecture;
  /** The last stage that has trained weights: sampling stops there. */
  lastStage: number;
  source: string;
  usedEma: boolean;
  /** Latent-space runs: generated latents → RGB through the run's VAE. Absent for pixel-space runs. */
  decode?: Decoder;
  /** The VAE behind `decode`; the caller disposes it with the pipeline. */
  vae?: AutoencoderKL;
}

/** Attaches the VAE a latent run recorded in its architecture; pixel runs are returned as they are. */
function withDecoder(loaded: LoadedNsp): LoadedNsp {
  const ref = loaded.architecture.vae;
  if (!ref) return loaded;
  if (!fs.existsSync(ref.path)) {
    throw new UsageError(`${loaded.source}: this latent-space model is decoded by the VAE at ${ref.path}, which does not exist any more`);
  }
  const vae = loadVae(ref.path).model;
  return { ...loaded, vae, decode: (z) => vae.decodeLatents(z) };
}

/**
 * Loads an NSP pipeline for sampling from a run folder (its final `model.safetensors`, else its latest
 * checkpoint), a `model.safetensors`, or a training checkpoint `step-*.safetensors`. With a training
 * checkpoint the EMA weights of the stage in progress replace the raw ones unless `ema` is false.
 */
export function loadNspForSampling(target: string, opts: { ema?: boolean } = {}): LoadedNsp {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) throw new UsageError(`--checkpoint: ${target} does not exist`);
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    const finalModel = path.join(run.dir, 'model.safetensors');
    if (fs.existsSync(finalModel)) return withDecoder(loadFinalModel(finalModel));
    const latest = new CheckpointManager(run.checkpoints).latestPath();
    if (!latest) throw new UsageError(`--checkpoint: ${target} has neither model.safetensors nor checkpoints/`);
    return withDecoder(loadTrainingCheckpoint(latest, opts.ema ?? true));
  }
  const header = readSafetensorsHeader(p);
  if (header.metadata['scaleforge.architecture']) return withDecoder(loadFinalModel(p));
  if (header.metadata['scaleforge.state']) return withDecoder(loadTrainingCheckpoint(p, opts.ema ?? true));
  throw new UsageError(`--checkpoint: ${target} is not a Scaleforge NSP model or checkpoint (no scaleforge.* metadata)`);
}

function loadFinalModel(file: string): LoadedNsp {
  const meta = readSafetensorsHeader(file).metadata;
  if (meta['scaleforge.kind'] !== 'nsp-progressive') throw new UsageError(`${file}: not an nsp-progressive model (kind ${meta['scaleforge.kind']})`);
  const architecture = JSON.parse(meta['scaleforge.architecture']!) as NspArchitecture;
  const pipeline = pipelineFromArchitecture(architecture);
  loadModuleWeights(file, pipeline, { strict: true });
  const lastStage = Number(meta['scaleforge.last_stage'] ?? architecture.model.sizes.length - 1);
  return { pipeline, architecture, lastStage, source: file, usedEma: false };
}

function loadTrainingCheckpoint(file: string, useEma: boolean): LoadedNsp {
  const ckpt = new CheckpointManager(path.dirname(file)).load(file);
  const state = ckpt.extra as unknown as NspTrainState;
  if (state.kind !== 'nsp-progressive') throw new UsageError(`${file}: not an nsp-progressive checkpoint`);
  const pipeline = pipelineFromArchitecture(state.architecture);
  pipeline.loadStateDict(ckpt.model, { strict: true });
  let usedEma = false;
  if (useEma && ckpt.ema) {
    // EMA tensors are keyed by the stage's trainable groups (see StageTrainables in train.ts).
    const renamed = new Map<string, HostTensor>();
    for (const [k, v] of ckpt.ema) {
      const name = k.startsWith('stage.')
        ? `generator.stages.${state.stage}.${k.slice('stage.'.length)}`
        : k.startsWith('scale_embedding.')
          ? `generator.${k}`
          : k;
      renamed.set(name, v);
    }
    pipeline.loadStateDict(renamed, { strict: false });
    usedEma = true;
  }
  return { pipeline, architecture: state.architecture, lastStage: state.stage, source: file, usedEma };
}
