import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { splitBlocks, splitSizes } from '../src/backend/split_v.js';

/** Reference: element-by-element index arithmetic, independent of the block copy. */
function referenceSplit(src: Float32Array, shape: number[], axis: number, sizes: number[]): Float32Array[] {
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const outs: Float32Array[] = [];
  let offset = 0;
  for (const size of sizes) {
    const oshape = shape.map((d, i) => (i === axis ? size : d));
    const n = oshape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    for (let flat = 0; flat < n; flat++) {
      let rem = flat;
      let srcIndex = 0;
      for (let i = oshape.length - 1; i >= 0; i--) {
        const c = rem % oshape[i]!;
        rem = Math.floor(rem / oshape[i]!);
        srcIndex += (i === axis ? c + offset : c) * strides[i]!;
      }
      out[flat] = src[srcIndex]!;
    }
    outs.push(out);
    offset += size;
  }
  return outs;
}

describe('SplitV block copy', () => {
  it('resolves -1 and equal splits', () => {
    expect(splitSizes(10, [3, -1, 2])).toEqual([3, 5, 2]);
    expect(splitSizes(12, 3)).toEqual([4, 4, 4]);
    expect(() => splitSizes(10, 3)).toThrow(/divisible/);
  });

  it('matches element-wise indexing for every axis, short and long runs', () => {
    const shape = [3, 5, 7, 70];
    const src = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i));
    for (let axis = 0; axis < 4; axis++) {
      const dim = shape[axis]!;
      const sizes = [1, dim - 1 - Math.floor(dim / 2), Math.floor(dim / 2)].filter((s) => s > 0);
      const outs = sizes.map((s) => new Float32Array((src.length / dim) * s));
      splitBlocks(src, shape, axis, sizes, outs);
      const ref = referenceSplit(src, shape, axis, sizes);
      outs.forEach((o, i) => expect(Array.from(o)).toEqual(Array.from(ref[i]!)));
    }
  });

  for (const backend of ['cpu', 'wasm']) {
    it(`is the registered SplitV on ${backend}, and concat's gradient uses it correctly`, async () => {
      const previous = tf.getBackend();
      await initBackend(backend);
      try {
        const a = tf.randomNormal([2, 4, 4, 3]);
        const b = tf.randomNormal([2, 4, 4, 5]);
        const w = tf.randomNormal([2, 4, 4, 8]);
        const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.concat([x, y], 3).mul(w).sum())([a, b]);
        expect(Array.from(ga!.dataSync())).toEqual(Array.from(w.slice([0, 0, 0, 0], [2, 4, 4, 3]).dataSync()));
        expect(Array.from(gb!.dataSync())).toEqual(Array.from(w.slice([0, 0, 0, 3], [2, 4, 4, 5]).dataSync()));
        const parts = tf.split(tf.range(0, 24).reshape([2, 12]), [5, -1, 3], 1);
        expect(parts.map((p) => Array.from(p.dataSync()))).toEqual([
          [0, 1, 2, 3, 4, 12, 13, 14, 15, 16],
          [5, 6, 7, 8, 17, 18, 19, 20],
          [9, 10, 11, 21, 22, 23],
        ]);
      } finally {
        await tf.setBackend(previous);
      }
    });
  }
});
