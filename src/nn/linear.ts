import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { computeCast } from './compute_cast.js';
import { defaultBias, kaimingUniform } from './init.js';

export interface LinearOptions {
  bias?: boolean;
  rng?: Rng;
}

/** A branch added to a Linear's output (e.g. LoRA): x [rows, in] → [rows, out], or null to add nothing. */
export interface LinearAdapter {
  delta(x: tf.Tensor2D): tf.Tensor | null;
}

/** y = x Wᵀ + b over the last axis; weight stored [out, in] as in torch.nn.Linear. */
export class Linear extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;
  private adapterBranch: LinearAdapter | null = null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    const rng = opts.rng ?? new Rng(0);
    const shape = [outFeatures, inFeatures];
    this.weight = this.param('weight', kaimingUniform(shape, rng));
    this.bias = opts.bias === false ? null : this.param('bias', defaultBias(outFeatures, shape, rng));
  }

  get adapter(): LinearAdapter | null {
    return this.adapterBranch;
  }

  /** Install a branch added to every output (null removes it); one at a time. */
  setAdapter(adapter: LinearAdapter | null): void {
    if (adapter && this.adapterBranch) throw new Error('Linear already has an adapter; remove it first');
    this.adapterBranch = adapter;
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2 = x.reshape([-1, this.inFeatures]) as tf.Tensor2D;
      let y: tf.Tensor = tf.matMul(computeCast(x2), computeCast(this.weight as tf.Tensor2D), false, true);
      if (this.bias) y = y.add(this.bias);
      const delta = this.adapterBranch?.delta(x2);
      if (delta) y = y.add(delta);
      return y.reshape([...lead, this.outFeatures]);
    });
  }
}
