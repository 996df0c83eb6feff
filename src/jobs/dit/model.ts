import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { tf } from '../../backend/tf.js';
import { DiffusionSchedule, linearBetas } from '../../diffusion/schedule.js';
import { loadModuleWeights, readSafetensorsHeader } from '../../io/safetensors.js';
import { loadVae, type AutoencoderKL } from '../../models/vae/index.js';
import { StateDictError } from '../../nn/module.js';
import { CheckpointManager, STATE_METADATA_KEY } from '../../train/checkpoint.js';
import { runDirPaths } from '../../train/run_dir.js';
import { loadWeightsInto, readCheckpointState } from '../../train/session.js';
import { textEncoderSpecFromRecipe, textEncoderSpecSchema } from '../nsp/model.js';
import type { Decoder } from '../nsp/sampling.js';
import { type DitConfig, ditConfigs, validateDitConfig } from '../../models/dit/config.js';
import { DiT, type DitCondition } from '../../models/dit/model.js';
import { createTextEncoder } from '../../models/text/registry.js';
import type { TextEncoderModule, TextEncoderSpec, TextEncoding } from '../../models/text/text_encoder.js';
import { Module } from '../../nn/module.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { defaultSamplerFor, type DitRecipe } from './schema.js';

/** How a DiT run's network is trained and sampled: what it predicts and on which time axis. */
export interface DitObjective {
  type: 'flow' | 'ddpm';
  numTimesteps: number;
  betaStart: number;
  betaEnd: number;
  timeSampling: 'uniform' | 'logit_normal';
  logitMean: number;
  logitStd: number;
  shift: number;
  minSnrGamma: number | null;
}

/** Everything needed to rebuild a DiT run's modules before its weights are loaded (stored in checkpoints). */
export interface DitArchitecture {
  model: DitConfig;
  textEncoder: TextEncoderSpec | null;
  objective: DitObjective;
  /** Latent-space runs: the VAE whose decoder turns generated latents into RGB. */
  vae?: { path: string };
  /** Class-conditioned runs on an image folder: class index → subfolder name. */
  classNames?: string[];
  /** The recipe's sampling settings: what `scaleforge sample` uses unless told otherwise. */
  sampling?: { sampler: string; steps: number; cfg: number; eta: number };
}

/**
 * What a DiT checkpoint holds: the transformer (`dit.*`) and, for text conditioning, the text
 * encoder (`text_encoder.*`), so one safetensors file restores both by name.
 */
export class DitPipeline extends Module {
  readonly dit: DiT;
  readonly textEncoder: TextEncoderModule | null;

  constructor(readonly architecture: DitArchitecture, textEncoder: TextEncoderModule | null, seed: number) {
    super();
    if ((architecture.model.conditioning === 'text') !== (textEncoder !== null)) {
      throw new Error('DitPipeline: a text-conditioned DiT needs a text encoder and a class-conditioned one none');
    }
    this.textEncoder = textEncoder ? this.module('text_encoder', textEncoder) : null;
    this.dit = this.module('dit', new DiT(architecture.model, { rng: new Rng(seed).fork('dit') }));
  }

  get isText(): boolean {
    return this.textEncoder !== null;
  }

  /**
   * The model's condition for prompts (text) or labels (class); `nullCondition` gives the
   * classifier-free-guidance null: the empty prompt's encoding or the null class.
   */
  encodePrompts(prompts: string[]): TextEncoding {
    if (!this.textEncoder) throw new UsageError('this DiT is class-conditioned: sample it with --class, not --prompt');
    return this.textEncoder.encode(prompts);
  }

  classCondition(labels: readonly number[]): tf.Tensor1D {
    const c = this.architecture.model;
    if (this.textEncoder) throw new UsageError('this DiT is text-conditioned: sample it with --prompt, not --class');
    for (const l of labels) {
      if (!(Number.isInteger(l) && l >= 0 && l < c.numClasses)) throw new UsageError(`class label ${l} is out of range: this model has classes 0…${c.numClasses - 1}`);
    }
    return tf.tensor1d(Int32Array.from(labels), 'int32');
  }

  nullCondition(n: number): DitCondition {
    if (this.textEncoder) return this.textEncoder.encode(new Array<string>(n).fill(''));
    if (this.architecture.model.classDropoutProb <= 0) throw new UsageError('this class-conditioned DiT has no null class (class dropout 0): use --cfg 1');
    return tf.fill([n], this.architecture.model.numClasses, 'int32') as tf.Tensor1D;
  }
}

/** Condition batch [a; b] for one CFG forward pass. */
export function concatConditions(a: DitCondition, b: DitCondition): DitCondition {
  if (a instanceof tf.Tensor && b instanceof tf.Tensor) return tf.concat([a, b], 0);
  if (a instanceof tf.Tensor || b instanceof tf.Tensor) throw new Error('cannot batch a class condition with a text condition');
  return { pooled: tf.concat([a.pooled, b.pooled], 0), tokens: tf.concat([a.tokens, b.tokens], 0), mask: tf.concat([a.mask, b.mask], 0) };
}

