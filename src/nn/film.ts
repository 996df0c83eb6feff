import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { Linear } from './linear.js';
import { GroupNorm, LayerNorm } from './norm.js';
import { normModulate } from './norm_modulate.js';
import { activation, silu, type Activation } from './activations.js';

/**
 * DiT's modulate: x·(1 + scale) + shift, with shift and scale [B, C] broadcast over every axis of
 * x [B, …, C] between the batch and the channels (tokens, or H and W of an NHWC map).
 */
export function modulate(x: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [b, c] = shift.shape as [number, number];
    const lift = [b, ...new Array<number>(x.rank - 2).fill(1), c];
    return x.mul(scale.reshape(lift).add(1)).add(shift.reshape(lift));
  });
}

export interface FiLMOptions {
  /** Zero weight and bias so a fresh layer is the identity (DiT's adaLN-Zero). Default true. */
  zeroInit?: boolean;
  /** How the 2·C outputs split: scale first (default, as FiLM / nfp's AdaptiveLayerNorm) or shift first (DiT). */
  order?: 'scale_shift' | 'shift_scale';
  /** Activation applied to the condition before the projection (DiT applies SiLU); none by default. */
  condAct?: string;
  /** Name of the projection child, so checkpoints of other layouts load by name. Default `linear`. */
  linearName?: string;
  rng?: Rng;
}

/** Feature-wise linear modulation: Linear(cond → 2·C) gives (scale, shift); y = x·(1 + scale) + shift. */
export class FiLM extends Module {
  readonly linear: Linear;
  readonly order: 'scale_shift' | 'shift_scale';
  private readonly condAct: Activation | null;

  constructor(readonly condDim: number, readonly channels: number, opts: FiLMOptions = {}) {
    super();
    this.linear = this.module(opts.linearName ?? 'linear', new Linear(condDim, 2 * channels, { rng: opts.rng ?? new Rng(0) }));
    if (opts.zeroInit ?? true) {
      this.linear.weight.assign(tf.zerosLike(this.linear.weight));
      this.linear.bias!.assign(tf.zerosLike(this.linear.bias!));
    }
    this.order = opts.order ?? 'scale_shift';
    this.condAct = opts.condAct ? activation(opts.condAct) : null;
  }

  /** cond [B, condDim] → scale, shift [B, C]. */
  modulation(cond: tf.Tensor): { scale: tf.Tensor; shift: tf.Tensor } {
    return tf.tidy(() => {
      const h = this.linear.forward(this.condAct ? this.condAct(cond) : cond);
      const [first, second] = tf.split(h, 2, -1) as [tf.Tensor, tf.Tensor];
      return this.order === 'scale_shift' ? { scale: first, shift: second } : { scale: second, shift: first };
    });
  }

  /** x [B, …, C], cond [B, condDim] → x·(1 + scale) + shift. */
  forward(x: tf.Tensor, cond: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const { scale, shift } = this.modulation(cond);
      return modulate(x, shift, scale);
    });
  }

  /**
   * act(norm(x)·(1 + scale) + shift): the pre-norm this layer modulates, applied with it. A norm
   * without affine parameters runs as one fused kernel each way (normModulate) with the projection's
   * output passed whole; an affine one as the separate layers.
   */
  forwardNormalized(norm: GroupNorm | LayerNorm, x: tf.Tensor, cond: tf.Tensor, activation: 'none' | 'silu' = 'none'): tf.Tensor {
    return tf.tidy(() => {
      if (norm.weight || norm.bias) {
        const y = this.forward(norm.forward(x), cond);
        return activation === 'silu' ? silu(y) : y;
      }
      const mod = this.linear.forward(this.condAct ? this.condAct(cond) : cond) as tf.Tensor2D;
      const c = this.channels;
      const [scaleOffset, shiftOffset] = this.order === 'scale_shift' ? [0, c] : [c, 0];
      const layer = norm instanceof LayerNorm;
      return normModulate(x, mod, { groups: layer ? 1 : norm.groups, perPosition: layer, eps: norm.eps, scaleOffset, shiftOffset, activation });
    });
  }
}

export interface AdaLayerNormOptions extends FiLMOptions {
  eps?: number;
  /** Give the LayerNorm its own weight/bias (`norm.weight`, `norm.bias`); DiT's has none. Default false. */
  affine?: boolean;
}

/** LayerNorm over the channels followed by FiLM from the condition (DiT adaLN, nfp AdaptiveLayerNorm). */
export class AdaLayerNorm extends FiLM {
  readonly norm: LayerNorm;

  constructor(readonly dim: number, condDim: number, opts: AdaLayerNormOptions = {}) {
    super(condDim, dim, opts);
    this.norm = this.module('norm', new LayerNorm(dim, opts.eps ?? 1e-6, opts.affine ?? false));
  }

  override forward(x: tf.Tensor, cond: tf.Tensor): tf.Tensor {
    return tf.tidy(() => super.forward(this.norm.forward(x), cond));
  }
}
