import { tf } from '../../backend/tf.js';
import { Conv2d } from '../../nn/conv.js';
import { Module, ModuleList } from '../../nn/module.js';
import { Rng } from '../../util/rng.js';

/**
 * Residual dense block (ESRGAN): each 3×3 conv sees the concatenation of the block input and every
 * earlier conv's output ("dense"), a 1×1 conv fuses them back to the block width ("local fusion"),
 * and the result is added to the input scaled by β ("residual scaling"), which keeps deep stacks stable.
 */
export class ResidualDenseBlock extends Module {
  readonly convs: ModuleList<Conv2d>;
  readonly fuse: Conv2d;

  constructor(channels: number, growth: number, layers: number, readonly beta: number, rng: Rng) {
    super();
    this.convs = this.module(
      'convs',
      new ModuleList(Array.from({ length: layers }, (_, i) => new Conv2d(channels + i * growth, growth, 3, { padding: 1, rng }))),
    );
    this.fuse = this.module('fuse', new Conv2d(channels + layers * growth, channels, 1, { rng }));
  }

  /** β·F(x): the residual branch alone, for callers that add it to a pre-normalisation input. */
  branch(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      // Each conv reads the growing feature list as its channel concatenation; the fused kernel
      // never materialises that concatenation (nor its gradient's split).
      const features: tf.Tensor4D[] = [x];
      for (const conv of this.convs) features.push(conv.forwardList(features, { kind: 'leaky_relu', alpha: 0.2 }));
      return this.fuse.forwardList(features).mul(this.beta);
    });
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => x.add(this.branch(x)));
  }
}
