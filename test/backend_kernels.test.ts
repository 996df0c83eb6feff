import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { installKernelPatches } from '../src/backend/kernel_patches.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { Rng } from '../src/util/rng.js';

// Direct checks of the kernels we register: semantics at the edges, and that none leaks memory
// (IS_TEST makes the engine throw on a kernel that leaves a data id behind).

function randomTensor(shape: number[], rng: Rng): tf.Tensor {
  return tf.tensor(rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1))), shape);
}

beforeAll(async () => {
  await initBackend('wasm');
  installKernelPatches('cpu');
  tf.env().set('IS_TEST', true);
});

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
const dwConfigs: { x: [number, number, number, number]; f: [number, number, number, number]; strides: number | [number, number]; pad: Pad; round?: 'ceil' | 'floor' }[] = [
  { x: [2, 6, 6, 3], f: [3, 3, 3, 4], strides: 1, pad: 'same' },
  { x: [2, 7, 5, 3], f: [3, 3, 3, 2], strides: 2, pad: 'same' },
  { x: [1, 8, 9, 2], f: [3, 3, 2, 3], strides: 2, pad: 'valid' },
  { x: [1, 9, 8, 2], f: [4, 3, 2, 3], strides: [2, 3], pad: 'same' },
  { x: [1, 5, 5, 4], f: [1, 1, 4, 2], strides: 1, pad: 'valid' },
  { x: [1, 7, 6, 2], f: [3, 2, 2, 2], strides: 1, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  { x: [1, 6, 7, 2], f: [3, 3, 2, 2], strides: 2, pad: 1 },
  { x: [1, 6, 7, 2], f: [3, 3, 2, 2], strides: 2, pad: 1, round: 'ceil' },
];

describe('Conv2DBackpropFilter on wasm', () => {
  for (const c of dwConfigs) {
    it(`x ${c.x} filter ${c.f} strides ${c.strides} pad ${JSON.stringify(c.pad)}${c.round ? ` ${c.round}` : ''}`, async () => {
      const rng = new Rng(7);
      const xData = randomTensor(c.x, rng);
      const dims = await (async () => {
        await tf.setBackend('cpu');
        return tf.conv2d(xData as tf.Tensor4D, tf.zeros(c.f) as tf.Tensor4D, c.strides, c.pad, 'NHWC', 1, c.round).shape;
      })();
      const dyData = randomTensor(dims, rng);
      const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: c.round, filterShape: c.f };
      const run = async (backend: string) => {
        await tf.setBackend(backend);
        const x = tf.tensor(xData.dataSync(), c.x);
        const dy = tf.tensor(dyData.dataSync(), dims);
        const before = tf.memory().numTensors;
        const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
        expect(tf.memory().numTensors).toBe(before + 1);
        const v = dw.dataSync().slice();
        expect(dw.shape).toEqual(c.f);
        tf.dispose([x, dy, dw]);
        return v;
      };
      const ref = await run('cpu');
      const got = await run('wasm');
      let err = 0;
      let scale = 1;
      for (let i = 0; i < ref.length; i++) {
        err = Math.max(err, Math.abs(got[i]! - ref[i]!));
        scale = Math.max(scale, Math.abs(ref[i]!));
      }
      expect(err / scale).toBeLessThan(1e-5);
    });
  }

  it('NCHW inputs give the NHWC result (dW and the dx replacement)', async () => {
    await tf.setBackend('wasm');
    const rng = new Rng(3);
    const x = randomTensor([2, 5, 6, 3], rng);
    const wgt = randomTensor([3, 3, 3, 4], rng);
    const dy = randomTensor([2, 3, 3, 4], rng);
    const attrs = (dataFormat: string) => ({ strides: 2, pad: 'same', dataFormat, filterShape: [3, 3, 3, 4] }) as unknown as tf.NamedAttrMap;
    const nhwc = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs('NHWC')) as tf.Tensor;
    const xT = x.transpose([0, 3, 1, 2]);
    const dyT = dy.transpose([0, 3, 1, 2]);
    const nchw = tf.engine().runKernel('Conv2DBackpropFilter', { x: xT, dy: dyT }, attrs('NCHW')) as tf.Tensor;
    expect(tf.max(tf.abs(nhwc.sub(nchw))).dataSync()[0]).toBeLessThan(1e-5);
    const dxAttrs = (dataFormat: string, inputShape: number[]) =>
      ({ strides: 2, pad: 'same', dataFormat, inputShape }) as unknown as tf.NamedAttrMap;
    const dxNhwc = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: wgt }, dxAttrs('NHWC', [2, 5, 6, 3])) as tf.Tensor;
    const dxNchw = tf.engine().runKernel('Conv2DBackpropInput', { dy: dyT, filter: wgt }, dxAttrs('NCHW', [2, 3, 5, 6])) as tf.Tensor;
    expect(tf.max(tf.abs(dxNhwc.sub(dxNchw.transpose([0, 2, 3, 1])))).dataSync()[0]).toBeLessThan(1e-5);
    tf.dispose([x, wgt, dy, nhwc, xT, dyT, nchw, dxNhwc, dxNchw]);
  });
});

