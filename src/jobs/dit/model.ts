import { tf } from '../../backend/tf.js';
import { DiffusionSchedule, linearBetas } from '../../diffusion/schedule.js';
import { type DitConfig, ditConfigs, validateDitConfig } from '../../models/dit/config.js';
import { DiT, type DitCondition } from '../../models/dit/model.js';
import { createTextEncoder } from '../../models/text/registry.js';
import { type TextEncoderModule, type TextEncoderSpec, type TextEncoding } from '../../models/text/text_encoder.js';
import { Module } from '../../nn/module.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import type { DitRecipe } from './schema.js';

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

export function textEncoderSpecFromRecipe(r: DitRecipe): TextEncoderSpec | null {
  if (r.conditioning.type !== 'text') return null;
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
  const spec = textEncoderSpecFromRecipe(r);
  const text = spec ? createTextEncoder(spec, { captions, rng: new Rng(r.seed).fork('text_encoder') }) : null;
  const model = ditConfigFromRecipe(r, inputSize, channels, text);
  const arch: DitArchitecture = { model, textEncoder: text ? text.spec() : null, objective: objectiveFromRecipe(r), ...extra };
  return new DitPipeline(arch, text, r.seed);
}

/** Rebuild from a checkpoint's recorded architecture (weights are loaded by the caller). */
export function pipelineFromArchitecture(arch: DitArchitecture, seed = 0): DitPipeline {
  return new DitPipeline(arch, arch.textEncoder ? createTextEncoder(arch.textEncoder, {}) : null, seed);
}
