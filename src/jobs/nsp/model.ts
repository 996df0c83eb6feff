import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { loadModuleWeights, readSafetensorsHeader } from '../../io/safetensors.js';
import { AutoencoderKL, loadVae } from '../../models/vae/index.js';
import { HostTensor, Module, StateDictError } from '../../nn/module.js';
import { CheckpointManager, STATE_METADATA_KEY } from '../../train/checkpoint.js';
import { runDirPaths } from '../../train/run_dir.js';
import { loadWeightsInto, readCheckpointState } from '../../train/session.js';
import { UsageError } from '../../util/errors.js';
import { NspModelConfig } from '../../models/nsp/config.js';
import { NextScaleGenerator } from '../../models/nsp/model.js';
import { createTextEncoder } from '../../models/text/registry.js';
import { TextEncoderModule, TextEncoderSpec } from '../../models/text/text_encoder.js';
import { Rng } from '../../util/rng.js';
import type { Decoder } from './sampling.js';
import type { NspRecipe } from './schema.js';

/**
 * Everything an NSP checkpoint holds: the generator (`generator.*`) and the text encoder
 * (`text_encoder.*`), so one safetensors file restores both by name.
 */
export class NspPipeline extends Module {
  readonly generator: NextScaleGenerator;
  readonly textEncoder: TextEncoderModule;

  constructor(modelConfig: NspModelConfig, textEncoder: TextEncoderModule, seed: number) {
    super();
    this.textEncoder = this.module('text_encoder', textEncoder);
    this.generator = this.module('generator', new NextScaleGenerator(modelConfig, seed));
  }
}

/** What a checkpoint records to rebuild the pipeline before its weights are loaded. */
export interface NspArchitecture {
  model: NspModelConfig;
  textEncoder: TextEncoderSpec;
  /** Latent-space runs: the VAE (folder or .safetensors) whose decoder turns generated latents into RGB. */
  vae?: { path: string };
}

export function modelConfigFromRecipe(r: NspRecipe, imageChannels: number, textDim: number, textTokenDim = textDim): NspModelConfig {
  const m = r.model;
  return {
    imageChannels,
    sizes: m.sizes,
    channels: m.channels,
    blocksPerStage: m.blocks_per_stage,
    denseLayers: m.dense_layers,
    growthChannels: m.growth_channels,
    residualScale: m.residual_scale,
    attentionMaxSize: m.attention.max_size,
    attentionHeads: m.attention.heads,
    attentionKvHeads: m.attention.kv_heads,
    attentionTokenSize: m.attention.token_size,
    condDim: m.cond_dim,
    textDim,
    textTokenDim,
    crossAttention: m.cross_attention,
    groupNormGroups: m.group_norm_groups,
    coordChannels: m.coord_channels,
    basePositionEmbedding: m.base_position_embedding,
    baseNoiseStd: m.base_noise_std,
  };
}

/** The text encoder a recipe's `text_encoder:` section describes (the NSP and DiT recipes share its keys). */
export function textEncoderSpecFromRecipe(r: { text_encoder: Pick<NspRecipe['text_encoder'], 'type' | 'clip_path' | 'train' | 'builtin'> }): TextEncoderSpec {
  const t = r.text_encoder;
  if (t.type === 'clip') return { kind: 'clip', path: t.clip_path ?? '', trainable: t.train };
  return {
    kind: 'builtin',
    hiddenSize: t.builtin.dim,
    numHiddenLayers: t.builtin.layers,
    numAttentionHeads: t.builtin.heads,
    contextLength: t.builtin.context,
    pooling: t.builtin.pooling,
    embeddingStd: t.builtin.embedding_std,
    trainable: t.train,
  };
}

/** A fresh pipeline for a recipe; the builtin text encoder builds its vocabulary from `captions`. */
export function buildPipeline(r: NspRecipe, imageChannels: number, captions: Iterable<string>): { pipeline: NspPipeline; arch: NspArchitecture } {
  const textEncoder = createTextEncoder(textEncoderSpecFromRecipe(r), { captions, rng: new Rng(r.seed).fork('text_encoder') });
  const model = modelConfigFromRecipe(r, imageChannels, textEncoder.pooledDim, textEncoder.dim);
  const pipeline = new NspPipeline(model, textEncoder, r.seed);
  return { pipeline, arch: { model, textEncoder: textEncoder.spec() } };
}