describe('Conv2DBackpropInput on wasm (replacement)', () => {
  for (const c of dwConfigs) {
    it(`x ${c.x} filter ${c.f} strides ${c.strides} pad ${JSON.stringify(c.pad)}${c.round ? ` ${c.round}` : ''}`, async () => {
      const rng = new Rng(9);
      const wData = randomTensor(c.f, rng);
      await tf.setBackend('cpu');
      const dims = tf.conv2d(tf.zeros(c.x) as tf.Tensor4D, wData as tf.Tensor4D, c.strides, c.pad, 'NHWC', 1, c.round).shape as number[];
      const dyData = randomTensor(dims, rng);
      const attrs = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: c.round, inputShape: c.x };
      const run = async (backend: string) => {
        await tf.setBackend(backend);
        const filter = tf.tensor(wData.dataSync(), c.f);
        const dy = tf.tensor(dyData.dataSync(), dims);
        const before = tf.memory().numTensors;
        const dx = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
        expect(tf.memory().numTensors).toBe(before + 1);
        expect(dx.shape).toEqual(c.x);
        const v = dx.dataSync().slice();
        tf.dispose([filter, dy, dx]);
        return v;
      };
      const ref = await run('cpu');
      const got = await run('wasm');
      let err = 0;
      let scale = 1;
      for (let i = 0; i < ref.length; i++) {
        err = Math.max(err, Math.abs(got[i]! - ref[i]!));
        scale = Math.max(scale, Math.abs(ref[i]!));
      }
      expect(err / scale).toBeLessThan(1e-5);
    });
  }
});

const gatherBackends = ['wasm', 'cpu', ...(registerNativeBackend() ? [NATIVE_BACKEND] : [])];

