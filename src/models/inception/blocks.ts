import { tf } from '../../backend/tf.js';
import { BatchNorm2d } from '../../nn/batch_norm.js';
import { kaimingUniform } from '../../nn/init.js';
import { Module } from '../../nn/module.js';
import { Rng } from '../../util/rng.js';

/**
 * The blocks of the FID Inception v3: torchvision's Inception3 modules with pytorch-fid's patches for the
 * 2015-12-05 TensorFlow graph (FIDInceptionA/C/E_1: average pooling that does not count the padding;
 * FIDInceptionE_2: max pooling in the pool branch). Member names are torchvision's, so the state dict of
 * pytorch-fid's `pt_inception-2015-12-05-*.pth` maps one to one (Mixed_6b.branch7x7_2.conv.weight, …).
 * Activations are NHWC; channel concatenation order is torchvision's.
 */

/** A conv weight of PyTorch layout [out, in, kh, kw]; `padding` is PyTorch's symmetric (ph, pw). */
class ConvWeight extends Module {
  readonly weight: tf.Variable;
  constructor(inChannels: number, outChannels: number, readonly kernel: [number, number], rng: Rng | null) {
    super();
    const shape = [outChannels, inChannels, kernel[0], kernel[1]];
    // Without an rng the weights start at zero: they are about to be loaded (saves seconds at full width).
    this.weight = this.param('weight', rng ? kaimingUniform(shape, rng) : tf.zeros(shape));
  }
}

export interface BasicConvOptions {
  kernel: number | [number, number];
  stride?: number;
  padding?: number | [number, number];
}

/** torchvision's BasicConv2d: conv (no bias) → BatchNorm2d(eps = 0.001) → ReLU. */
export class BasicConv2d extends Module {
  readonly conv: ConvWeight;
  readonly bn: BatchNorm2d;
  readonly stride: number;
  private readonly pad: 'same' | 'valid';
  /** conv ∘ bn folded into one filter [kh, kw, in, out] and bias, built on first use. */
  private folded: { filter: tf.Tensor4D; bias: tf.Tensor1D } | null = null;

  constructor(readonly inChannels: number, readonly outChannels: number, opts: BasicConvOptions, rng: Rng | null) {
    super();
    const kernel: [number, number] = typeof opts.kernel === 'number' ? [opts.kernel, opts.kernel] : opts.kernel;
    const padding: [number, number] = opts.padding === undefined ? [0, 0] : typeof opts.padding === 'number' ? [opts.padding, opts.padding] : opts.padding;
    this.stride = opts.stride ?? 1;
    // Inception's convs are either unpadded or stride-1 with (k − 1)/2 padding per axis, i.e. 'same'.
    if (padding[0] === 0 && padding[1] === 0) this.pad = 'valid';
    else if (this.stride === 1 && 2 * padding[0] === kernel[0] - 1 && 2 * padding[1] === kernel[1] - 1) this.pad = 'same';
    else throw new Error(`BasicConv2d: padding [${padding}] with kernel [${kernel}] and stride ${this.stride} is not used by Inception`);
    this.conv = this.module('conv', new ConvWeight(inChannels, outChannels, kernel, rng?.fork('conv') ?? null));
    this.bn = this.module('bn', new BatchNorm2d(outChannels, 0.001));
  }

  /** Drop the folded weights (after new weights were loaded). */
  invalidate(): void {
    this.folded?.filter.dispose();
    this.folded?.bias.dispose();
    this.folded = null;
  }

  private fold(): { filter: tf.Tensor4D; bias: tf.Tensor1D } {
    if (!this.folded) {
      this.folded = tf.tidy(() => {
        const { scale, shift } = this.bn.affine();
        const filter = this.conv.weight.transpose([2, 3, 1, 0]).mul(scale) as tf.Tensor4D;
        return { filter: tf.keep(filter), bias: tf.keep(shift) };
      });
    }
    return this.folded;
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    const { filter, bias } = this.fold();
    return tf.fused.conv2d({ x, filter, strides: this.stride, pad: this.pad, bias, activation: 'relu' });
  }

  override dispose(): void {
    this.invalidate();
    super.dispose();
  }
}

/** Channel widths divided by `div` (1 = the real network; tests use reduced widths). */
function w(channels: number, div: number): number {
  if (channels % div !== 0) throw new Error(`Inception width divisor ${div} does not divide ${channels} channels`);
  return channels / div;
}

/** A child generator, or null when the weights start at zero. */
export function fork(rng: Rng | null, label: string): Rng | null {
  return rng ? rng.fork(label) : null;
}

function avgPool3x3(x: tf.Tensor4D): tf.Tensor4D {
  // tfjs averages over the in-bounds pixels of each window: count_include_pad=False, as the TF graph.
  return tf.avgPool(x, 3, 1, 'same');
}