/** Rebuild from a checkpoint's recorded architecture (weights are loaded by the caller). */
export function pipelineFromArchitecture(arch: NspArchitecture, seed = 0): NspPipeline {
  return new NspPipeline(arch.model, createTextEncoder(arch.textEncoder, {}), seed);
}

// What a checkpoint records of the architecture, checked on load (a hand-edited or foreign state fails here).
const positive = z.number().int().positive();
const nspModelConfigSchema: z.ZodType<NspModelConfig> = z.object({
  imageChannels: positive,
  sizes: z.array(positive).min(1),
  channels: z.array(positive).min(1),
  blocksPerStage: z.array(positive).min(1),
  denseLayers: positive,
  growthChannels: positive,
  residualScale: z.number(),
  attentionMaxSize: z.number().int().min(0),
  attentionHeads: positive,
  attentionKvHeads: positive,
  attentionTokenSize: z.number().int().min(0),
  condDim: positive,
  textDim: positive,
  crossAttention: z.boolean(),
  textTokenDim: positive,
  groupNormGroups: positive,
  baseNoiseStd: z.number().min(0),
  coordChannels: z.boolean(),
  basePositionEmbedding: z.boolean().optional(),
});

export const textEncoderSpecSchema: z.ZodType<TextEncoderSpec> = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('clip'),
    path: z.string(),
    layer: z.enum(['last', 'penultimate']).optional(),
    pad: z.enum(['eot', 'zero']).optional(),
    trainable: z.boolean().optional(),
  }),
  z.object({
    kind: z.literal('builtin'),
    hiddenSize: positive.optional(),
    numHiddenLayers: positive.optional(),
    numAttentionHeads: positive.optional(),
    intermediateSize: positive.optional(),
    contextLength: positive.optional(),
    hiddenAct: z.string().optional(),
    vocab: z.unknown().optional(),
    minCount: z.number().optional(),
    maxWords: z.number().optional(),
    embeddingStd: z.number().optional(),
    pooling: z.enum(['eos', 'mean']).optional(),
    trainable: z.boolean().optional(),
  }),
]);

export const nspArchitectureSchema: z.ZodType<NspArchitecture> = z.object({
  model: nspModelConfigSchema,
  textEncoder: textEncoderSpecSchema,
  vae: z.object({ path: z.string() }).optional(),
});

/** The NSP job's part of each training checkpoint: enough to rebuild the pipeline before its weights load. */
export const nspJobStateSchema = z.strictObject({ architecture: nspArchitectureSchema });
export type NspJobState = z.infer<typeof nspJobStateSchema>;

/** Checkpoints written before the training session existed: `{ kind, stage, stageStep, globalStep, sampler, noiseRng, lossScaler, architecture }`. */
export function nspLegacyState(x: Record<string, unknown>): unknown {
  return {
    kind: x.kind,
    step: x.globalStep,
    phase: x.stage,
    phaseStep: x.stageStep,
    data: x.sampler,
    rngs: { 'teacher-noise': x.noiseRng },
    lossScaler: x.lossScaler ?? null,
    job: { architecture: x.architecture },
  };
}

// ---------------------------------------------------------------------------------------------
// A trained pipeline, ready to sample from.

export interface LoadedNsp {
  pipeline: NspPipeline;
  architecture: NspArchitecture;
  /** The last stage that has trained weights: sampling stops there. */
  lastStage: number;
  source: string;
  usedEma: boolean;
  /** Latent-space runs: generated latents → RGB through the run's VAE. Absent for pixel-space runs. */
  decode?: Decoder;
  /** The VAE behind `decode`; disposed by `dispose`. */
  vae?: AutoencoderKL;
  dispose(): void;
}

