import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';

export interface DropoutOptions {
  /** Source of the masks; a per-call Rng passed to forward takes precedence. */
  rng?: Rng;
}

/**
 * Inverted dropout as torch.nn.Dropout: in training each element is zeroed with probability p and the
 * survivors are scaled by 1/(1−p), so eval mode is the identity with the same expected activation.
 * Masks come from the project's seeded Rng (not tfjs's own generator) so a resumed run that restores
 * the Rng state redraws exactly the same masks.
 */
export class Dropout extends Module {
  private readonly rng: Rng | undefined;

  constructor(readonly p: number, opts: DropoutOptions = {}) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout probability must be in [0, 1), got ${p}`);
    this.rng = opts.rng;
  }

  forward(x: tf.Tensor, rng?: Rng): tf.Tensor {
    if (!this.training || this.p === 0) return x.clone();
    const source = rng ?? this.rng;
    if (!source) throw new Error('Dropout in training mode needs an Rng: pass one at construction or to forward()');
    const u = source.fillUniform(new Float32Array(x.size), 0, 1);
    return tf.tidy(() => {
      const keep = tf.tensor(u, x.shape).greaterEqual(this.p).cast('float32');
      return x.mul(keep.mul(1 / (1 - this.p)));
    });
  }
}