export class InceptionA extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch5x5_1: BasicConv2d;
  readonly branch5x5_2: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;
  readonly branchPool: BasicConv2d;
  readonly outChannels: number;
  constructor(inC: number, poolFeatures: number, div: number, rng: Rng | null) {
    super();
    const c = (n: number) => w(n, div);
    this.branch1x1 = this.module('branch1x1', new BasicConv2d(inC, c(64), { kernel: 1 }, fork(rng, '1x1')));
    this.branch5x5_1 = this.module('branch5x5_1', new BasicConv2d(inC, c(48), { kernel: 1 }, fork(rng, '5x5_1')));
    this.branch5x5_2 = this.module('branch5x5_2', new BasicConv2d(c(48), c(64), { kernel: 5, padding: 2 }, fork(rng, '5x5_2')));
    this.branch3x3dbl_1 = this.module('branch3x3dbl_1', new BasicConv2d(inC, c(64), { kernel: 1 }, fork(rng, 'dbl_1')));
    this.branch3x3dbl_2 = this.module('branch3x3dbl_2', new BasicConv2d(c(64), c(96), { kernel: 3, padding: 1 }, fork(rng, 'dbl_2')));
    this.branch3x3dbl_3 = this.module('branch3x3dbl_3', new BasicConv2d(c(96), c(96), { kernel: 3, padding: 1 }, fork(rng, 'dbl_3')));
    this.branchPool = this.module('branch_pool', new BasicConv2d(inC, poolFeatures, { kernel: 1 }, fork(rng, 'pool')));
    this.outChannels = c(64) + c(64) + c(96) + poolFeatures;
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() =>
      tf.concat(
        [
          this.branch1x1.forward(x),
          this.branch5x5_2.forward(this.branch5x5_1.forward(x)),
          this.branch3x3dbl_3.forward(this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x))),
          this.branchPool.forward(avgPool3x3(x)),
        ],
        3,
      ),
    );
  }
}

/** Grid reduction 35 → 17 (Mixed_6a). */
export class InceptionB extends Module {
  readonly branch3x3: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;
  readonly outChannels: number;
  constructor(inC: number, div: number, rng: Rng | null) {
    super();
    const c = (n: number) => w(n, div);
    this.branch3x3 = this.module('branch3x3', new BasicConv2d(inC, c(384), { kernel: 3, stride: 2 }, fork(rng, '3x3')));
    this.branch3x3dbl_1 = this.module('branch3x3dbl_1', new BasicConv2d(inC, c(64), { kernel: 1 }, fork(rng, 'dbl_1')));
    this.branch3x3dbl_2 = this.module('branch3x3dbl_2', new BasicConv2d(c(64), c(96), { kernel: 3, padding: 1 }, fork(rng, 'dbl_2')));
    this.branch3x3dbl_3 = this.module('branch3x3dbl_3', new BasicConv2d(c(96), c(96), { kernel: 3, stride: 2 }, fork(rng, 'dbl_3')));
    this.outChannels = c(384) + c(96) + inC;
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() =>
      tf.concat(
        [
          this.branch3x3.forward(x),
          this.branch3x3dbl_3.forward(this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x))),
          tf.maxPool(x, 3, 2, 'valid'),
        ],
        3,
      ),
    );
  }
}

/** Factorised 7×7 (Mixed_6b–e). */
export class InceptionC extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch7x7: BasicConv2d[];
  readonly branch7x7dbl: BasicConv2d[];
  readonly branchPool: BasicConv2d;
  readonly outChannels: number;
  constructor(inC: number, channels7x7: number, div: number, rng: Rng | null) {
    super();
    const c = (n: number) => w(n, div);
    const c7 = channels7x7;
    const row = { kernel: [1, 7] as [number, number], padding: [0, 3] as [number, number] };
    const col = { kernel: [7, 1] as [number, number], padding: [3, 0] as [number, number] };
    this.branch1x1 = this.module('branch1x1', new BasicConv2d(inC, c(192), { kernel: 1 }, fork(rng, '1x1')));
    this.branch7x7 = [
      this.module('branch7x7_1', new BasicConv2d(inC, c7, { kernel: 1 }, fork(rng, '7x7_1'))),
      this.module('branch7x7_2', new BasicConv2d(c7, c7, row, fork(rng, '7x7_2'))),
      this.module('branch7x7_3', new BasicConv2d(c7, c(192), col, fork(rng, '7x7_3'))),
    ];
    this.branch7x7dbl = [
      this.module('branch7x7dbl_1', new BasicConv2d(inC, c7, { kernel: 1 }, fork(rng, 'dbl_1'))),
      this.module('branch7x7dbl_2', new BasicConv2d(c7, c7, col, fork(rng, 'dbl_2'))),
      this.module('branch7x7dbl_3', new BasicConv2d(c7, c7, row, fork(rng, 'dbl_3'))),
      this.module('branch7x7dbl_4', new BasicConv2d(c7, c7, col, fork(rng, 'dbl_4'))),
      this.module('branch7x7dbl_5', new BasicConv2d(c7, c(192), row, fork(rng, 'dbl_5'))),
    ];
    this.branchPool = this.module('branch_pool', new BasicConv2d(inC, c(192), { kernel: 1 }, fork(rng, 'pool')));
    this.outChannels = 4 * c(192);
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() =>
      tf.concat(
        [
          this.branch1x1.forward(x),
          this.branch7x7.reduce((h, m) => m.forward(h), x),
          this.branch7x7dbl.reduce((h, m) => m.forward(h), x),
          this.branchPool.forward(avgPool3x3(x)),
        ],
        3,
      ),
    );
  }
}

