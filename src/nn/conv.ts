import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { computeCast, hasComputeCast } from './compute_cast.js';
import { leakyRelu } from './activations.js';
import { canFuseConvList, convList, type ConvActivation } from './conv_list.js';
import { defaultBias, kaimingUniform } from './init.js';

/** A branch added to a Conv2d's output (e.g. LoRA): x [N, H, W, C_in] → [N, H', W', C_out], or null. */
export interface Conv2dAdapter {
  delta(x: tf.Tensor4D): tf.Tensor4D | null;
}

export interface Conv2dOptions {
  stride?: number;
  /** PyTorch-style symmetric zero padding in pixels, or 'same'/'valid'. */
  padding?: number | 'same' | 'valid';
  bias?: boolean;
  rng?: Rng;
}

/**
 * 2-D convolution computed in NHWC (tfjs's layout) with the weight stored as PyTorch's
 * [out, in, kh, kw], so checkpoints load by name; it is transposed to [kh, kw, in, out] per call.
 */
export class Conv2d extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;
  readonly stride: number;
  readonly padding: number | 'same' | 'valid';
  private adapterBranch: Conv2dAdapter | null = null;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    opts: Conv2dOptions = {},
  ) {
    super();
    const rng = opts.rng ?? new Rng(0);
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    const shape = [outChannels, inChannels, kernelSize, kernelSize];
    this.weight = this.param('weight', kaimingUniform(shape, rng));
    this.bias = opts.bias === false ? null : this.param('bias', defaultBias(outChannels, shape, rng));
  }

  get adapter(): Conv2dAdapter | null {
    return this.adapterBranch;
  }

  /** Install a branch added to every output (null removes it); one at a time. */
  setAdapter(adapter: Conv2dAdapter | null): void {
    if (adapter && this.adapterBranch) throw new Error('Conv2d already has an adapter; remove it first');
    this.adapterBranch = adapter;
  }

  /** x: [N, H, W, C_in] → [N, H', W', C_out]. */
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return this.forwardList([x]);
  }

  /**
   * act(conv(concat(xs, channels))): the inputs [N, H, W, C_i] with ΣC_i = C_in read as their channel
   * concatenation (a dense block's growing feature list), the activation applied to the output. One
   * kernel each way where the backend has it, else concat → conv → bias → activation as tfjs ops.
   */
  forwardList(xs: tf.Tensor4D[], activation: ConvActivation = { kind: 'linear' }): tf.Tensor4D {
    const pad = this.symmetricPad();
    if (pad !== null && !this.adapterBranch && !hasComputeCast() && canFuseConvList(xs, this.weight)) {
      return convList(xs, this.weight, this.bias, { stride: this.stride, pad: [pad, pad, pad, pad], activation });
    }
    return tf.tidy(() => {
      const y = this.composite(xs.length === 1 ? xs[0]! : (tf.concat(xs, 3) as tf.Tensor4D));
      if (activation.kind === 'leaky_relu') return leakyRelu(y, activation.alpha ?? 0) as tf.Tensor4D;
      if (activation.kind === 'relu') return tf.relu(y);
      return y;
    });
  }

  /** PyTorch's symmetric padding in pixels, or null where tfjs's own 'same' (asymmetric at stride > 1) applies. */
  private symmetricPad(): number | null {
    if (typeof this.padding === 'number') return this.padding;
    if (this.padding === 'valid') return 0;
    return this.stride === 1 && this.kernelSize % 2 === 1 ? (this.kernelSize - 1) / 2 : null;
  }

  private composite(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const weight = computeCast(this.weight as tf.Tensor4D);
      let input = computeCast(x);
      let pad: 'same' | 'valid';
      if (typeof this.padding === 'number') {
        const p = this.padding;
        // Stride 1 with p = (k−1)/2 is exactly tfjs's 'same' and skips a padded copy; stride 2 is not
        // (tfjs pads 'same' asymmetrically), so it keeps PyTorch's symmetric explicit padding.
        if (this.stride === 1 && 2 * p === this.kernelSize - 1) pad = 'same';
        else {
          if (p > 0) input = tf.pad(input, [[0, 0], [p, p], [p, p], [0, 0]]);
          pad = 'valid';
        }
      } else pad = this.padding;
      let y: tf.Tensor4D =
        this.kernelSize === 1 && this.stride === 1
          ? (tf.matMul(input.reshape([-1, this.inChannels]) as tf.Tensor2D, weight.reshape([this.outChannels, this.inChannels]) as tf.Tensor2D, false, true).reshape([
              input.shape[0],
              input.shape[1],
              input.shape[2],
              this.outChannels,
            ]) as tf.Tensor4D)
          : tf.conv2d(input, weight.transpose([2, 3, 1, 0]) as tf.Tensor4D, this.stride, pad);
      if (this.bias) y = y.add(this.bias);
      const delta = this.adapterBranch?.delta(x);
      if (delta) y = y.add(delta);
      return y;
    });
  }
}
