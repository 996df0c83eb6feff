import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { Linear } from './linear.js';
import { activation, type Activation } from './activations.js';
import { Dropout } from './dropout.js';

export interface MLPOptions {
  /** Activation name from activations.ts; DiT uses GELU(tanh). */
  act?: string;
  bias?: boolean;
  /** Dropout after the activation and after fc2 (timm Mlp's `drop`); 0 disables it. */
  dropout?: number;
  rng?: Rng;
}

/** Two-layer feed-forward block fc1 → act → fc2, parameter names as timm/DiT `mlp.fc1`, `mlp.fc2`. */
export class MLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  private readonly act: Activation;
  private readonly drop: Dropout | null;

  constructor(inFeatures: number, hiddenFeatures: number, outFeatures = inFeatures, opts: MLPOptions = {}) {
    super();
    const rng = opts.rng ?? new Rng(0);
    const bias = opts.bias ?? true;
    this.fc1 = this.module('fc1', new Linear(inFeatures, hiddenFeatures, { bias, rng }));
    this.fc2 = this.module('fc2', new Linear(hiddenFeatures, outFeatures, { bias, rng }));
    this.act = activation(opts.act ?? 'gelu_tanh');
    const p = opts.dropout ?? 0;
    // Dropout has no parameters, so registering it leaves the state-dict names untouched.
    this.drop = p > 0 ? this.module('drop', new Dropout(p, { rng: rng.fork('mlp.dropout') })) : null;
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = this.act(this.fc1.forward(x));
      if (this.drop) h = this.drop.forward(h);
      let y = this.fc2.forward(h);
      if (this.drop) y = this.drop.forward(y);
      return y;
    });
  }
}
