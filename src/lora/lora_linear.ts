import { tf } from '../backend/tf.js';
import type { Dropout } from '../nn/dropout.js';
import { normal } from '../nn/init.js';
import { Linear, type LinearAdapter, type LowRankBranch } from '../nn/linear.js';
import { Module } from '../nn/module.js';
import { Rng } from '../util/rng.js';
import { attachLoraParts, branchDropout, checkRank, detachLoraParts, scaleBy } from './branch.js';

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
  /** Weight-decomposed LoRA (PEFT use_dora): a trained magnitude per output row times the direction W + s·B·A. */
  dora?: boolean;
  rng?: Rng;
}

/** alpha/r, or alpha/√r for rsLoRA: the factor on B·A. */
export function loraScaling(r: number, alpha: number, rslora = false): number {
  return rslora ? alpha / Math.sqrt(r) : alpha / r;
}

/** Identity forward, zero gradient: PEFT computes the DoRA weight norm under `.detach()`. */
const detachOp = tf.customGrad((x, save) => {
  void save;
  return { value: (x as tf.Tensor).clone(), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
});
export function detach(x: tf.Tensor): tf.Tensor {
  return detachOp(x);
}

/** ‖W + s·B·A‖₂ of each output row, [out] (PEFT's DoRA `get_weight_norm`, norm over the input axis). */
export function rowNorm(w: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => w.square().sum(1).sqrt() as tf.Tensor1D);
}

/** DoRA's magnitude vector m [out], a child module so the state dict reads `<layer>.lora_magnitude_vector.weight`. */
export class DoraMagnitude extends Module {
  readonly weight: tf.Variable;
  constructor(init: tf.Tensor1D) {
    super();
    this.weight = this.param('weight', init);
  }
}

/**
 * LoRA on a Linear, PEFT's math: y = W x + b + B(A(dropout(x)))·scaling with A [r, in], B [out, r].
 * The base layer keeps its own names and values; A and B are attached to it as children `lora_A` and
 * `lora_B` (and a parameter-free `lora_dropout`), so a model's state dict gains exactly
 * `<layer>.lora_A.weight` / `<layer>.lora_B.weight`, the PEFT names without the adapter name.
 * B starts at zero, so injecting an adapter does not change the model's output.
 *
 * DoRA (PEFT's DoraLinearLayer): with V = W + s·B·A and n = ‖V‖ per output row (detached, as PEFT),
 * y = (m/n) ⊙ (V x) + b, computed as the base output plus (m/n − 1)⊙(W x) + (m/n)⊙s·B A x; m starts at ‖W‖.
 */
export class LoraLinear implements LinearAdapter {
  readonly r: number;
  readonly alpha: number;
  readonly scaling: number;
  readonly rslora: boolean;
  readonly loraA: Linear;
  readonly loraB: Linear;
  readonly dropout: Dropout | null;
  readonly magnitude: DoraMagnitude | null;
  private isMerged = false;
  /** DoRA merge divides by the norm it used, so unmerge needs exactly that norm back. */
  private mergedNorm: tf.Tensor1D | null = null;
  /** When false the branch adds nothing (the base model's output), without touching any weight. */
  enabled = true;

  constructor(readonly base: Linear, opts: LoraLayerOptions) {
    checkRank(opts.r);
    if (base.adapter) throw new Error('LoRA: this Linear already carries an adapter');
    const rng = opts.rng ?? new Rng(0);
    this.r = opts.r;
    this.alpha = opts.alpha ?? opts.r;
    this.rslora = opts.rslora ?? false;
    this.scaling = loraScaling(this.r, this.alpha, this.rslora);
    // Linear's own init is torch's kaiming_uniform(a=√5), PEFT's default for A.
    this.loraA = new Linear(base.inFeatures, this.r, { bias: false, rng });
    if (opts.init === 'gaussian') replace(this.loraA.weight, normal(this.loraA.weight.shape, 1 / this.r, rng));
    this.loraB = new Linear(this.r, base.outFeatures, { bias: false, rng });
    replace(this.loraB.weight, tf.zerosLike(this.loraB.weight));
    this.dropout = branchDropout(opts.dropout, rng);
    this.magnitude = opts.dora ? new DoraMagnitude(rowNorm(base.weight as tf.Tensor2D)) : null;
    attachLoraParts(base, this);
    base.setAdapter(this);
  }

