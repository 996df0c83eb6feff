import { tf } from '../backend/tf.js';
import { Dropout } from '../nn/dropout.js';
import { normal } from '../nn/init.js';
import { Linear, type LinearAdapter } from '../nn/linear.js';
import { Rng } from '../util/rng.js';

export interface LoraLayerOptions {
  /** Rank r of the update B·A. */
  r: number;
  /** Scaling numerator: the branch is multiplied by alpha/r (alpha/√r with rslora). Default r (scale 1). */
  alpha?: number;
  /** Dropout on the branch's input x, as PEFT's `lora_dropout`; 0 disables it. */
  dropout?: number;
  /** PEFT's init_lora_weights: 'kaiming' (True: A kaiming-uniform a=√5) or 'gaussian' (A ~ N(0, 1/r)); B is zero either way. */
  init?: 'kaiming' | 'gaussian';
  /** Rank-stabilised scaling alpha/√r (PEFT use_rslora). */
  rslora?: boolean;
  rng?: Rng;
}

/**
 * LoRA on a Linear, PEFT's math: y = W x + b + B(A(dropout(x)))·scaling with A [r, in], B [out, r].
 * The base layer keeps its own names and values; A and B are attached to it as children `lora_A` and
 * `lora_B` (and a parameter-free `lora_dropout`), so a model's state dict gains exactly
 * `<layer>.lora_A.weight` / `<layer>.lora_B.weight`, the PEFT names without the adapter name.
 * B starts at zero, so injecting an adapter does not change the model's output.
 */
export class LoraLinear implements LinearAdapter {
  readonly r: number;
  readonly alpha: number;
  readonly scaling: number;
  readonly loraA: Linear;
  readonly loraB: Linear;
  readonly dropout: Dropout | null;
  private isMerged = false;
  /** When false the branch adds nothing (the base model's output), without touching any weight. */
  enabled = true;

  constructor(readonly base: Linear, opts: LoraLayerOptions) {
    if (!(Number.isInteger(opts.r) && opts.r > 0)) throw new RangeError(`LoRA rank must be a positive integer, got ${opts.r}`);
    if (base.adapter) throw new Error('LoRA: this Linear already carries an adapter');
    const rng = opts.rng ?? new Rng(0);
    this.r = opts.r;
    this.alpha = opts.alpha ?? opts.r;
    this.scaling = opts.rslora ? this.alpha / Math.sqrt(this.r) : this.alpha / this.r;
    // Linear's own init is torch's kaiming_uniform(a=√5), PEFT's default for A.
    this.loraA = new Linear(base.inFeatures, this.r, { bias: false, rng });
    if (opts.init === 'gaussian') replace(this.loraA.weight, normal(this.loraA.weight.shape, 1 / this.r, rng));
    this.loraB = new Linear(this.r, base.outFeatures, { bias: false, rng });
    replace(this.loraB.weight, tf.zerosLike(this.loraB.weight));
    const p = opts.dropout ?? 0;
    this.dropout = p > 0 ? new Dropout(p, { rng: rng.fork('lora-dropout') }) : null;
    base.attachModule('lora_A', this.loraA);
    base.attachModule('lora_B', this.loraB);
    if (this.dropout) base.attachModule('lora_dropout', this.dropout);
    this.dropout?.train(base.training);
    base.setAdapter(this);
  }

  get merged(): boolean {
    return this.isMerged;
  }

  delta(x: tf.Tensor2D): tf.Tensor | null {
    if (this.isMerged || !this.enabled) return null;
    return tf.tidy(() => {
      const input = this.dropout ? this.dropout.forward(x) : x;
      return this.loraB.forward(this.loraA.forward(input)).mul(this.scaling);
    });
  }

  /** The update the branch adds to the weight: B·A·scaling, [out, in]. */
  deltaWeight(): tf.Tensor2D {
    return tf.tidy(() => tf.matMul(this.loraB.weight as tf.Tensor2D, this.loraA.weight as tf.Tensor2D).mul(this.scaling) as tf.Tensor2D);
  }

  /** Fold B·A·scaling into the base weight (inference without the extra matmuls). */
  merge(): void {
    if (this.isMerged) return;
    replace(this.base.weight, tf.tidy(() => this.base.weight.add(this.deltaWeight())));
    this.isMerged = true;
  }

  /** Subtract the same update again (exact up to float32 rounding, as PEFT's unmerge). */
  unmerge(): void {
    if (!this.isMerged) return;
    replace(this.base.weight, tf.tidy(() => this.base.weight.sub(this.deltaWeight())));
    this.isMerged = false;
  }

  /** Take the adapter off the layer and free A and B; a merged update stays in the base weight. */
  remove(): void {
    this.base.setAdapter(null);
    this.base.detachModule('lora_A');
    this.base.detachModule('lora_B');
    if (this.dropout) this.base.detachModule('lora_dropout');
    this.loraA.dispose();
    this.loraB.dispose();
  }
}

function replace(v: tf.Variable, value: tf.Tensor): void {
  v.assign(value);
  value.dispose();
}