/** Attaches the VAE a latent run recorded in its architecture; pixel runs are returned as they are. */
function withDecoder(loaded: LoadedNsp): LoadedNsp {
  const ref = loaded.architecture.vae;
  if (!ref) return loaded;
  if (!fs.existsSync(ref.path)) {
    throw new UsageError(`${loaded.source}: this latent-space model is decoded by the VAE at ${ref.path}, which does not exist any more`);
  }
  const vae = loadVae(ref.path).model;
  return {
    ...loaded,
    vae,
    decode: (z) => vae.decodeLatents(z),
    dispose: () => {
      loaded.pipeline.dispose();
      vae.dispose();
    },
  };
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
    const finalModel = path.join(run.dir, NSP_MODEL_FILE);
    if (fs.existsSync(finalModel)) return withDecoder(loadFinalModel(finalModel));
    const latest = new CheckpointManager(run.checkpoints).latestPath();
    if (!latest) throw new UsageError(`--checkpoint: ${target} has neither ${NSP_MODEL_FILE} nor checkpoints/`);
    return withDecoder(loadTrainingCheckpoint(latest, opts.ema ?? true));
  }
  const header = readSafetensorsHeader(p);
  if (header.metadata[ARCHITECTURE_KEY]) return withDecoder(loadFinalModel(p));
  if (header.metadata[STATE_METADATA_KEY]) return withDecoder(loadTrainingCheckpoint(p, opts.ema ?? true));
  throw new UsageError(`--checkpoint: ${target} is not a Scaleforge NSP model or checkpoint (no scaleforge.* metadata)`);
}

/** Final model files name their kind and architecture in `__metadata__`. */
export const NSP_MODEL_FILE = 'model.safetensors';
export const KIND_KEY = 'scaleforge.kind';
const ARCHITECTURE_KEY = 'scaleforge.architecture';

export function finalModelMetadata(architecture: NspArchitecture, lastStage: number): Record<string, string> {
  return { [KIND_KEY]: 'nsp-progressive', [ARCHITECTURE_KEY]: JSON.stringify(architecture), 'scaleforge.last_stage': String(lastStage) };
}

function loadFinalModel(file: string): LoadedNsp {
  const meta = readSafetensorsHeader(file).metadata;
  if (meta[KIND_KEY] !== 'nsp-progressive') throw new UsageError(`${file}: a model of kind '${meta[KIND_KEY]}', expected 'nsp-progressive'`);
  let json: unknown;
  try {
    json = JSON.parse(meta[ARCHITECTURE_KEY] ?? '');
  } catch {
    throw new UsageError(`${file}: '${ARCHITECTURE_KEY}' metadata is not JSON`);
  }
  const arch = nspArchitectureSchema.safeParse(json);
  if (!arch.success) throw new UsageError(`${file}: '${ARCHITECTURE_KEY}' metadata does not describe an NSP pipeline (${arch.error.issues[0]?.message})`);
  const architecture = arch.data;
  const pipeline = pipelineFromArchitecture(architecture);
  try {
    loadModuleWeights(file, pipeline, { strict: true });
  } catch (e) {
    pipeline.dispose();
    if (e instanceof StateDictError) throw new UsageError(`${file}: the weights do not fit the recorded architecture:\n${e.message}`);
    throw e;
  }
  const lastStage = Number(meta['scaleforge.last_stage'] ?? architecture.model.sizes.length - 1);
  return { pipeline, architecture, lastStage, source: file, usedEma: false, dispose: () => pipeline.dispose() };
}

function loadTrainingCheckpoint(file: string, useEma: boolean): LoadedNsp {
  const ckpt = new CheckpointManager(path.dirname(file)).load(file);
  const { state, job } = readCheckpointState(ckpt, 'nsp-progressive', nspJobStateSchema, nspLegacyState);
  const pipeline = pipelineFromArchitecture(job.architecture);
  loadWeightsInto(pipeline, ckpt.model, file);
  let usedEma = false;
  if (useEma && ckpt.ema) {
    // EMA tensors are keyed by the stage's trainable groups (see StageTrainables in train.ts).
    const renamed = new Map<string, HostTensor>();
    for (const [k, v] of ckpt.ema) {
      const name = k.startsWith('stage.')
        ? `generator.stages.${state.phase}.${k.slice('stage.'.length)}`
        : k.startsWith('scale_embedding.')
          ? `generator.${k}`
          : k;
      renamed.set(name, v);
    }
    pipeline.loadStateDict(renamed, { strict: false });
    usedEma = true;
  }
  return { pipeline, architecture: job.architecture, lastStage: state.phase, source: file, usedEma, dispose: () => pipeline.dispose() };
}