export function disposeCondition(c: DitCondition): void {
  if (c instanceof tf.Tensor) c.dispose();
  else tf.dispose([c.pooled, c.tokens, c.mask]);
}

export function objectiveFromRecipe(r: DitRecipe): DitObjective {
  const o = r.objective;
  return {
    type: o.type,
    numTimesteps: o.num_timesteps,
    betaStart: o.beta_start,
    betaEnd: o.beta_end,
    timeSampling: o.time_sampling,
    logitMean: o.logit_mean,
    logitStd: o.logit_std,
    shift: o.shift,
    minSnrGamma: o.min_snr_gamma ?? null,
  };
}

/** The discrete schedule of a DDPM-objective run. */
export function scheduleOf(o: DitObjective): DiffusionSchedule {
  return new DiffusionSchedule(linearBetas(o.numTimesteps, o.betaStart, o.betaEnd));
}

/** The DiT config a recipe describes, for data of `channels` × `inputSize`². */
export function ditConfigFromRecipe(r: DitRecipe, inputSize: number, channels: number, text: TextEncoderModule | null): DitConfig {
  const m = r.model;
  const base = m.variant ? ditConfigs[m.variant] : undefined;
  if (m.variant && !base) throw new UsageError(`model.variant: unknown DiT variant '${m.variant}'; known: ${Object.keys(ditConfigs).join(', ')}`);
  const config: DitConfig = {
    inputSize: m.input_size ?? inputSize,
    patchSize: base?.patchSize ?? m.patch_size,
    inChannels: channels,
    hiddenSize: base?.hiddenSize ?? m.hidden_size,
    depth: base?.depth ?? m.depth,
    numHeads: base?.numHeads ?? m.num_heads,
    mlpRatio: base?.mlpRatio ?? m.mlp_ratio,
    classDropoutProb: r.conditioning.type === 'class' ? r.conditioning.dropout : 0,
    numClasses: r.conditioning.type === 'class' ? r.conditioning.num_classes : 0,
    learnSigma: m.learn_sigma,
    conditioning: r.conditioning.type,
    ...(text ? { textPooledDim: text.pooledDim, textTokenDim: text.dim, crossAttention: r.conditioning.cross_attention } : {}),
  };
  if (config.inputSize !== inputSize) throw new UsageError(`model.input_size ${config.inputSize} does not match the data: ${inputSize}×${inputSize}×${channels} ${r.space === 'latent' ? 'latents' : 'pixels'}`);
  try {
    return validateDitConfig(config);
  } catch (e) {
    throw new UsageError(`model: ${(e as Error).message}`);
  }
}

/** A fresh pipeline for a recipe; the builtin text encoder builds its vocabulary from `captions`. */
export function buildDitPipeline(r: DitRecipe, inputSize: number, channels: number, captions: Iterable<string>, extra: Pick<DitArchitecture, 'vae' | 'classNames'> = {}): DitPipeline {
  const spec = r.conditioning.type === 'text' ? textEncoderSpecFromRecipe(r) : null;
  const text = spec ? createTextEncoder(spec, { captions, rng: new Rng(r.seed).fork('text_encoder') }) : null;
  const model = ditConfigFromRecipe(r, inputSize, channels, text);
  const sampling = { sampler: r.sample.sampler ?? defaultSamplerFor(r.objective.type), steps: r.sample.steps, cfg: r.sample.cfg, eta: r.sample.eta };
  const arch: DitArchitecture = { model, textEncoder: text ? text.spec() : null, objective: objectiveFromRecipe(r), sampling, ...extra };
  return new DitPipeline(arch, text, r.seed);
}

