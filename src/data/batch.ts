import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import type { Dataset } from './dataset.js';

/**
 * Epoch-wise shuffled batches. Each epoch's order (and its flip choices) is a pure function of
 * (seed, epoch), so the whole sampler state is the {epoch, index} pair: a resumed run that seeks
 * there yields exactly the batches the uninterrupted run would have.
 */

export interface SamplerPosition {
  epoch: number;
  /** How many samples of this epoch's order have been handed out. */
  index: number;
}

export interface BatchSamplerOptions {
  seed?: number;
  /** Default true; false walks the dataset in index order every epoch. */
  shuffle?: boolean;
  /**
   * Mirror each sample left-right with probability 1/2. Default false: for captions that name
   * sides (the procedural data) the image alone would then contradict its caption, so the
   * dataset's `mirrorCaption` is applied when it has one; other datasets' captions are kept.
   */
  flip?: boolean;
}

export interface Batch {
  /** [B, H, W, 3] in [-1, 1]. The caller owns and disposes it. */
  images: tf.Tensor4D;
  captions: string[];
  /** Dataset indices, in batch order. */
  indices: number[];
  flipped: boolean[];
}

export interface BatchItem {
  index: number;
  flip: boolean;
  /** The epoch this item belongs to: with the index, the key a seeded per-sample augmentation needs. */
  epoch: number;
}

export class BatchSampler {
  private epoch = 0;
  private index = 0;
  private orderEpoch = -1;
  private order: Uint32Array = new Uint32Array(0);
  private flips: Uint8Array = new Uint8Array(0);
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly flip: boolean;

  constructor(
    readonly dataset: Dataset,
    opts: BatchSamplerOptions = {},
  ) {
    if (dataset.length < 1) throw new Error('cannot sample batches from an empty dataset');
    this.seed = opts.seed ?? 0;
    this.shuffle = opts.shuffle ?? true;
    this.flip = opts.flip ?? false;
  }

  get position(): SamplerPosition {
    return { epoch: this.epoch, index: this.index };
  }

  /** Continue from a position saved by `position` (e.g. from a checkpoint). */
  seek(pos: SamplerPosition): void {
    if (!Number.isInteger(pos.epoch) || pos.epoch < 0 || !Number.isInteger(pos.index) || pos.index < 0 || pos.index > this.dataset.length) {
      throw new RangeError(`sampler position must be {epoch ≥ 0, 0 ≤ index ≤ ${this.dataset.length}}, got ${JSON.stringify(pos)}`);
    }
    this.epoch = pos.epoch;
    this.index = pos.index;
  }

  private ensureOrder(): void {
    if (this.orderEpoch === this.epoch) return;
    const n = this.dataset.length;
    const ids = Array.from({ length: n }, (_, i) => i);
    const base = new Rng(this.seed);
    if (this.shuffle) base.fork(`order:${this.epoch}`).shuffle(ids);
    this.order = Uint32Array.from(ids);
    this.flips = new Uint8Array(n);
    if (this.flip) {
      const rng = base.fork(`flip:${this.epoch}`);
      for (let i = 0; i < n; i++) this.flips[i] = rng.uniform() < 0.5 ? 1 : 0;
    }
    this.orderEpoch = this.epoch;
  }

  /** The next n (index, flip) choices, crossing into the next epoch when this one runs out. */
  nextItems(n: number): BatchItem[] {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`batch size must be a positive integer, got ${n}`);
    const items: BatchItem[] = [];
    while (items.length < n) {
      if (this.index >= this.dataset.length) {
        this.epoch++;
        this.index = 0;
      }
      this.ensureOrder();
      items.push({ index: this.order[this.index]!, flip: this.flips[this.index] === 1, epoch: this.epoch });
      this.index++;
    }
    return items;
  }

  nextBatch(n: number): Batch {
    const items = this.nextItems(n);
    const { width: w, height: h } = this.dataset;
    const per = w * h * 3;
    const data = new Float32Array(items.length * per);
    const captions: string[] = [];
    items.forEach(({ index, flip }, b) => {
      const sample = this.dataset.get(index);
      if (sample.image.length !== per) {
        throw new Error(`dataset sample ${index} has ${sample.image.length} values, expected ${w}x${h}x3 = ${per}`);
      }
      const src = sample.image;
      const off = b * per;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const si = 3 * (y * w + (flip ? w - 1 - x : x));
          const di = off + 3 * (y * w + x);
          data[di] = src[si]! / 127.5 - 1;
          data[di + 1] = src[si + 1]! / 127.5 - 1;
          data[di + 2] = src[si + 2]! / 127.5 - 1;
        }
      }
      captions.push(flip && this.dataset.mirrorCaption ? this.dataset.mirrorCaption(sample.caption) : sample.caption);
    });
    return {
      images: tf.tensor4d(data, [items.length, h, w, 3]),
      captions,
      indices: items.map((it) => it.index),
      flipped: items.map((it) => it.flip),
    };
  }
}
