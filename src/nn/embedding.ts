import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { normal } from './init.js';

/** Lookup table [num, dim], initialised N(0, 1) as torch.nn.Embedding. */
export class Embedding extends Module {
  readonly weight: tf.Variable;
  constructor(readonly numEmbeddings: number, readonly dim: number, opts: { rng?: Rng; std?: number } = {}) {
    super();
    this.weight = this.param('weight', normal([numEmbeddings, dim], opts.std ?? 1, opts.rng ?? new Rng(0)));
  }
  /** ids: int32 of any shape → [...ids.shape, dim]. */
  forward(ids: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.gather(this.weight, ids.flatten().toInt()).reshape([...ids.shape, this.dim]));
  }
}