/** Rebuild from a checkpoint's recorded architecture (weights are loaded by the caller). */
export function pipelineFromArchitecture(arch: DitArchitecture, seed = 0): DitPipeline {
  return new DitPipeline(arch, arch.textEncoder ? createTextEncoder(arch.textEncoder, {}) : null, seed);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint state and loading for sampling.

export const DIT_KIND = 'dit';
export const DIT_MODEL_FILE = 'model.safetensors';
const KIND_KEY = 'scaleforge.kind';
const ARCHITECTURE_KEY = 'scaleforge.architecture';

const positive = z.number().int().positive();
const ditConfigSchema: z.ZodType<DitConfig> = z.object({
  inputSize: positive,
  patchSize: positive,
  inChannels: positive,
  hiddenSize: positive,
  depth: positive,
  numHeads: positive,
  mlpRatio: z.number().positive(),
  classDropoutProb: z.number().min(0).max(1),
  numClasses: z.number().int().min(0),
  learnSigma: z.boolean(),
  conditioning: z.enum(['class', 'text']).optional(),
  textPooledDim: positive.optional(),
  textTokenDim: positive.optional(),
  crossAttention: z.boolean().optional(),
});

const ditObjectiveSchema: z.ZodType<DitObjective> = z.object({
  type: z.enum(['flow', 'ddpm']),
  numTimesteps: positive,
  betaStart: z.number().positive(),
  betaEnd: z.number().positive(),
  timeSampling: z.enum(['uniform', 'logit_normal']),
  logitMean: z.number(),
  logitStd: z.number().positive(),
  shift: z.number().positive(),
  minSnrGamma: z.number().positive().nullable(),
});

export const ditArchitectureSchema: z.ZodType<DitArchitecture> = z.object({
  model: ditConfigSchema,
  textEncoder: textEncoderSpecSchema.nullable(),
  objective: ditObjectiveSchema,
  vae: z.object({ path: z.string() }).optional(),
  classNames: z.array(z.string()).optional(),
  sampling: z.object({ sampler: z.string(), steps: positive, cfg: z.number().min(0), eta: z.number().min(0).max(1) }).optional(),
});

/** The DiT job's part of each training checkpoint: enough to rebuild the pipeline before its weights load. */
export const ditJobStateSchema = z.strictObject({ architecture: ditArchitectureSchema });
export type DitJobState = z.infer<typeof ditJobStateSchema>;

export function ditModelMetadata(architecture: DitArchitecture): Record<string, string> {
  return { [KIND_KEY]: DIT_KIND, [ARCHITECTURE_KEY]: JSON.stringify(architecture) };
}

export interface LoadedDit {
  kind: typeof DIT_KIND;
  pipeline: DitPipeline;
  source: string;
  usedEma: boolean;
  /** Latent-space runs: generated latents → RGB through the run's VAE; null for pixel space. */
  decode: Decoder | null;
  vae: AutoencoderKL | null;
  /** The VAE's weights file (what a latent cache is keyed by); null for pixel space. */
  vaeWeightsPath: string | null;
  dispose(): void;
}

function withDecoder(pipeline: DitPipeline, source: string, usedEma: boolean): LoadedDit {
  const ref = pipeline.architecture.vae;
  let vae: AutoencoderKL | null = null;
  let vaeWeightsPath: string | null = null;
  if (ref) {
    if (!fs.existsSync(ref.path)) {
      pipeline.dispose();
      throw new UsageError(`${source}: this latent-space model is decoded by the VAE at ${ref.path}, which does not exist any more`);
    }
    const loaded = loadVae(ref.path);
    vae = loaded.model;
    vaeWeightsPath = loaded.weightsPath;
  }
  const v = vae;
  return {
    kind: DIT_KIND,
    pipeline: pipeline.eval(),
    source,
    usedEma,
    vae,
    vaeWeightsPath,
    decode: v ? (x) => v.decodeLatents(x) : null,
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
export function loadDitModel(target: string, opts: { ema?: boolean } = {}): LoadedDit {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) throw new UsageError(`--checkpoint: ${target} does not exist`);
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    const finalModel = path.join(run.dir, DIT_MODEL_FILE);
    if (fs.existsSync(finalModel)) return loadDitModel(finalModel, opts);
    const latest = fs.existsSync(run.checkpoints) ? new CheckpointManager(run.checkpoints).latestPath() : null;
    if (!latest) throw new UsageError(`--checkpoint: ${target} has neither ${DIT_MODEL_FILE} nor checkpoints/`);
    return loadDitModel(latest, opts);
  }
  const meta = readSafetensorsHeader(p).metadata;
  if (meta[KIND_KEY] !== undefined) {
    if (meta[KIND_KEY] !== DIT_KIND) throw new UsageError(`${p}: a model of kind '${meta[KIND_KEY]}', expected '${DIT_KIND}'`);
    let json: unknown;
    try {
      json = JSON.parse(meta[ARCHITECTURE_KEY] ?? '');
    } catch {
      throw new UsageError(`${p}: '${ARCHITECTURE_KEY}' metadata is not JSON`);
    }
    const arch = ditArchitectureSchema.safeParse(json);
    if (!arch.success) throw new UsageError(`${p}: '${ARCHITECTURE_KEY}' metadata does not describe a DiT pipeline (${arch.error.issues[0]?.message})`);
    const pipeline = pipelineFromArchitecture(arch.data);
    try {
      loadModuleWeights(p, pipeline, { strict: true });
    } catch (e) {
      pipeline.dispose();
      if (e instanceof StateDictError) throw new UsageError(`${p}: the weights do not fit the recorded architecture:\n${e.message}`);
      throw e;
    }
    return withDecoder(pipeline, p, false);
  }
  if (!meta[STATE_METADATA_KEY]) throw new UsageError(`--checkpoint: ${target} is not a Scaleforge DiT model or checkpoint (no scaleforge.* metadata)`);
  const ckpt = new CheckpointManager(path.dirname(p)).load(p);
  const { job } = readCheckpointState(ckpt, DIT_KIND, ditJobStateSchema);
  const pipeline = pipelineFromArchitecture(job.architecture);
  try {
    loadWeightsInto(pipeline, ckpt.model, p);
    const useEma = (opts.ema ?? true) && ckpt.ema !== null;
    if (useEma && ckpt.ema) pipeline.loadStateDict(ckpt.ema, { strict: false });
    return withDecoder(pipeline, p, useEma);
  } catch (e) {
    pipeline.dispose();
    throw e;
  }
}
