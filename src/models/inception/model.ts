import { tf } from '../../backend/tf.js';
import { openSafetensors, type TensorSource } from '../../io/safetensors.js';
import { Linear } from '../../nn/linear.js';
import { Module, type LoadReport, type StateDictInput } from '../../nn/module.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { readChecked } from '../text/hf_folder.js';
import { BasicConv2d, fork, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE } from './blocks.js';

/**
 * The FID Inception v3 (pytorch-fid's `fid_inception_v3()`, a port of TensorFlow's 2015-12-05 graph):
 * torchvision's Inception3 trunk with num_classes = 1008, no aux head, and the FID block variants. Parameter
 * names are torchvision's (Conv2d_1a_3x3.conv.weight, Mixed_7c.branch_pool.bn.running_var, fc.weight, …), so
 * the state dict of `pt_inception-2015-12-05-6726825d.pth`, converted to safetensors, loads by name.
 *
 * forward() takes NHWC images in [0, 1] at the size the caller resized them to (299 for FID; src/eval/
 * resize.ts does that, 'clean' or 'legacy'), scales them to [−1, 1] (pytorch-fid's normalize_input, 2x − 1)
 * and returns pool3 (the 2048-d average pool FID uses), the 1008 logits of fc, and the logits without fc's
 * bias (torch-fidelity's "logits_unbiased", which its Inception Score uses, as the original TF code).
 */

export interface FidInceptionConfig {
  /** Every channel width is divided by this (1 = the real network; tests build reduced widths). */
  widthDivisor: number;
  /** Classifier outputs (1008 for the 2015-12-05 graph). */
  numClasses: number;
}

export const FID_INCEPTION_CONFIG: FidInceptionConfig = { widthDivisor: 1, numClasses: 1008 };

/** pytorch-fid's normalisation 2x − 1, or clean-fid's TorchScript model's (255x − 128) / 128. */
export type InceptionInputScaling = 'pytorch-fid' | 'clean-fid';

export interface FidInceptionOutput {
  /** [N, 2048 / widthDivisor]. */
  pool3: tf.Tensor2D;
  /** [N, numClasses]: fc(pool3). */
  logits: tf.Tensor2D;
  /** [N, numClasses]: pool3 · fc.weightᵀ, no bias. */
  logitsUnbiased: tf.Tensor2D;
}

/** The smallest input side the trunk accepts (three stride-2 stages and 3×3 valid convs). */
export const INCEPTION_MIN_SIZE = 75;

export class FidInceptionV3 extends Module {
  readonly Conv2d_1a_3x3: BasicConv2d;
  readonly Conv2d_2a_3x3: BasicConv2d;
  readonly Conv2d_2b_3x3: BasicConv2d;
  readonly Conv2d_3b_1x1: BasicConv2d;
  readonly Conv2d_4a_3x3: BasicConv2d;
  readonly mixed: Module[];
  readonly fc: Linear;
  readonly featureDim: number;

  /** opts.initWeights false: conv weights start at zero (they will be loaded); default: Kaiming-uniform from opts.rng. */
  constructor(readonly config: FidInceptionConfig = FID_INCEPTION_CONFIG, opts: { rng?: Rng; initWeights?: boolean } = {}) {
    super();
    const rng = (opts.initWeights ?? true) ? (opts.rng ?? new Rng(0)) : null;
    const div = config.widthDivisor;
    if (!Number.isInteger(div) || div < 1 || 16 % div !== 0) throw new UsageError(`FID Inception: widthDivisor must be 1, 2, 4, 8 or 16, got ${div}`);
    const c = (n: number) => n / div;
    this.Conv2d_1a_3x3 = this.module('Conv2d_1a_3x3', new BasicConv2d(3, c(32), { kernel: 3, stride: 2 }, fork(rng, '1a')));
    this.Conv2d_2a_3x3 = this.module('Conv2d_2a_3x3', new BasicConv2d(c(32), c(32), { kernel: 3 }, fork(rng, '2a')));
    this.Conv2d_2b_3x3 = this.module('Conv2d_2b_3x3', new BasicConv2d(c(32), c(64), { kernel: 3, padding: 1 }, fork(rng, '2b')));
    this.Conv2d_3b_1x1 = this.module('Conv2d_3b_1x1', new BasicConv2d(c(64), c(80), { kernel: 1 }, fork(rng, '3b')));
    this.Conv2d_4a_3x3 = this.module('Conv2d_4a_3x3', new BasicConv2d(c(80), c(192), { kernel: 3 }, fork(rng, '4a')));
    const m5b = this.module('Mixed_5b', new InceptionA(c(192), c(32), div, fork(rng, '5b')));
    const m5c = this.module('Mixed_5c', new InceptionA(m5b.outChannels, c(64), div, fork(rng, '5c')));
    const m5d = this.module('Mixed_5d', new InceptionA(m5c.outChannels, c(64), div, fork(rng, '5d')));
    const m6a = this.module('Mixed_6a', new InceptionB(m5d.outChannels, div, fork(rng, '6a')));
    const m6b = this.module('Mixed_6b', new InceptionC(m6a.outChannels, c(128), div, fork(rng, '6b')));
    const m6c = this.module('Mixed_6c', new InceptionC(m6b.outChannels, c(160), div, fork(rng, '6c')));
    const m6d = this.module('Mixed_6d', new InceptionC(m6c.outChannels, c(160), div, fork(rng, '6d')));
    const m6e = this.module('Mixed_6e', new InceptionC(m6d.outChannels, c(192), div, fork(rng, '6e')));
    const m7a = this.module('Mixed_7a', new InceptionD(m6e.outChannels, div, fork(rng, '7a')));
    const m7b = this.module('Mixed_7b', new InceptionE(m7a.outChannels, 'avg', div, fork(rng, '7b')));
    const m7c = this.module('Mixed_7c', new InceptionE(m7b.outChannels, 'max', div, fork(rng, '7c')));
    this.mixed = [m5b, m5c, m5d, m6a, m6b, m6c, m6d, m6e, m7a, m7b, m7c];
    this.featureDim = m7c.outChannels;
    this.fc = this.module('fc', new Linear(this.featureDim, config.numClasses, { rng: fork(rng, 'fc') ?? new Rng(0) }));
    this.eval();
    this.freeze();
  }

