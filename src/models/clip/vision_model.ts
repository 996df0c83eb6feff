import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../../backend/tf.js';
import { openSafetensors } from '../../io/safetensors.js';
import { Conv2d } from '../../nn/conv.js';
import { Embedding } from '../../nn/embedding.js';
import { normal } from '../../nn/init.js';
import { Linear } from '../../nn/linear.js';
import { Module } from '../../nn/module.js';
import { LayerNorm } from '../../nn/norm.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { readClipTowerConfig } from '../text/clip_text_config.js';
import { ClipEncoder } from '../text/clip_text_model.js';
import { readChecked } from '../text/hf_folder.js';

/**
 * The CLIP vision tower (ViT) with transformers' module tree, so stateDict() keys are HF's
 * (vision_model.embeddings.class_embedding, vision_model.pre_layrnorm.weight — sic — …). The encoder
 * layers are the text tower's; the vision tower only differs in its embeddings (a stride-patch conv
 * plus a learned class token) and in pooling: pooled = post_layernorm(state of the class token), while
 * last_hidden_state is the encoder output without that norm.
 */

/** transformers CLIPVisionConfig, the fields the forward depends on (camelCase). */
export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  hiddenAct: string;
  layerNormEps: number;
  /** Width of visual_projection (CLIPVisionModelWithProjection); null = no projection. */
  projectionDim: number | null;
}

/** CLIPVisionConfig defaults (= openai/clip-vit-base-patch32's vision tower). */
export const CLIP_VISION_DEFAULTS: ClipVisionConfig = {
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  imageSize: 224,
  patchSize: 32,
  numChannels: 3,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
  projectionDim: null,
};

const INT_FIELDS = {
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_hidden_layers: 'numHiddenLayers',
  num_attention_heads: 'numAttentionHeads',
  image_size: 'imageSize',
  patch_size: 'patchSize',
  num_channels: 'numChannels',
} as const;

/**
 * Read an HF config.json object: a CLIPVisionConfig, or a CLIPConfig whose `vision_config` holds it.
 * `hasProjection` says whether the weights carry visual_projection.weight.
 */
export function parseClipVisionConfig(raw: unknown, where: string, hasProjection = false): ClipVisionConfig {
  const cfg = readClipTowerConfig(raw, where, 'vision_config', CLIP_VISION_DEFAULTS, INT_FIELDS, 1, hasProjection, 'visual_projection.weight');
  validateClipVisionConfig(cfg, where);
  return cfg;
}

export function validateClipVisionConfig(cfg: ClipVisionConfig, where: string): void {
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new UsageError(`${where}: hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`);
  }
  if (cfg.imageSize % cfg.patchSize !== 0) throw new UsageError(`${where}: image_size ${cfg.imageSize} is not divisible by patch_size ${cfg.patchSize}`);
}

export interface ClipVisionOutput {
  /** [B, 1 + patches, D]: encoder output, before post_layernorm. */
  lastHiddenState: tf.Tensor3D;
  /** [B, D]: post_layernorm(class token). */
  pooled: tf.Tensor2D;
  /** [B, projectionDim]: visual_projection(pooled), when the model has a projection. */
  imageEmbeds: tf.Tensor2D | null;
}

class ClipVisionEmbeddings extends Module {
  readonly classEmbedding: tf.Variable;
  readonly patchEmbedding: Conv2d;
  readonly positionEmbedding: Embedding;
  constructor(private readonly cfg: ClipVisionConfig, rng: Rng) {
    super();
    const d = cfg.hiddenSize;
    this.classEmbedding = this.param('class_embedding', normal([d], 1, rng.fork('class')));
    this.patchEmbedding = this.module(
      'patch_embedding',
      new Conv2d(cfg.numChannels, d, cfg.patchSize, { stride: cfg.patchSize, padding: 0, bias: false, rng: rng.fork('patch') }),
    );
    const patches = (cfg.imageSize / cfg.patchSize) ** 2;
    this.positionEmbedding = this.module('position_embedding', new Embedding(patches + 1, d, { rng: rng.fork('position'), std: 0.02 }));
  }
  /** pixels [B, H, W, C] (NHWC) → [B, 1 + patches, D]; the patch order is row-major, as HF's flatten(2). */
  forward(pixels: tf.Tensor4D): tf.Tensor3D {
    return tf.tidy(() => {
      const b = pixels.shape[0];
      const d = this.cfg.hiddenSize;
      const grid = this.patchEmbedding.forward(pixels);
      const patches = grid.reshape([b, -1, d]);
      const cls = this.classEmbedding.reshape([1, 1, d]).tile([b, 1, 1]);
      return tf.concat([cls, patches], 1).add(this.positionEmbedding.weight) as tf.Tensor3D;
    });
  }
}

