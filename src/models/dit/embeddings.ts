import { tf } from '../../backend/tf.js';
import { geluTanh, silu } from '../../nn/activations.js';
import { Conv2d } from '../../nn/conv.js';
import { Embedding } from '../../nn/embedding.js';
import { Linear } from '../../nn/linear.js';
import { Module } from '../../nn/module.js';
import { Rng } from '../../util/rng.js';

/**
 * The fixed 2-D sin-cos table of MAE/DiT, [gridSize², dim] row-major over (row, column) tokens.
 * The first dim/2 channels encode the column index and the last dim/2 the row index (the reference
 * builds `meshgrid(grid_w, grid_h)` and takes the w grid first); each half is [sin(pos·ω), cos(pos·ω)]
 * with ω_k = 10000^(−k/(dim/4)). Computed in float64 as numpy does, rounded once to float32.
 */
export function sincosPosEmbed2d(dim: number, gridSize: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`2-D sin-cos embedding needs dim divisible by 4, got ${dim}`);
  const half = dim / 2;
  const quarter = dim / 4;
  const omega = Float64Array.from({ length: quarter }, (_, k) => 1 / 10000 ** (k / quarter));
  const out = new Float32Array(gridSize * gridSize * dim);
  for (let row = 0; row < gridSize; row++) {
    for (let col = 0; col < gridSize; col++) {
      const base = (row * gridSize + col) * dim;
      for (let k = 0; k < quarter; k++) {
        out[base + k] = Math.sin(col * omega[k]!);
        out[base + quarter + k] = Math.cos(col * omega[k]!);
        out[base + half + k] = Math.sin(row * omega[k]!);
        out[base + half + quarter + k] = Math.cos(row * omega[k]!);
      }
    }
  }
  return out;
}

/**
 * exp(−ln(maxPeriod)·i/half) for i < half. The exponent is rounded step by step as the reference's
 * float32 tensor arithmetic rounds it (t reaches 999, so an exponent off by one ulp would move
 * cos(t·f) visibly); the exp itself is correctly rounded, where PyTorch's vectorised float32 exp is
 * one ulp off for 15 of DiT's 128 frequencies (≤ 2e-5 in the features at t = 999).
 */
export function timestepFrequencies(dim: number, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const negLog = Math.fround(-Math.log(maxPeriod));
  return Float32Array.from({ length: half }, (_, i) => Math.exp(Math.fround(Math.fround(negLog * i) / half)));
}

/** Sinusoidal features of (possibly fractional) timesteps t [N] → [N, dim] = [cos(t·f), sin(t·f)] (+ a zero column if dim is odd). */
export function timestepEmbedding(t: tf.Tensor, dim: number, maxPeriod = 10000): tf.Tensor2D {
  const freqs = timestepFrequencies(dim, maxPeriod);
  return tf.tidy(() => {
    const n = t.size;
    const args = t.cast('float32').reshape([n, 1]).mul(tf.tensor2d(freqs, [1, freqs.length]));
    const parts = [tf.cos(args), tf.sin(args)];
    if (dim % 2) parts.push(tf.zeros([n, 1]));
    return tf.concat(parts, -1) as tf.Tensor2D;
  });
}

/** timm's PatchEmbed: a p×p stride-p convolution, then the grid flattened to tokens. Input NHWC. */
export class PatchEmbed extends Module {
  readonly proj: Conv2d;
  readonly gridSize: number;

  constructor(readonly imgSize: number, readonly patchSize: number, inChannels: number, embedDim: number, rng: Rng) {
    super();
    this.gridSize = imgSize / patchSize;
    this.proj = this.module('proj', new Conv2d(inChannels, embedDim, patchSize, { stride: patchSize, padding: 'valid', rng }));
  }

  get numPatches(): number {
    return this.gridSize * this.gridSize;
  }

  /** x [N, H, W, C] with H = W = imgSize → tokens [N, T, D], row-major over the patch grid. */
  forward(x: tf.Tensor4D): tf.Tensor3D {
    const [n, h, w] = x.shape;
    if (h !== this.imgSize || w !== this.imgSize) throw new Error(`PatchEmbed: input ${h}×${w} does not match the model's ${this.imgSize}×${this.imgSize}`);
    return tf.tidy(() => this.proj.forward(x).reshape([n, this.numPatches, this.proj.outChannels]) as tf.Tensor3D);
  }
}

