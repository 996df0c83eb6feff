import { tf } from '../backend/tf.js';
import { Conv2d, type Conv2dAdapter } from '../nn/conv.js';
import type { Dropout } from '../nn/dropout.js';
import { normal } from '../nn/init.js';
import { Rng } from '../util/rng.js';
import { attachLoraParts, branchDropout, checkRank, detachLoraParts, scaleBy } from './branch.js';
import { type LoraLayerOptions, loraScaling, replace } from './lora_linear.js';

/**
 * LoRA on a Conv2d (PEFT's lora.Conv2d, kohya's LoCon): A is a conv with the base kernel, stride and
 * padding into r channels, [r, in, kh, kw]; B a 1×1 conv back to the output channels, [out, r, 1, 1],
 * zero at start. The update to the kernel is B·A reshaped, so merging is exact. DoRA is not offered
 * on convolutions (PEFT's conv DoRA normalises over a different axis set; nobody asked for it here).
 */
export class LoraConv2d implements Conv2dAdapter {
  readonly r: number;
  readonly alpha: number;
  readonly scaling: number;
  readonly rslora: boolean;
  readonly loraA: Conv2d;
  readonly loraB: Conv2d;
  readonly dropout: Dropout | null;
  readonly magnitude = null;
  private isMerged = false;
  enabled = true;

  constructor(readonly base: Conv2d, opts: LoraLayerOptions) {
    checkRank(opts.r);
    if (opts.dora) throw new Error('LoRA: DoRA is implemented for Linear layers only, not Conv2d');
    if (base.adapter) throw new Error('LoRA: this Conv2d already carries an adapter');
    const rng = opts.rng ?? new Rng(0);
    this.r = opts.r;
    this.alpha = opts.alpha ?? opts.r;
    this.rslora = opts.rslora ?? false;
    this.scaling = loraScaling(this.r, this.alpha, this.rslora);
    this.loraA = new Conv2d(base.inChannels, this.r, base.kernelSize, { stride: base.stride, padding: base.padding, bias: false, rng });
    if (opts.init === 'gaussian') replace(this.loraA.weight, normal(this.loraA.weight.shape, 1 / this.r, rng));
    this.loraB = new Conv2d(this.r, base.outChannels, 1, { bias: false, rng });
    replace(this.loraB.weight, tf.zerosLike(this.loraB.weight));
    this.dropout = branchDropout(opts.dropout, rng);
    attachLoraParts(base, this);
    base.setAdapter(this);
  }

  get merged(): boolean {
    return this.isMerged;
  }

  delta(x: tf.Tensor4D): tf.Tensor4D | null {
    if (this.isMerged || !this.enabled) return null;
    return tf.tidy(() => {
      const input = (this.dropout ? this.dropout.forward(x) : x) as tf.Tensor4D;
      return this.loraB.forward(scaleBy(this.loraA.forward(input), this.scaling));
    });
  }

  /** s·B·A as a kernel [out, in, kh, kw]. */
  deltaWeight(): tf.Tensor4D {
    return tf.tidy(() => {
      const [out, r] = this.loraB.weight.shape as [number, number];
      const b = this.loraB.weight.reshape([out, r]) as tf.Tensor2D;
      const a = this.loraA.weight.reshape([r, -1]) as tf.Tensor2D;
      return tf.matMul(b, a).mul(this.scaling).reshape(this.base.weight.shape) as tf.Tensor4D;
    });
  }

  merge(): void {
    if (this.isMerged) return;
    replace(this.base.weight, tf.tidy(() => this.base.weight.add(this.deltaWeight())));
    this.isMerged = true;
  }

  unmerge(): void {
    if (!this.isMerged) return;
    replace(this.base.weight, tf.tidy(() => this.base.weight.sub(this.deltaWeight())));
    this.isMerged = false;
  }

  remove(): void {
    this.base.setAdapter(null);
    detachLoraParts(this.base, this);
  }
}
