import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { saveSafetensors, type TensorEntry } from '../src/io/safetensors.js';
import { FidInceptionV3, inceptionFeatures, loadFidInception } from '../src/models/inception/index.js';
import { resizeForInception } from '../src/eval/resize.js';
import { hashUniform } from './helpers/hash_values.js';

// Outputs of scripts/fixtures/inception_ref.py (torch, pytorch-fid's FID Inception structure) for weights
// and images regenerated here from the same hash streams.
const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/inception_ref.json', import.meta.url), 'utf8'));

/** inception_ref.py's hash_tensor(): the value rule per parameter kind. */
function hashTensor(name: string, shape: number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const u = hashUniform(`inception:${name}`, n);
  let f: (x: number) => number;
  if (name.endsWith('conv.weight')) {
    const bound = Math.sqrt(6 / (shape[1]! * shape[2]! * shape[3]!));
    f = (x) => (2 * x - 1) * bound;
  } else if (name.endsWith('bn.weight')) f = (x) => 0.6 + 0.8 * x;
  else if (name.endsWith('bn.bias') || name.endsWith('running_mean')) f = (x) => (x - 0.5) * 0.4;
  else if (name.endsWith('running_var')) f = (x) => 0.5 + x;
  else if (name === 'fc.weight') f = (x) => (2 * x - 1) * Math.sqrt(3 / shape[1]!);
  else if (name === 'fc.bias') f = (x) => (x - 0.5) * 0.2;
  else throw new Error(`no rule for ${name}`);
  return Float32Array.from(u, f);
}

function hashWeights(model: FidInceptionV3): Map<string, TensorEntry> {
  return new Map([...model.stateDict()].map(([name, t]) => [name, { shape: t.shape, data: hashTensor(name, t.shape) }]));
}

/** Values in the state dict (parameters and BatchNorm running statistics), as torch counts them. */
function stateDictSize(model: FidInceptionV3): number {
  return [...model.stateDict().values()].reduce((a, t) => a + t.size, 0);
}

function images(n: number, size: number): tf.Tensor4D {
  return tf.tensor4d(Float32Array.from(hashUniform(`inception-input-${size}`, n * size * size * 3)), [n, size, size, 3]);
}

function relErr(got: Float32Array, want: number[]): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i]! - want[i]!));
    den = Math.max(den, Math.abs(want[i]!));
  }
  return num / den;
}