/** `mlp` of the timestep embedder: Linear → SiLU → Linear, children named 0 and 2 as in nn.Sequential. */
class TimestepMlp extends Module {
  readonly first: Linear;
  readonly second: Linear;
  constructor(inDim: number, dim: number, rng: Rng) {
    super();
    this.first = this.module('0', new Linear(inDim, dim, { rng }));
    this.second = this.module('2', new Linear(dim, dim, { rng }));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.second.forward(silu(this.first.forward(x))));
  }
}

/** Timestep t [N] → [N, D]: sinusoidal features through a two-layer SiLU MLP. */
export class TimestepEmbedder extends Module {
  readonly mlp: TimestepMlp;
  constructor(hiddenSize: number, readonly frequencyDim: number, rng: Rng) {
    super();
    this.mlp = this.module('mlp', new TimestepMlp(frequencyDim, hiddenSize, rng));
  }
  forward(t: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => this.mlp.forward(timestepEmbedding(t, this.frequencyDim)) as tf.Tensor2D);
  }
}

export interface LabelDropOptions {
  /** 1 where the label must become the null class (CFG's unconditional half); overrides random drops. */
  forceDropIds?: tf.Tensor;
  /** Source of the random drops; defaults to the embedder's own stream. */
  rng?: Rng;
}

/**
 * Class label [N] → [N, D]. With dropout > 0 the table has one extra row, the null class at index
 * numClasses, which training substitutes for a label with probability dropoutProb.
 */
export class LabelEmbedder extends Module {
  readonly embeddingTable: Embedding;
  private readonly rng: Rng;

  constructor(readonly numClasses: number, hiddenSize: number, readonly dropoutProb: number, rng: Rng) {
    super();
    const rows = numClasses + (dropoutProb > 0 ? 1 : 0);
    this.embeddingTable = this.module('embedding_table', new Embedding(rows, hiddenSize, { rng }));
    this.rng = rng.fork('label-dropout');
  }

  /** Labels with the dropped ones replaced by the null class. */
  tokenDrop(labels: tf.Tensor, opts: LabelDropOptions = {}): tf.Tensor {
    if (this.dropoutProb === 0) throw new Error('LabelEmbedder: no null class to drop to (class dropout is 0)');
    const n = labels.size;
    const drop = opts.forceDropIds
      ? null
      : Int32Array.from({ length: n }, () => ((opts.rng ?? this.rng).uniform() < this.dropoutProb ? 1 : 0));
    return tf.tidy(() => {
      const mask = (opts.forceDropIds ?? tf.tensor1d(drop!, 'int32')).reshape([n]).equal(1);
      return tf.where(mask, tf.fill([n], this.numClasses, 'int32'), labels.reshape([n]).toInt());
    });
  }

  forward(labels: tf.Tensor, train: boolean, opts: LabelDropOptions = {}): tf.Tensor2D {
    return tf.tidy(() => {
      const drop = (train && this.dropoutProb > 0) || opts.forceDropIds !== undefined;
      const ids = drop ? this.tokenDrop(labels, opts) : labels;
      return this.embeddingTable.forward(ids.reshape([labels.size])) as tf.Tensor2D;
    });
  }
}

/**
 * Linear → activation → Linear from a text encoder's width to the model's (diffusers'
 * PixArtAlphaTextProjection naming: `linear_1`, `linear_2`). SiLU for the pooled vector (SD3's
 * pooled projection), tanh-GELU for the token states (PixArt-α's caption projection).
 */
export class TextProjection extends Module {
  readonly linear1: Linear;
  readonly linear2: Linear;
  constructor(inDim: number, hiddenSize: number, private readonly act: 'silu' | 'gelu_tanh', rng: Rng) {
    super();
    this.linear1 = this.module('linear_1', new Linear(inDim, hiddenSize, { rng }));
    this.linear2 = this.module('linear_2', new Linear(hiddenSize, hiddenSize, { rng }));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const h = this.linear1.forward(x);
      return this.linear2.forward(this.act === 'silu' ? silu(h) : geluTanh(h));
    });
  }
}