/** Grid reduction 17 → 8 (Mixed_7a). */
export class InceptionD extends Module {
  readonly branch3x3: BasicConv2d[];
  readonly branch7x7x3: BasicConv2d[];
  readonly outChannels: number;
  constructor(inC: number, div: number, rng: Rng | null) {
    super();
    const c = (n: number) => w(n, div);
    this.branch3x3 = [
      this.module('branch3x3_1', new BasicConv2d(inC, c(192), { kernel: 1 }, fork(rng, '3x3_1'))),
      this.module('branch3x3_2', new BasicConv2d(c(192), c(320), { kernel: 3, stride: 2 }, fork(rng, '3x3_2'))),
    ];
    this.branch7x7x3 = [
      this.module('branch7x7x3_1', new BasicConv2d(inC, c(192), { kernel: 1 }, fork(rng, '7x7x3_1'))),
      this.module('branch7x7x3_2', new BasicConv2d(c(192), c(192), { kernel: [1, 7], padding: [0, 3] }, fork(rng, '7x7x3_2'))),
      this.module('branch7x7x3_3', new BasicConv2d(c(192), c(192), { kernel: [7, 1], padding: [3, 0] }, fork(rng, '7x7x3_3'))),
      this.module('branch7x7x3_4', new BasicConv2d(c(192), c(192), { kernel: 3, stride: 2 }, fork(rng, '7x7x3_4'))),
    ];
    this.outChannels = c(320) + c(192) + inC;
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() =>
      tf.concat(
        [this.branch3x3.reduce((h, m) => m.forward(h), x), this.branch7x7x3.reduce((h, m) => m.forward(h), x), tf.maxPool(x, 3, 2, 'valid')],
        3,
      ),
    );
  }
}

/** Expanded filter bank (Mixed_7b: average pool without padding counts; Mixed_7c: max pool). */
export class InceptionE extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch3x3_1: BasicConv2d;
  readonly branch3x3_2a: BasicConv2d;
  readonly branch3x3_2b: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3a: BasicConv2d;
  readonly branch3x3dbl_3b: BasicConv2d;
  readonly branchPool: BasicConv2d;
  readonly outChannels: number;
  constructor(inC: number, readonly pool: 'avg' | 'max', div: number, rng: Rng | null) {
    super();
    const c = (n: number) => w(n, div);
    const row = { kernel: [1, 3] as [number, number], padding: [0, 1] as [number, number] };
    const col = { kernel: [3, 1] as [number, number], padding: [1, 0] as [number, number] };
    this.branch1x1 = this.module('branch1x1', new BasicConv2d(inC, c(320), { kernel: 1 }, fork(rng, '1x1')));
    this.branch3x3_1 = this.module('branch3x3_1', new BasicConv2d(inC, c(384), { kernel: 1 }, fork(rng, '3x3_1')));
    this.branch3x3_2a = this.module('branch3x3_2a', new BasicConv2d(c(384), c(384), row, fork(rng, '3x3_2a')));
    this.branch3x3_2b = this.module('branch3x3_2b', new BasicConv2d(c(384), c(384), col, fork(rng, '3x3_2b')));
    this.branch3x3dbl_1 = this.module('branch3x3dbl_1', new BasicConv2d(inC, c(448), { kernel: 1 }, fork(rng, 'dbl_1')));
    this.branch3x3dbl_2 = this.module('branch3x3dbl_2', new BasicConv2d(c(448), c(384), { kernel: 3, padding: 1 }, fork(rng, 'dbl_2')));
    this.branch3x3dbl_3a = this.module('branch3x3dbl_3a', new BasicConv2d(c(384), c(384), row, fork(rng, 'dbl_3a')));
    this.branch3x3dbl_3b = this.module('branch3x3dbl_3b', new BasicConv2d(c(384), c(384), col, fork(rng, 'dbl_3b')));
    this.branchPool = this.module('branch_pool', new BasicConv2d(inC, c(192), { kernel: 1 }, fork(rng, 'pool')));
    this.outChannels = c(320) + 4 * c(384) + c(192);
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const b3 = this.branch3x3_1.forward(x);
      const d3 = this.branch3x3dbl_2.forward(this.branch3x3dbl_1.forward(x));
      const pooled = this.pool === 'avg' ? avgPool3x3(x) : tf.maxPool(x, 3, 1, 'same');
      return tf.concat(
        [
          this.branch1x1.forward(x),
          this.branch3x3_2a.forward(b3),
          this.branch3x3_2b.forward(b3),
          this.branch3x3dbl_3a.forward(d3),
          this.branch3x3dbl_3b.forward(d3),
          this.branchPool.forward(pooled),
        ],
        3,
      );
    });
  }
}
