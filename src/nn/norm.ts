import { tf } from '../backend/tf.js';
import { Module } from './module.js';
import { FUSED_KERNELS, hasFusedKernel } from '../backend/fused.js';

/**
 * (x − mean) / √(var + eps) of x [n, s, c] with the channels split into `groups`, statistics per
 * sample and group over the s positions and c/groups channels (biased variance, as PyTorch).
 * One fused kernel each way where the backend has it, else the tfjs composite.
 */
export function normalizeGroups(x: tf.Tensor3D, groups: number, eps: number): tf.Tensor3D {
  if (hasFusedKernel(FUSED_KERNELS.groupNorm) && x.dtype === 'float32') return fusedGroupNorm(x, groups, eps);
  return tf.tidy(() => {
    const [n, s, c] = x.shape;
    const g = x.reshape([n, s, groups, c / groups]);
    const { mean, variance } = tf.moments(g, [1, 3], true);
    return g.sub(mean).mul(tf.rsqrt(variance.add(eps))).reshape([n, s, c]);
  });
}

function fusedGroupNorm(x: tf.Tensor3D, groups: number, eps: number): tf.Tensor3D {
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const [y, mean, rstd] = tf.engine().runKernel(FUSED_KERNELS.groupNorm, { x: input }, { groups, eps }) as tf.Tensor[];
    save([input, mean!, rstd!]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, m, r] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        return tf.engine().runKernel(FUSED_KERNELS.groupNormGrad, { dy, x: xs, mean: m, rstd: r }, { groups }) as tf.Tensor;
      },
    };
  });
  return run(x) as tf.Tensor3D;
}

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
      const rows = x.size / this.dim;
      let y = normalizeGroups(x.reshape([rows, 1, this.dim]), 1, this.eps).reshape(x.shape);
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
      let y = normalizeGroups(x.reshape([n, x.size / (n * c), c]), this.groups, this.eps).reshape(shape);
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
