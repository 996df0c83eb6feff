import { tf } from '../backend/tf.js';
import { Module } from './module.js';

/**
 * BatchNorm2d for inference, with PyTorch's names (weight, bias, running_mean, running_var) so checkpoints
 * load by name: y = (x − running_mean) / √(running_var + eps) · weight + bias over the channel (last, NHWC)
 * axis. Only the running statistics are used (eval mode); nothing here updates them.
 */
export class BatchNorm2d extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(readonly channels: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('weight', tf.ones([channels]));
    this.bias = this.param('bias', tf.zeros([channels]));
    this.buffer('running_mean', tf.zeros([channels]));
    this.buffer('running_var', tf.ones([channels]));
  }

  get runningMean(): tf.Tensor {
    return this.getBuffer('running_mean');
  }
  get runningVar(): tf.Tensor {
    return this.getBuffer('running_var');
  }

  /** The affine map the layer applies per channel: y = x · scale + shift. */
  affine(): { scale: tf.Tensor1D; shift: tf.Tensor1D } {
    return tf.tidy(() => {
      const scale = this.weight.mul(tf.rsqrt(this.runningVar.add(this.eps))) as tf.Tensor1D;
      return { scale, shift: this.bias.sub(this.runningMean.mul(scale)) as tf.Tensor1D };
    });
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const { scale, shift } = this.affine();
      return x.mul(scale).add(shift);
    });
  }
}