/** HF CLIPVisionTransformer (the `vision_model` submodule). */
export class ClipVisionTransformer extends Module {
  readonly embeddings: ClipVisionEmbeddings;
  readonly preLayrnorm: LayerNorm;
  readonly encoder: ClipEncoder;
  readonly postLayernorm: LayerNorm;
  constructor(readonly config: ClipVisionConfig, rng: Rng, init = true) {
    super();
    this.embeddings = this.module('embeddings', new ClipVisionEmbeddings(config, rng.fork('embeddings')));
    this.preLayrnorm = this.module('pre_layrnorm', new LayerNorm(config.hiddenSize, config.layerNormEps));
    this.encoder = this.module('encoder', new ClipEncoder(config, rng.fork('encoder'), init));
    this.postLayernorm = this.module('post_layernorm', new LayerNorm(config.hiddenSize, config.layerNormEps));
  }

  forward(pixels: tf.Tensor): Omit<ClipVisionOutput, 'imageEmbeds'> {
    const c = this.config;
    const [, h, w, ch] = pixels.shape;
    if (pixels.rank !== 4 || h !== c.imageSize || w !== c.imageSize || ch !== c.numChannels) {
      throw new UsageError(`CLIP vision model expects pixels [batch, ${c.imageSize}, ${c.imageSize}, ${c.numChannels}] (NHWC), got [${pixels.shape}]`);
    }
    return tf.tidy(() => {
      // Every token attends to every token: an all-zero additive mask.
      const noMask = tf.scalar(0);
      let x = this.preLayrnorm.forward(this.embeddings.forward(pixels as tf.Tensor4D)) as tf.Tensor3D;
      for (const layer of this.encoder.layers) x = layer.forward(x, noMask);
      const cls = x.slice([0, 0, 0], [-1, 1, -1]).squeeze([1]);
      return { lastHiddenState: x, pooled: this.postLayernorm.forward(cls) as tf.Tensor2D };
    });
  }
}

/** HF CLIPVisionModel, or CLIPVisionModelWithProjection when config.projectionDim is set. */
export class ClipVisionModel extends Module {
  readonly visionModel: ClipVisionTransformer;
  readonly visualProjection: Linear | null;
  /** initWeights false: skip HF's initialisation of the linear layers (weights will be loaded). */
  constructor(readonly config: ClipVisionConfig, opts: { rng?: Rng; initWeights?: boolean } = {}) {
    super();
    validateClipVisionConfig(config, 'CLIP vision config');
    const rng = opts.rng ?? new Rng(0);
    this.visionModel = this.module('vision_model', new ClipVisionTransformer(config, rng.fork('vision_model'), opts.initWeights ?? true));
    this.visualProjection =
      config.projectionDim === null
        ? null
        : this.module('visual_projection', new Linear(config.hiddenSize, config.projectionDim, { bias: false, rng: rng.fork('proj') }));
  }

  /** pixels: [B, imageSize, imageSize, channels], NHWC, already normalised (see preprocess.ts). */
  forward(pixels: tf.Tensor): ClipVisionOutput {
    const out = this.visionModel.forward(pixels);
    const imageEmbeds = this.visualProjection ? (this.visualProjection.forward(out.pooled) as tf.Tensor2D) : null;
    return { ...out, imageEmbeds };
  }
}

export function disposeClipVisionOutput(out: ClipVisionOutput): void {
  out.lastHiddenState.dispose();
  out.pooled.dispose();
  out.imageEmbeds?.dispose();
}

/** Checkpoint keys the vision tower consumes: not HF's position_ids buffer, nor a full CLIPModel's text side. */
function isVisionWeight(name: string): boolean {
  if (name === 'vision_model.embeddings.position_ids') return false;
  return name.startsWith('vision_model.') || name === 'visual_projection.weight';
}

/**
 * A CLIP vision tower from a local HF folder (config.json with a CLIPVisionConfig or a CLIPConfig,
 * model.safetensors or model.safetensors.index.json): a CLIPVisionModel(WithProjection) or a full CLIPModel.
 */
export function loadClipVisionFromHfFolder(dir: string): { model: ClipVisionModel; config: ClipVisionConfig } {
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new UsageError(`${dir}: no config.json: not a Hugging Face CLIP model folder`);
  const weightsPath = ['model.safetensors', 'model.safetensors.index.json'].map((f) => join(dir, f)).find((p) => existsSync(p));
  if (!weightsPath) throw new UsageError(`${dir}: missing model.safetensors or model.safetensors.index.json`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (e) {
    throw new UsageError(`${configPath}: not valid JSON (${(e as Error).message})`);
  }
  const source = openSafetensors(weightsPath);
  try {
    const names = source.names().filter(isVisionWeight);
    const config = parseClipVisionConfig(raw, configPath, names.includes('visual_projection.weight'));
    const model = new ClipVisionModel(config, { initWeights: false });
    try {
      model.loadStateDict(readChecked(source, names, model, 'CLIP vision'), { strict: true });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return { model, config };
  } finally {
    source.close();
  }
}