  get merged(): boolean {
    return this.isMerged;
  }

  lowRankBranch(): LowRankBranch | null {
    if (this.isMerged || !this.enabled || this.dropout || this.magnitude) return null;
    return { loraA: this.loraA.weight, loraB: this.loraB.weight, scale: this.scaling };
  }

  delta(x: tf.Tensor2D): tf.Tensor | null {
    if (this.isMerged || !this.enabled) return null;
    return tf.tidy(() => {
      const input = this.dropout ? this.dropout.forward(x) : x;
      const branch = this.loraB.forward(scaleBy(this.loraA.forward(input), this.scaling));
      if (!this.magnitude) return branch;
      const norm = detach(rowNorm(this.directionWeight()));
      const ratio = this.magnitude.weight.div(norm);
      // (m/n − 1)·W x on the branch input: with dropout active PEFT recomputes the base term on dropout(x).
      const baseTerm = tf.matMul(input, this.base.weight as tf.Tensor2D, false, true);
      return baseTerm.mul(ratio.sub(1)).add(branch.mul(ratio));
    });
  }

  /** W + s·B·A, [out, in]. */
  private directionWeight(): tf.Tensor2D {
    return tf.tidy(() => this.base.weight.add(this.loraDelta()) as tf.Tensor2D);
  }

  /** s·B·A, [out, in]. */
  private loraDelta(): tf.Tensor2D {
    return tf.tidy(() => tf.matMul(this.loraB.weight as tf.Tensor2D, this.loraA.weight as tf.Tensor2D).mul(this.scaling) as tf.Tensor2D);
  }

  /** What merging adds to the weight: s·B·A, or for DoRA (m/n)⊙(W + s·B·A) − W. [out, in]. */
  deltaWeight(): tf.Tensor2D {
    return tf.tidy(() => {
      if (!this.magnitude) return this.loraDelta();
      const v = this.directionWeight();
      return v.mul(this.magnitude.weight.div(rowNorm(v)).reshape([-1, 1])).sub(this.base.weight) as tf.Tensor2D;
    });
  }

  /** Fold the update into the base weight (inference without the extra matmuls). */
  merge(): void {
    if (this.isMerged) return;
    if (this.magnitude) {
      const v = this.directionWeight();
      this.mergedNorm = rowNorm(v);
      replace(this.base.weight, tf.tidy(() => v.mul(this.magnitude!.weight.div(this.mergedNorm!).reshape([-1, 1]))));
      v.dispose();
    } else replace(this.base.weight, tf.tidy(() => this.base.weight.add(this.loraDelta())));
    this.isMerged = true;
  }

  /** Take the same update out again (exact up to float32 rounding, as PEFT's unmerge). */
  unmerge(): void {
    if (!this.isMerged) return;
    if (this.magnitude && this.mergedNorm) {
      const norm = this.mergedNorm;
      replace(this.base.weight, tf.tidy(() => this.base.weight.div(this.magnitude!.weight.div(norm).reshape([-1, 1])).sub(this.loraDelta())));
      norm.dispose();
      this.mergedNorm = null;
    } else replace(this.base.weight, tf.tidy(() => this.base.weight.sub(this.loraDelta())));
    this.isMerged = false;
  }

  /** Take the adapter off the layer and free A and B; a merged update stays in the base weight. */
  remove(): void {
    this.base.setAdapter(null);
    detachLoraParts(this.base, this);
    this.mergedNorm?.dispose();
  }
}

export function replace(v: tf.Variable, value: tf.Tensor): void {
  v.assign(value);
  value.dispose();
}
