/**
 * Next Scale Prediction generator configuration. A run generates at `sizes[0]` from noise (the base
 * stage), then each further stage upsamples by `sizes[k+1]/sizes[k]` and adds a predicted residual.
 */
export interface NspModelConfig {
  /** Channels of the space being generated: 3 for RGB pixels, 4 for SDXL-layout VAE latents. */
  imageChannels: number;
  /** Resolutions, coarse to fine, e.g. [16, 32, 64]; each step is a factor `scaleFactor`. */
  sizes: number[];
  /** Feature channels per stage (one entry per stage, or one for all). */
  channels: number[];
  /** Residual dense blocks per stage. */
  blocksPerStage: number[];
  /** Dense 3×3 convolutions inside one residual dense block, and channels each adds. */
  denseLayers: number;
  growthChannels: number;
  /** ESRGAN's residual scaling β: out = x + β·RDB(x). */
  residualScale: number;
  /** Self-attention blocks are inserted in stages whose working resolution is ≤ this (0 = none). */
  attentionMaxSize: number;
  attentionHeads: number;
  /** Key/value heads shared by groups of query heads: = heads → MHA, 1 → MQA, in between → GQA. */
  attentionKvHeads: number;
  /** Attention runs on at most this many tokens per side (average-pooled features); 0 = full resolution. */
  attentionTokenSize: number;
  /** Dimension of the conditioning vector fed to every FiLM (text pooled + scale embedding). */
  condDim: number;
  /** Width of the text encoder's output the conditioning MLP reads. */
  textDim: number;
  /** Cross-attention from image positions to the text tokens, in the stages that have self-attention. */
  crossAttention: boolean;
  /** Width of the text encoder's per-token states (the cross-attention context). */
  textTokenDim: number;
  groupNormGroups: number;
  /** σ of the Gaussian noise latent the base stage starts from (training and sampling alike). */
  baseNoiseStd: number;
  /** Feed normalised pixel coordinates as two extra input channels to every stage. */
  coordChannels: boolean;
  /**
   * A learned embedding per base-stage position, added after conv_in (ViT's pos_embed). The base
   * input is noise, so the scene layout has to come from somewhere: with it, which pixels a
   * (shape, size, place) covers is one product of a per-position vector and the conditioning,
   * which coordinates alone must build through several nonlinear layers. Absent in older checkpoints.
   */
  basePositionEmbedding?: boolean;
}

export function perStage(values: number[], stage: number, what: string): number {
  const v = values.length === 1 ? values[0] : values[stage];
  if (v === undefined) throw new Error(`${what}: no value for stage ${stage} (got ${values.length} values)`);
  return v;
}

/** Validates the geometric facts the model relies on; returns a list of problems (empty when fine). */
export function checkNspConfig(cfg: NspModelConfig): string[] {
  const problems: string[] = [];
  if (cfg.sizes.length < 1) problems.push('sizes: need at least one resolution');
  for (let k = 1; k < cfg.sizes.length; k++) {
    if (cfg.sizes[k]! <= cfg.sizes[k - 1]!) problems.push(`sizes: must increase, got ${cfg.sizes.join(' → ')}`);
  }
  for (const [name, list] of [
    ['channels', cfg.channels],
    ['blocks_per_stage', cfg.blocksPerStage],
  ] as const) {
    if (list.length !== 1 && list.length !== cfg.sizes.length) {
      problems.push(`${name}: give one value or one per stage (${cfg.sizes.length}), got ${list.length}`);
    }
  }
  if (cfg.attentionHeads % cfg.attentionKvHeads !== 0) {
    problems.push(`attention: heads (${cfg.attentionHeads}) must be a multiple of kv_heads (${cfg.attentionKvHeads})`);
  }
  cfg.sizes.forEach((_, k) => {
    const c = perStage(cfg.channels, k, 'channels');
    if (c % cfg.groupNormGroups !== 0) problems.push(`channels[${k}]=${c} is not divisible by group_norm_groups=${cfg.groupNormGroups}`);
    if (c % cfg.attentionHeads !== 0) problems.push(`channels[${k}]=${c} is not divisible by attention heads=${cfg.attentionHeads}`);
  });
  return problems;
}

/** What the generator is conditioned on: the pooled text vector, and per-token states for cross-attention. */
export interface NspCondition {
  pooled: import('../../backend/tf.js').Tensor;
  tokens?: import('../../backend/tf.js').Tensor;
  /** [B, L], 1 = real token. */
  mask?: import('../../backend/tf.js').Tensor;
}
