import { tf } from '../../backend/tf.js';
import { Attention, CrossAttention } from '../../nn/attention.js';
import { FiLM } from '../../nn/film.js';
import { Module } from '../../nn/module.js';
import { GroupNorm, LayerNorm } from '../../nn/norm.js';
import { Rng } from '../../util/rng.js';
import { ResidualDenseBlock } from './rdb.js';

/**
 * Convolutional block: GroupNorm (no affine) → FiLM(cond) → residual dense block branch.
 * FiLM is where the text and the scale index enter, so every block of every stage is conditioned.
 */
export class DenseBlock extends Module {
  readonly norm: GroupNorm;
  readonly film: FiLM;
  readonly rdb: ResidualDenseBlock;

  constructor(channels: number, condDim: number, groups: number, growth: number, layers: number, beta: number, rng: Rng) {
    super();
    this.norm = this.module('norm', new GroupNorm(groups, channels, 1e-5, false));
    this.film = this.module('film', new FiLM(condDim, channels, { rng }));
    this.rdb = this.module('rdb', new ResidualDenseBlock(channels, growth, layers, beta, rng));
  }

  forward(x: tf.Tensor4D, cond: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const h = this.film.forwardNormalized(this.norm, x, cond) as tf.Tensor4D;
      return x.add(this.rdb.branch(h));
    });
  }
}

/**
 * Self-attention over the H·W positions with grouped/multi-query key-value heads, pre-norm with
 * adaptive LayerNorm so the conditioning also steers what the tokens attend to. Above `tokenSize`
 * the modulated features are average-pooled to a tokenSize×tokenSize grid, attended there, and the
 * result is upsampled bilinearly: global mixing at a cost that does not grow with the scale.
 */
export class AttentionBlock extends Module {
  readonly norm: LayerNorm;
  readonly film: FiLM;
  readonly attn: Attention;

  constructor(channels: number, condDim: number, heads: number, kvHeads: number, rng: Rng, readonly tokenSize = 0) {
    super();
    this.norm = this.module('norm', new LayerNorm(channels, 1e-6, false));
    this.film = this.module('film', new FiLM(condDim, channels, { rng }));
    this.attn = this.module('attn', new Attention(channels, { numHeads: heads, numKvHeads: kvHeads, rope: '2d', rng }));
  }

  forward(x: tf.Tensor4D, cond: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, h, w, c] = x.shape;
      let mod = this.film.forwardNormalized(this.norm, x, cond) as tf.Tensor4D;
      const pool = this.tokenSize > 0 && h > this.tokenSize ? Math.round(h / this.tokenSize) : 1;
      if (pool > 1) mod = tf.avgPool(mod, pool, pool, 'valid');
      const [, th, tw] = mod.shape;
      let out = this.attn.forward(mod.reshape([b, th * tw, c]) as tf.Tensor3D, { grid: [th, tw] }).reshape([b, th, tw, c]) as tf.Tensor4D;
      if (pool > 1) out = tf.image.resizeBilinear(out, [h, w], false, true);
      return x.add(out);
    });
  }
}

/**
 * Cross-attention from every position to the text tokens (pre-norm, residual): lets a position read
 * the individual words ("red", "top left") rather than only their pooled summary.
 */
export class CrossAttentionBlock extends Module {
  readonly norm: LayerNorm;
  readonly attn: CrossAttention;

  constructor(channels: number, contextDim: number, heads: number, kvHeads: number, rng: Rng) {
    super();
    this.norm = this.module('norm', new LayerNorm(channels, 1e-6, false));
    this.attn = this.module('attn', new CrossAttention(channels, contextDim, { numHeads: heads, numKvHeads: kvHeads, rng }));
  }

  forward(x: tf.Tensor4D, tokens: tf.Tensor3D, mask?: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, h, w, c] = x.shape;
      const q = this.norm.forward(x).reshape([b, h * w, c]) as tf.Tensor3D;
      return x.add(this.attn.forward(q, tokens, mask ? { keyMask: mask } : {}).reshape([b, h, w, c]));
    });
  }
}