const dir = mkdtempSync(join(tmpdir(), 'sf-inception-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const backends = ['cpu', ...(registerNativeBackend() ? [NATIVE_BACKEND] : [])];

describe('FID Inception v3 (pytorch-fid structure) vs PyTorch', () => {
  it('has pytorch-fid parameter names and counts', () => {
    const model = new FidInceptionV3({ widthDivisor: 8, numClasses: 1008 });
    const names = [...model.stateDict().keys()];
    expect(names.length).toBe(ref.reduced.tensors);
    expect(stateDictSize(model)).toBe(ref.reduced.parameters);
    for (const n of ['Conv2d_1a_3x3.conv.weight', 'Conv2d_1a_3x3.bn.running_mean', 'Mixed_6b.branch7x7dbl_5.conv.weight', 'Mixed_7c.branch3x3dbl_3b.bn.running_var', 'fc.weight', 'fc.bias']) {
      expect(names).toContain(n);
    }
    expect(model.stateDict().get('Mixed_6b.branch7x7_2.conv.weight')!.shape).toEqual([16, 16, 1, 7]);
    expect(model.featureDim).toBe(256);
    model.dispose();
  });

  for (const backend of backends) {
    it(`reduced width (1/8) at 139 px, batch 2, loaded from safetensors by name, on ${backend}`, async () => {
      const prev = tf.getBackend();
      await tf.setBackend(backend);
      try {
        const c = ref.reduced;
        const file = join(dir, 'reduced.safetensors');
        const init = new FidInceptionV3({ widthDivisor: 8, numClasses: 1008 });
        // A pytorch-fid checkpoint also carries BatchNorm step counters; the loader ignores them.
        const tensors = hashWeights(init);
        tensors.set('Conv2d_1a_3x3.bn.num_batches_tracked', { dtype: 'I32', shape: [], data: new Int32Array([0]) } as TensorEntry);
        init.dispose();
        await saveSafetensors(file, tensors);
        const model = loadFidInception(file, { widthDivisor: 8, numClasses: 1008 });
        const x = images(c.n, c.size);
        const out = model.forward(x);
        expect(out.pool3.shape).toEqual([2, 256]);
        expect(out.logits.shape).toEqual([2, 1008]);
        expect(relErr(out.pool3.dataSync() as Float32Array, c.pool3)).toBeLessThan(2e-5);
        expect(relErr(out.logits.dataSync() as Float32Array, c.logits)).toBeLessThan(2e-5);
        expect(relErr(out.logitsUnbiased.dataSync() as Float32Array, c.logits_unbiased)).toBeLessThan(2e-5);
        tf.dispose([x, out.pool3, out.logits, out.logitsUnbiased]);
        model.dispose();
      } finally {
        await tf.setBackend(prev);
      }
    });
  }

  it(`full width (the real 23.9M-parameter architecture) at 107 px on ${backends.at(-1)}`, async () => {
    const prev = tf.getBackend();
    await tf.setBackend(backends.at(-1)!);
    try {
      const c = ref.full;
      const model = new FidInceptionV3(undefined, { initWeights: false });
      expect(stateDictSize(model)).toBe(c.parameters);
      const weights = hashWeights(model);
      model.loadStateDict(new Map([...weights].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }])));
      const x = images(c.n, c.size);
      const out = model.forward(x);
      expect(out.pool3.shape).toEqual([1, 2048]);
      expect(relErr(out.pool3.dataSync() as Float32Array, c.pool3)).toBeLessThan(2e-5);
      expect(relErr(out.logits.dataSync() as Float32Array, c.logits)).toBeLessThan(2e-5);
      tf.dispose([x, out.pool3, out.logits, out.logitsUnbiased]);
      model.dispose();
    } finally {
      await tf.setBackend(prev);
    }
  });

  it('names the tensor and both shapes when a weight does not fit', async () => {
    const file = join(dir, 'bad.safetensors');
    const init = new FidInceptionV3({ widthDivisor: 16, numClasses: 1008 });
    const tensors = hashWeights(init);
    init.dispose();
    tensors.set('Mixed_6c.branch7x7_2.conv.weight', { shape: [10, 10, 7, 1], data: new Float32Array(700) });
    await saveSafetensors(file, tensors);
    expect(() => loadFidInception(file, { widthDivisor: 16, numClasses: 1008 })).toThrow(
      /bad\.safetensors: tensor Mixed_6c\.branch7x7_2\.conv\.weight has shape \[10,10,7,1\] but the config implies \[10,10,1,7\]/,
    );
    tensors.delete('Mixed_6c.branch7x7_2.conv.weight');
    await saveSafetensors(file, tensors);
    expect(() => loadFidInception(file, { widthDivisor: 16, numClasses: 1008 })).toThrow(/missing tensors for the FID Inception model: Mixed_6c\.branch7x7_2\.conv\.weight/);
  });

  it('features of a batch equal features image by image (resize + forward)', () => {
    const model = new FidInceptionV3({ widthDivisor: 16, numClasses: 1008 });
    model.loadStateDict(new Map([...hashWeights(model)].map(([k, v]) => [k, { shape: v.shape, data: v.data as Float32Array }])));
    const imgs = [
      { data: Uint8Array.from(hashUniform('feat-a', 90 * 80 * 3), (u) => Math.floor(u * 256)), width: 90, height: 80 },
      { data: Uint8Array.from(hashUniform('feat-b', 100 * 77 * 3), (u) => Math.floor(u * 256)), width: 100, height: 77 },
      { data: Uint8Array.from(hashUniform('feat-c', 76 * 76 * 3), (u) => Math.floor(u * 256)), width: 76, height: 76 },
    ];
    const done: number[] = [];
    const batched = inceptionFeatures(model, imgs, { size: 96, batchSize: 2, onBatch: (n) => done.push(n) });
    expect(done).toEqual([2, 3]);
    expect(batched.dim).toBe(128);
    expect(batched.pool3.length).toBe(3 * 128);
    const single = model.forward(tf.tensor4d(resizeForInception(imgs[2]!, 'clean', 96), [1, 96, 96, 3]));
    const want = single.pool3.dataSync();
    for (let i = 0; i < 128; i++) expect(batched.pool3[2 * 128 + i]).toBeCloseTo(want[i]!, 5);
    tf.dispose([single.pool3, single.logits, single.logitsUnbiased]);
    const legacy = inceptionFeatures(model, imgs.slice(0, 1), { size: 96, resize: 'legacy' });
    expect(legacy.resize).toBe('legacy');
    let diff = 0;
    for (let i = 0; i < 128; i++) diff += Math.abs(legacy.pool3[i]! - batched.pool3[i]!);
    expect(diff).toBeGreaterThan(1e-3); // the resize mode changes the features
    model.dispose();
  });

  it('refuses images smaller than 75 px', () => {
    const model = new FidInceptionV3({ widthDivisor: 16, numClasses: 1008 });
    const x = tf.zeros([1, 64, 64, 3]) as tf.Tensor4D;
    expect(() => model.forward(x)).toThrow(/at least 75×75, got 64×64/);
    x.dispose();
    model.dispose();
  });
});
