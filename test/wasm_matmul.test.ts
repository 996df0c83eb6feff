import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { installKernelPatches } from '../src/backend/kernel_patches.js';
import { Rng } from '../src/util/rng.js';

// The wasm BatchMatMul replacement (src/backend/wasm/batch_matmul.ts) against the cpu backend.

beforeAll(async () => {
  await initBackend('wasm');
  installKernelPatches('cpu');
  tf.env().set('IS_TEST', true);
});

// tfjs-core's BatchMatMul gradient does not reduce over broadcast batch dims (it throws on cpu
// too), so those cases compare values only.
const cases: { a: number[]; b: number[]; ta?: boolean; tb?: boolean; label: string; noGrad?: true }[] = [
  { a: [7, 5], b: [5, 3], label: '2-D' },
  { a: [7, 5], b: [3, 5], tb: true, label: '2-D x·Bᵀ (Linear)' },
  { a: [5, 7], b: [5, 3], ta: true, label: '2-D Aᵀ·B (weight gradient)' },
  { a: [5, 7], b: [3, 5], ta: true, tb: true, label: '2-D Aᵀ·Bᵀ' },
  { a: [4, 6, 5], b: [4, 5, 3], label: 'batched both' },
  { a: [2, 3, 6, 8], b: [2, 3, 6, 8], tb: true, label: 'attention scores q·kᵀ' },
  { a: [2, 3, 6, 6], b: [2, 3, 6, 8], label: 'attention p·v' },
  { a: [4, 6, 5], b: [5, 3], label: 'batch on the left only, rank 3 × 2', noGrad: true },
  { a: [4, 6, 5], b: [1, 3, 5], tb: true, label: 'batch on the left only, right batch 1', noGrad: true },
  { a: [6, 5], b: [4, 5, 3], label: 'batch on the right only', noGrad: true },
  { a: [1, 6, 5], b: [4, 6, 3], ta: true, label: 'left batch 1 broadcast, transposed', noGrad: true },
  { a: [2, 1, 4, 5], b: [1, 3, 5, 2], label: 'partly broadcast batch (stock kernel)', noGrad: true },
];

function values(shape: number[], rng: Rng): Float32Array {
  return rng.fillNormal(new Float32Array(shape.reduce((p, d) => p * d, 1)));
}

async function on<T>(backend: string, fn: () => T): Promise<T> {
  await tf.setBackend(backend);
  return fn();
}

describe('BatchMatMul on wasm (replacement)', () => {
  for (const c of cases) {
    it(`${c.label}: a [${c.a}]${c.ta ? 'ᵀ' : ''} b [${c.b}]${c.tb ? 'ᵀ' : ''} matches cpu${c.noGrad ? '' : ', value and gradients'}`, async () => {
      const rng = new Rng(11);
      const [av, bv] = [values(c.a, rng), values(c.b, rng)];
      const run = (backend: string) =>
        on(backend, () => {
          const a = tf.tensor(av, c.a);
          const b = tf.tensor(bv, c.b);
          const before = tf.memory().numTensors;
          const y = tf.matMul(a, b, c.ta, c.tb);
          expect(tf.memory().numTensors).toBe(before + 1);
          const r = tf.tensor(values(y.shape, new Rng(5)), y.shape);
          const [ga, gb] = c.noGrad ? [tf.zeros([1]), tf.zeros([1])] : tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.matMul(x, w, c.ta, c.tb).mul(r).sum())([a, b]);
          const out = { y: y.dataSync().slice(), shape: y.shape, ga: ga!.dataSync().slice(), gb: gb!.dataSync().slice() };
          tf.dispose([a, b, y, r, ga!, gb!]);
          return out;
        });
      const want = await run('cpu');
      const got = await run('wasm');
      expect(got.shape).toEqual(want.shape);
      for (const k of ['y', 'ga', 'gb'] as const) {
        let worst = 0;
        for (let i = 0; i < want[k].length; i++) worst = Math.max(worst, Math.abs(got[k][i]! - want[k][i]!));
        expect(worst, k).toBeLessThan(1e-4);
      }
    });
  }

  it('routes a transposed product through a transpose and the XNNPACK case of the stock kernel', async () => {
    await tf.setBackend('wasm');
    const [x, w] = [tf.ones([4, 3]), tf.ones([2, 3])];
    const prof = await tf.profile(() => tf.matMul(x, w, false, true).dataSync());
    const names = prof.kernels.map((k) => k.name);
    expect(names).toContain('Transpose');
    expect(names).toContain('SfWasmStockBatchMatMul');
    tf.dispose([x, w]);
  });
});
