import { tf } from '../../backend/tf.js';
import { silu } from '../../nn/activations.js';
import { Conv2d } from '../../nn/conv.js';
import { FiLM } from '../../nn/film.js';
import { Linear } from '../../nn/linear.js';
import { Module, ModuleList } from '../../nn/module.js';
import { GroupNorm } from '../../nn/norm.js';
import { Rng } from '../../util/rng.js';
import { AttentionBlock, CrossAttentionBlock, DenseBlock } from './blocks.js';
import { NspCondition, NspModelConfig, perStage } from './config.js';

/**
 * One stage of the cascade: reads the (upsampled) previous scale and the conditioning, and predicts
 * the residual that turns it into this scale. The output conv starts at zero, so an untrained stage
 * is exactly bilinear upsampling and training only ever learns the missing detail.
 */
export class ScalePredictor extends Module {
  readonly condMlp: ModuleList<Linear>;
  readonly convIn: Conv2d;
  readonly posEmbed: tf.Variable | null = null;
  readonly coordChannels: number;
  readonly blocks: ModuleList<DenseBlock | AttentionBlock | CrossAttentionBlock>;
  readonly normOut: GroupNorm;
  readonly filmOut: FiLM;
  readonly convOut: Conv2d;

  constructor(cfg: NspModelConfig, stage: number, rng: Rng) {
    super();
    const size = cfg.sizes[stage]!;
    const channels = perStage(cfg.channels, stage, 'channels');
    const nBlocks = perStage(cfg.blocksPerStage, stage, 'blocks_per_stage');
    const withAttention = cfg.attentionMaxSize > 0 && size <= cfg.attentionMaxSize;
    this.condMlp = this.module(
      'cond_mlp',
      new ModuleList([new Linear(cfg.textDim + cfg.condDim, cfg.condDim, { rng }), new Linear(cfg.condDim, cfg.condDim, { rng })]),
    );
    this.coordChannels = cfg.coordChannels ? 2 : 0;
    this.convIn = this.module('conv_in', new Conv2d(cfg.imageChannels + this.coordChannels, channels, 3, { padding: 1, rng }));
    if (stage === 0 && cfg.basePositionEmbedding) {
      this.posEmbed = this.param('pos_embed', tf.tensor4d(rng.fillNormal(new Float32Array(size * size * channels), 0, 0.02), [1, size, size, channels]));
    }
    const blocks: (DenseBlock | AttentionBlock | CrossAttentionBlock)[] = [];
    for (let i = 0; i < nBlocks; i++) {
      blocks.push(new DenseBlock(channels, cfg.condDim, cfg.groupNormGroups, cfg.growthChannels, cfg.denseLayers, cfg.residualScale, rng));
      // Attention after every dense block but the first: local features first, then global mixing.
      if (withAttention && i >= Math.min(1, nBlocks - 1)) {
        blocks.push(new AttentionBlock(channels, cfg.condDim, cfg.attentionHeads, cfg.attentionKvHeads, rng, cfg.attentionTokenSize));
      }
      if (withAttention && cfg.crossAttention) {
        blocks.push(new CrossAttentionBlock(channels, cfg.textTokenDim, cfg.attentionHeads, cfg.attentionKvHeads, rng));
      }
    }
    this.blocks = this.module('blocks', new ModuleList(blocks));
    // DiT's final layer: normalise, then modulate by the conditioning right before the output
    // projection, so per-sample constants (the background colour) need not survive a norm.
    this.normOut = this.module('norm_out', new GroupNorm(cfg.groupNormGroups, channels, 1e-5, false));
    this.filmOut = this.module('film_out', new FiLM(cfg.condDim, channels, { rng }));
    this.convOut = this.module('conv_out', new Conv2d(channels, cfg.imageChannels, 3, { padding: 1, rng }));
    this.convOut.weight.assign(tf.zerosLike(this.convOut.weight));
    this.convOut.bias!.assign(tf.zerosLike(this.convOut.bias!));
  }

  get hasAttention(): boolean {
    return [...this.blocks].some((b) => b instanceof AttentionBlock);
  }

  /** x: [B, S, S, C_img] at this stage's size; text: pooled [B, textDim] (+ tokens); scaleEmb: [condDim]. */
  forward(x: tf.Tensor4D, text: NspCondition, scaleEmb: tf.Tensor1D): tf.Tensor4D {
    return tf.tidy(() => {
      const b = x.shape[0];
      const condIn = tf.concat([text.pooled as tf.Tensor2D, tf.tile(scaleEmb.reshape([1, -1]), [b, 1])], 1);
      const cond = this.condMlp.at(1).forward(silu(this.condMlp.at(0).forward(condIn))) as tf.Tensor2D;
      let h = this.convIn.forward(this.coordChannels ? withCoordinates(x) : x);
      if (this.posEmbed) h = h.add(this.posEmbed) as tf.Tensor4D;
      for (const block of this.blocks) {
        if (block instanceof CrossAttentionBlock) {
          if (!text.tokens) throw new Error('this NSP stage cross-attends to text tokens; pass tokens with the pooled vector');
          h = block.forward(h, text.tokens as tf.Tensor3D, text.mask as tf.Tensor2D | undefined);
        } else h = block.forward(h, cond);
      }
      return this.convOut.forward(this.filmOut.forwardNormalized(this.normOut, h, cond, 'silu') as tf.Tensor4D);
    });
  }
}

/**
 * Appends normalised (y, x) coordinates in [-1, 1] as two channels (CoordConv, Liu et al. 2018):
 * "in the top left" is an absolute position, which translation-equivariant convolutions over a
 * noise input can otherwise only infer from border effects.
 */
export function withCoordinates(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w] = x.shape;
    const grid = new Float32Array(h * w * 2);
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        grid[(i * w + j) * 2] = h === 1 ? 0 : (2 * i) / (h - 1) - 1;
        grid[(i * w + j) * 2 + 1] = w === 1 ? 0 : (2 * j) / (w - 1) - 1;
      }
    }
    const coords = tf.tensor4d(grid, [1, h, w, 2]).tile([b, 1, 1, 1]);
    return tf.concat([x, coords], 3) as tf.Tensor4D;
  });
}
