import { tf } from '../backend/tf.js';
import { Module } from './module.js';

/** LayerNorm over the last axis; biased variance as in PyTorch. */
export class LayerNorm extends Module {
  readonly weight: tf.Variable | null;
  readonly bias: tf.Variable | null;
  constructor(readonly dim: number, readonly eps = 1e-5, affine = true) {
    super();
    this.weight = affine ? this.param('weight', tf.ones([dim])) : null;
    this.bias = affine ? this.param('bias', tf.zeros([dim])) : null;
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const { mean, variance } = tf.moments(x, -1, true);
      let y = x.sub(mean).mul(tf.rsqrt(variance.add(this.eps)));
      if (this.weight) y = y.mul(this.weight);
      if (this.bias) y = y.add(this.bias);
      return y;
    });
  }
}

/** GroupNorm over NHWC input: channels split into `groups`, statistics over (H, W, C/groups). */
export class GroupNorm extends Module {
  readonly weight: tf.Variable | null;
  readonly bias: tf.Variable | null;
  constructor(readonly groups: number, readonly channels: number, readonly eps = 1e-5, affine = true) {
    super();
    if (channels % groups !== 0) throw new Error(`GroupNorm: ${channels} channels not divisible by ${groups} groups`);
    this.weight = affine ? this.param('weight', tf.ones([channels])) : null;
    this.bias = affine ? this.param('bias', tf.zeros([channels])) : null;
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const shape = x.shape;
      const n = shape[0]!;
      const c = shape[shape.length - 1]!;
      const g = x.reshape([n, -1, this.groups, c / this.groups]);
      const { mean, variance } = tf.moments(g, [1, 3], true);
      let y = g.sub(mean).mul(tf.rsqrt(variance.add(this.eps))).reshape(shape);
      if (this.weight) y = y.mul(this.weight);
      if (this.bias) y = y.add(this.bias);
      return y;
    });
  }
}

/** RMSNorm: x / √(mean(x²) + eps) · weight. */
export class RMSNorm extends Module {
  readonly weight: tf.Variable | null;
  constructor(readonly dim: number, readonly eps = 1e-6, affine = true) {
    super();
    this.weight = affine ? this.param('weight', tf.ones([dim])) : null;
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const y = x.mul(tf.rsqrt(x.square().mean(-1, true).add(this.eps)));
      return this.weight ? y.mul(this.weight) : y;
    });
  }
}