describe.each(gatherBackends)('embedding lookups on %s: GatherV2 and UnsortedSegmentSum', (backend) => {
  it('UnsortedSegmentSum sums rows by id and drops negative and out-of-range ids', async () => {
    await tf.setBackend(backend);
    const ids = [2, 0, 2, -1, 5, 1, 3];
    const rows = ids.map((_, i) => [i + 1, 10 * (i + 1)]);
    const expected = [0, 1, 2, 3].map((s) => {
      const acc = [0, 0];
      ids.forEach((id, i) => {
        if (id === s) (acc[0]! += rows[i]![0]!), (acc[1]! += rows[i]![1]!);
      });
      return acc;
    });
    for (const dtype of ['float32', 'int32'] as const) {
      const x = tf.tensor2d(rows, undefined, dtype);
      const segIds = tf.tensor1d(ids, 'int32');
      const out = tf.unsortedSegmentSum(x, segIds, 4);
      expect(out.dtype).toBe(dtype);
      expect(out.arraySync()).toEqual(expected);
      tf.dispose([x, segIds, out]);
    }
  });

  it('the gradient of a gather with a 2-D index tensor counts each row once per lookup', async () => {
    await tf.setBackend(backend);
    const table = tf.variable(tf.tensor2d([[1, 2], [3, 4], [5, 6]]));
    const ids = tf.tensor2d([[0, 2], [2, 2]], undefined, 'int32');
    const { value, grads } = tf.variableGrads(() => tf.gather(table, ids).sum() as tf.Scalar, [table]);
    expect(grads[table.name]!.arraySync()).toEqual([[1, 1], [0, 0], [3, 3]]);
    tf.dispose([table, ids, value, grads[table.name]!]);
  });

  it('GatherV2 picks whole slices along any axis, for index tensors of any rank', async () => {
    await tf.setBackend(backend);
    const shape = [3, 4, 5];
    const values = Float32Array.from({ length: 60 }, (_, i) => i * 0.5 - 7);
    const at = (i: number, j: number, k: number) => values[(i * 4 + j) * 5 + k]!;
    const x = tf.tensor3d(values, shape as [number, number, number]);
    // axis 1, ids [[3, 0, 3], [1, 2, 2]] → [3, 2, 3, 5]
    const ids = [[3, 0, 3], [1, 2, 2]];
    const out = tf.gather(x, tf.tensor2d(ids, undefined, 'int32'), 1);
    expect(out.shape).toEqual([3, 2, 3, 5]);
    const want = [0, 1, 2].map((i) => ids.map((row) => row.map((j) => [0, 1, 2, 3, 4].map((k) => at(i, j, k)))));
    expect(out.arraySync()).toEqual(want);
    // axis 0 with int32 data, the long-row path (rows of 100 values).
    const wide = tf.tensor2d(Int32Array.from({ length: 300 }, (_, i) => i * 7 - 40), [3, 100], 'int32');
    const picked = tf.gather(wide, tf.tensor1d([2, 2, 0], 'int32'));
    const w = wide.arraySync() as number[][];
    expect(picked.dtype).toBe('int32');
    expect(picked.arraySync()).toEqual([w[2], w[2], w[0]]);
    expect(() => tf.gather(x, tf.tensor1d([4], 'int32'), 1).dataSync()).toThrow(/not in \[0, 3\]/);
    tf.dispose([x, out, wide, picked]);
  });

  // tfjs 4.22's wasm kernel gets batchDims wrong (rows 1 and 2 come out shifted), and nothing here uses it.
  it.skipIf(backend === 'wasm')('GatherV2 with batchDims still answers through the stock kernel', async () => {
    await tf.setBackend(backend);
    const values = Float32Array.from({ length: 60 }, (_, i) => i * 0.5 - 7);
    const at = (i: number, j: number, k: number) => values[(i * 4 + j) * 5 + k]!;
    const x = tf.tensor3d(values, [3, 4, 5]);
    const batched = tf.gather(x, tf.tensor2d([[1], [3], [0]], undefined, 'int32'), 2, 1);
    expect(batched.arraySync()).toEqual([0, 1, 2].map((i) => [0, 1, 2, 3].map((j) => [at(i, j, [1, 3, 0][i]!)])));
    installKernelPatches('cpu'); // a second install must not make the stock fallback point at ours
    expect(tf.gather(x, tf.tensor2d([[1], [3], [0]], undefined, 'int32'), 2, 1).arraySync()).toEqual(batched.arraySync());
    tf.dispose([x, batched]);
  });
});

describe('ResizeBilinearGrad', () => {
  it('matches the transpose of the forward resize on cpu and wasm (half-pixel, non-square)', async () => {
    // <dy, resize(x)> = <resizeGrad(dy), x> for every x: check on the unit vectors e_k.
    const inShape: [number, number, number, number] = [1, 2, 3, 1];
    const outSize: [number, number] = [5, 4];
    for (const backend of ['cpu', 'wasm']) {
      await tf.setBackend(backend);
      const dy = tf.tensor(new Rng(11).fillNormal(new Float32Array(20)), [1, 5, 4, 1]);
      const x0 = tf.zeros(inShape);
      const grad = tf.grad((x: tf.Tensor) => tf.image.resizeBilinear(x as tf.Tensor4D, outSize, false, true).mul(dy).sum())(x0);
      expect(grad.shape).toEqual(inShape);
      const g = grad.dataSync();
      for (let k = 0; k < 6; k++) {
        const e = new Float32Array(6);
        e[k] = 1;
        const y = tf.image.resizeBilinear(tf.tensor(e, inShape) as tf.Tensor4D, outSize, false, true);
        const inner = tf.sum(y.mul(dy)).dataSync()[0]!;
        expect(g[k]).toBeCloseTo(inner, 5);
        tf.dispose(y);
      }
      tf.dispose([dy, x0, grad]);
    }
  });
});