  /** images: [N, H, W, 3] in [0, 1], H and W ≥ 75 (299 for FID). */
  forward(images: tf.Tensor4D, scaling: InceptionInputScaling = 'pytorch-fid'): FidInceptionOutput {
    const [, h, wd, ch] = images.shape;
    if (images.rank !== 4 || ch !== 3) throw new UsageError(`FID Inception expects images [batch, height, width, 3] (NHWC), got [${images.shape}]`);
    if (h < INCEPTION_MIN_SIZE || wd < INCEPTION_MIN_SIZE) throw new UsageError(`FID Inception needs images of at least ${INCEPTION_MIN_SIZE}×${INCEPTION_MIN_SIZE}, got ${h}×${wd}`);
    return tf.tidy(() => {
      let x = (scaling === 'pytorch-fid' ? images.mul(2).sub(1) : images.mul(255).sub(128).div(128)) as tf.Tensor4D;
      x = this.Conv2d_2b_3x3.forward(this.Conv2d_2a_3x3.forward(this.Conv2d_1a_3x3.forward(x)));
      x = tf.maxPool(x, 3, 2, 'valid');
      x = this.Conv2d_4a_3x3.forward(this.Conv2d_3b_1x1.forward(x));
      x = tf.maxPool(x, 3, 2, 'valid');
      for (const block of this.mixed) x = (block as InceptionA).forward(x);
      const pool3 = x.mean([1, 2]) as tf.Tensor2D;
      const logitsUnbiased = tf.matMul(pool3, this.fc.weight, false, true) as tf.Tensor2D;
      const logits = logitsUnbiased.add(this.fc.bias!) as tf.Tensor2D;
      return { pool3, logits, logitsUnbiased };
    });
  }

  override loadStateDict(input: StateDictInput, opts: { strict?: boolean } = {}): LoadReport {
    const report = super.loadStateDict(input, opts);
    for (const [, m] of this.namedModules()) if (m instanceof BasicConv2d) m.invalidate();
    return report;
  }
}

/** Keys a pytorch-fid checkpoint may carry that inference does not use (BatchNorm's step counters). */
function isInferenceWeight(name: string): boolean {
  return !name.endsWith('.num_batches_tracked');
}

/**
 * Load the FID Inception from a tensor source (safetensors, or the `.pth` reader's source) by pytorch-fid's
 * names. Missing or unexpected tensors, or a shape that differs, are a UsageError naming the file, the tensor
 * and both shapes.
 */
export function loadFidInceptionFromSource(source: TensorSource, config: FidInceptionConfig = FID_INCEPTION_CONFIG): FidInceptionV3 {
  const model = new FidInceptionV3(config, { initWeights: false });
  try {
    const names = source.names().filter(isInferenceWeight);
    model.loadStateDict(readChecked(source, names, model, 'FID Inception'), { strict: true });
    return model;
  } catch (e) {
    model.dispose();
    throw e;
  }
}

export function loadFidInception(path: string, config: FidInceptionConfig = FID_INCEPTION_CONFIG): FidInceptionV3 {
  let source: TensorSource;
  try {
    source = openSafetensors(path);
  } catch (e) {
    throw new UsageError(`${path}: cannot read the FID Inception weights (${(e as Error).message})`);
  }
  try {
    return loadFidInceptionFromSource(source, config);
  } finally {
    source.close();
  }
}
