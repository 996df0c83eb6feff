import { Module } from '../../nn/module.js';
import { NspModelConfig } from '../../models/nsp/config.js';
import { NextScaleGenerator } from '../../models/nsp/model.js';
import { createTextEncoder } from '../../models/text/registry.js';
import { TextEncoderModule, TextEncoderSpec } from '../../models/text/text_encoder.js';
import { Rng } from '../../util/rng.js';
import { NspRecipe } from './schema.js';

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

export function textEncoderSpecFromRecipe(r: NspRecipe): TextEncoderSpec {
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
