import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Float32Pool, nativeBuffers } from '../src/backend/native/buffer_pool.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';

const N = Float32Pool.MIN_LENGTH * 2;

describe('Float32Pool bookkeeping', () => {
  it('recycles an output only after the data that held it is released', () => {
    const pool = new Float32Pool();
    const id = {};
    const a = pool.take(N);
    pool.stored(id, a);
    expect(pool.take(N)).not.toBe(a); // still in use
    pool.released(id, a);
    expect(pool.bytes).toBe(N * 4);
    expect(pool.take(N)).toBe(a);
    expect(pool.bytes).toBe(0);
  });

  it('never recycles arrays it did not make, small arrays, read-out arrays, shared arrays or viewed arrays', () => {
    const pool = new Float32Pool();
    const foreign = new Float32Array(N);
    pool.stored({}, foreign);
    pool.released({}, foreign);
    const small = pool.take(8);
    const smallId = {};
    pool.stored(smallId, small);
    pool.released(smallId, small);
    const read = pool.take(N);
    const readId = {};
    pool.stored(readId, read);
    pool.escape(read);
    pool.released(readId, read);
    const shared = pool.take(N);
    const [s1, s2] = [{}, {}];
    pool.stored(s1, shared);
    pool.stored(s2, shared);
    pool.released(s1, shared);
    pool.released(s2, shared);
    const viewed = pool.take(N);
    const [v1, v2] = [{}, {}];
    pool.stored(v1, viewed);
    pool.stored(v2, viewed.subarray(16, 32));
    pool.released(v1, viewed);
    expect(pool.bytes).toBe(0);
  });

  it('keeps at most MAX_PER_LENGTH arrays of a length and at most maxBytes in all', () => {
    const fill = (pool: Float32Pool, count: number) => {
      const held = Array.from({ length: count }, () => [{}, pool.take(N)] as const);
      for (const [id, a] of held) pool.stored(id, a);
      for (const [id, a] of held) pool.released(id, a);
    };
    const roomy = new Float32Pool(2 ** 40);
    fill(roomy, Float32Pool.MAX_PER_LENGTH + 4);
    expect(roomy.bytes).toBe(Float32Pool.MAX_PER_LENGTH * N * 4);
    const tight = new Float32Pool(N * 4 * 3);
    fill(tight, 5);
    expect(tight.bytes).toBe(N * 4 * 3);
  });

  it('ignores a release by data that does not hold the array', () => {
    const pool = new Float32Pool();
    const a = pool.take(N);
    pool.stored({}, a);
    pool.released({}, a);
    expect(pool.bytes).toBe(0);
  });

  it('poison fills recycled arrays with NaN', () => {
    const pool = new Float32Pool();
    pool.poison = true;
    const id = {};
    const a = pool.take(N).fill(1);
    pool.stored(id, a);
    pool.released(id, a);
    expect(Number.isNaN(pool.take(N)[0]!)).toBe(true);
  });
});

describe.skipIf(!registerNativeBackend())('the native backend recycles kernel outputs safely', () => {
  beforeAll(async () => {
    await tf.setBackend(NATIVE_BACKEND);
    nativeBuffers.poison = true;
  });
  afterAll(async () => {
    nativeBuffers.poison = false;
    nativeBuffers.clear();
    await tf.setBackend('cpu');
  });

  it('reuses the buffer of a disposed intermediate for the next output of that size', () => {
    const x = tf.randomNormal([N]);
    const y = x.add(1);
    const yBuffer = (tf.backend() as unknown as { data: { get(id: unknown): { values: Float32Array } } }).data.get(y.dataId).values;
    y.dispose();
    const z = x.mul(2);
    const zBuffer = (tf.backend() as unknown as { data: { get(id: unknown): { values: Float32Array } } }).data.get(z.dataId).values;
    expect(zBuffer).toBe(yBuffer);
    const xs = x.dataSync();
    const zs = z.dataSync();
    for (let i = 0; i < N; i += 997) expect(zs[i]).toBeCloseTo(2 * xs[i]!, 6);
    tf.dispose([x, z]);
  });

  it('values a caller read out stay intact after the tensor is disposed and more kernels run', () => {
    const x = tf.randomNormal([N]);
    const y = x.mul(3);
    const values = y.dataSync();
    const copy = values.slice();
    y.dispose();
    const others = Array.from({ length: 4 }, (_, i) => x.add(i));
    expect(values).toEqual(copy);
    tf.dispose([x, ...others]);
  });

  it('user arrays wrapped by tf.tensor are never recycled', () => {
    const data = new Float32Array(N).fill(5);
    const t = tf.tensor(data);
    const u = t.add(1);
    t.dispose();
    const v = u.mul(2);
    expect(data[0]).toBe(5);
    expect(data[N - 1]).toBe(5);
    tf.dispose([u, v]);
  });

  it('a training-style loop gives the same values as the cpu backend with poisoned recycling', async () => {
    const xData = Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37));
    const run = () => {
      const x = tf.tensor2d(xData, [N / 8, 8]);
      const w = tf.variable(tf.linspace(-1, 1, 64).reshape([8, 8]));
      for (let s = 0; s < 5; s++) {
        const { value, grads } = tf.variableGrads(() => tf.tanh(x.matMul(w)).square().mean() as tf.Scalar, [w]);
        w.assign(w.sub(grads[w.name]!.mul(0.5)));
        tf.dispose([value, grads[w.name]!]);
      }
      const out = w.dataSync().slice();
      tf.dispose([x, w]);
      return out;
    };
    const reusesBefore = nativeBuffers.reuses;
    const nat = run();
    expect(nativeBuffers.reuses).toBeGreaterThan(reusesBefore);
    await tf.setBackend('cpu');
    const ref = run();
    await tf.setBackend(NATIVE_BACKEND);
    for (let i = 0; i < ref.length; i++) expect(nat[i]).toBeCloseTo(ref[i]!, 4);
  });
});
