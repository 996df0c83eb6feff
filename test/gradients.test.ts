import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { installKernelPatches } from '../src/backend/kernel_patches.js';
import { registerNativeBackend } from '../src/backend/native/backend.js';
import { Rng } from '../src/util/rng.js';
import { Conv2d } from '../src/nn/conv.js';
import { Linear } from '../src/nn/linear.js';
import { Embedding } from '../src/nn/embedding.js';
import { GroupNorm, LayerNorm } from '../src/nn/norm.js';
import { geluErf, geluTanh, silu } from '../src/nn/activations.js';
import { scaledDotProductAttention } from '../src/nn/attention.js';

// Gradients of every op/layer the toolkit trains through, on wasm (with our kernel patches) and on
// native, against the cpu backend and against central finite differences of the same backend's forward pass.

interface InputSpec {
  shape: number[];
  /** Integer ids in [0, intMax) (not differentiated). */
  intMax?: number;
  /** Keeps |x| ≥ 0.2 so finite differences never straddle a kink at 0 (abs). */
  awayFromZero?: boolean;
}

interface Built {
  params: tf.Variable[];
  fn: (...xs: tf.Tensor[]) => tf.Tensor;
}

interface GradCase {
  name: string;
  inputs: InputSpec[];
  build: (rng: Rng) => Built;
  /** Piecewise-linear in every input and parameter: large steps, tight tolerance. */
  linear?: boolean;
}

const op = (fn: (...xs: tf.Tensor[]) => tf.Tensor): ((rng: Rng) => Built) => () => ({ params: [], fn });
const layer = <M extends { forward(x: never): tf.Tensor; namedParameters(): Generator<[string, tf.Variable]> }>(
  make: (rng: Rng) => M,
): ((rng: Rng) => Built) => (rng) => {
  const m = make(rng);
  return { params: [...m.namedParameters()].map(([, v]) => v), fn: (x) => m.forward(x as never) };
};
const as4 = (t: tf.Tensor) => t as tf.Tensor4D;

const cases: GradCase[] = [
  { name: 'Linear', inputs: [{ shape: [2, 3, 5] }], build: layer((rng) => new Linear(5, 4, { rng })), linear: true },
  { name: 'Conv2d 3×3 s1 p1', inputs: [{ shape: [2, 5, 7, 3] }], build: layer((rng) => new Conv2d(3, 4, 3, { padding: 1, rng })), linear: true },
  { name: 'Conv2d 3×3 s2 p1 (odd size)', inputs: [{ shape: [2, 7, 5, 3] }], build: layer((rng) => new Conv2d(3, 2, 3, { stride: 2, padding: 1, rng })), linear: true },
  { name: 'Conv2d 1×1', inputs: [{ shape: [2, 3, 5, 4] }], build: layer((rng) => new Conv2d(4, 3, 1, { rng })), linear: true },
  { name: 'conv2d same s2 even', inputs: [{ shape: [1, 6, 8, 2] }, { shape: [3, 3, 2, 3] }], build: op((x, w) => tf.conv2d(as4(x), as4(w), 2, 'same')), linear: true },
  { name: 'conv2d valid s2 odd', inputs: [{ shape: [2, 7, 7, 2] }, { shape: [3, 3, 2, 2] }], build: op((x, w) => tf.conv2d(as4(x), as4(w), 2, 'valid')), linear: true },
  { name: 'conv2d 4×3 strides [2,3] explicit pad', inputs: [{ shape: [1, 9, 8, 2] }, { shape: [4, 3, 2, 3] }], build: op((x, w) => tf.conv2d(as4(x), as4(w), [2, 3], [[0, 0], [1, 2], [0, 1], [0, 0]])), linear: true },
  { name: 'conv2d 1×1 s2', inputs: [{ shape: [1, 5, 5, 3] }, { shape: [1, 1, 3, 2] }], build: op((x, w) => tf.conv2d(as4(x), as4(w), 2, 'valid')), linear: true },
  { name: 'GroupNorm', inputs: [{ shape: [2, 3, 3, 4] }], build: layer(() => new GroupNorm(2, 4)) },
  { name: 'LayerNorm', inputs: [{ shape: [3, 6] }], build: layer(() => new LayerNorm(6)) },
  { name: 'Embedding', inputs: [{ shape: [2, 5], intMax: 7 }], build: layer((rng) => new Embedding(7, 3, { rng })), linear: true },
  {
    name: 'attention (batched matMul + softmax)',
    inputs: [{ shape: [1, 2, 3, 4] }, { shape: [1, 2, 5, 4] }, { shape: [1, 2, 5, 4] }],
    build: op((q, k, v) => scaledDotProductAttention(as4(q), as4(k), as4(v))),
  },
  { name: 'SiLU', inputs: [{ shape: [3, 5] }], build: op((x) => silu(x)) },
  { name: 'GELU erf', inputs: [{ shape: [3, 5] }], build: op((x) => geluErf(x)) },
  { name: 'GELU tanh', inputs: [{ shape: [3, 5] }], build: op((x) => geluTanh(x)) },
  { name: 'erf', inputs: [{ shape: [11] }], build: op((x) => tf.erf(x)) },
  { name: 'resizeBilinear ×2 (half-pixel, non-square)', inputs: [{ shape: [2, 3, 5, 2] }], build: op((x) => tf.image.resizeBilinear(as4(x), [6, 10], false, true)), linear: true },
  { name: 'resizeBilinear ×2 (legacy)', inputs: [{ shape: [1, 3, 4, 2] }], build: op((x) => tf.image.resizeBilinear(as4(x), [6, 8])), linear: true },
  { name: 'resizeBilinear align corners 3→7', inputs: [{ shape: [1, 3, 4, 1] }], build: op((x) => tf.image.resizeBilinear(as4(x), [7, 5], true)), linear: true },
  { name: 'pad', inputs: [{ shape: [2, 3, 3, 2] }], build: op((x) => tf.pad(x, [[0, 0], [1, 2], [2, 0], [0, 0]])), linear: true },
  { name: 'concat + slice', inputs: [{ shape: [2, 3] }, { shape: [2, 4] }], build: op((a, b) => tf.concat([a, b], 1).slice([0, 1], [2, 5])), linear: true },
  { name: 'mean of squares loss', inputs: [{ shape: [3, 4] }, { shape: [3, 4] }], build: op((a, b) => a.sub(b).square().mean()) },
  { name: 'mean abs loss', inputs: [{ shape: [3, 4], awayFromZero: true }], build: op((a) => a.abs().mean(0)) },
];

function makeInputs(specs: InputSpec[], rng: Rng): (Float32Array | Int32Array)[] {
  return specs.map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.intMax !== undefined) return Int32Array.from({ length: n }, () => rng.int(s.intMax!));
    const v = rng.fillNormal(new Float32Array(n));
    if (s.awayFromZero) for (let i = 0; i < n; i++) v[i] = Math.sign(v[i]!) * (0.2 + Math.abs(v[i]!));
    return v;
  });
}

interface Evaluated {
  /** Analytic gradients: float inputs first, then parameters. */
  grads: Float32Array[];
  /** Central differences of the same loss, in the same order (only when asked). */
  fd?: Float64Array[];
}

/** Runs one case on `backend`: loss = Σ w·f(x) with fixed random w, so no symmetry hides errors. */
async function evaluate(backend: string, c: GradCase, withFd: boolean): Promise<Evaluated> {
  await tf.setBackend(backend);
  const rng = new Rng(12345);
  const data = makeInputs(c.inputs, rng);
  const built = c.build(rng.fork('params'));
  const xs = data.map((d, i) => tf.tensor(d, c.inputs[i]!.shape, d instanceof Int32Array ? 'int32' : 'float32'));
  const outShape = tf.tidy(() => built.fn(...xs).shape);
  const w = tf.tensor(rng.fork('w').fillNormal(new Float32Array(outShape.reduce((a, b) => a * b, 1))), outShape);
  const floatIdx = c.inputs.map((s, i) => (s.intMax === undefined ? i : -1)).filter((i) => i >= 0);

  const grads: Float32Array[] = [];
  if (floatIdx.length > 0) {
    const g = tf.grads((...fx: tf.Tensor[]) => {
      const all = xs.map((x, i) => (floatIdx.includes(i) ? fx[floatIdx.indexOf(i)]! : x));
      return built.fn(...all).mul(w).sum();
    })(floatIdx.map((i) => xs[i]!));
    for (const t of g) grads.push(t.dataSync() as Float32Array), t.dispose();
  }
  if (built.params.length > 0) {
    const { grads: pg } = tf.variableGrads(() => built.fn(...xs).mul(w).sum() as tf.Scalar, built.params);
    for (const p of built.params) grads.push(pg[p.name]!.dataSync() as Float32Array);
    tf.dispose(pg);
  }

  let fd: Float64Array[] | undefined;
  if (withFd) {
    const h = c.linear ? 0.5 : 1e-2;
    const wv = w.dataSync();
    const loss = (args: tf.Tensor[]) => {
      const y = tf.tidy(() => built.fn(...args));
      const yv = y.dataSync();
      y.dispose();
      let s = 0;
      for (let i = 0; i < yv.length; i++) s += wv[i]! * yv[i]!;
      return s;
    };
    fd = [];
    for (const i of floatIdx) {
      const base = data[i] as Float32Array;
      const out = new Float64Array(base.length);
      for (let k = 0; k < base.length; k++) {
        const at = (delta: number) => {
          const v = base.slice();
          v[k] = base[k]! + delta;
          const t = tf.tensor(v, c.inputs[i]!.shape);
          const r = loss(xs.map((x, j) => (j === i ? t : x)));
          t.dispose();
          return r;
        };
        out[k] = (at(h) - at(-h)) / (2 * h);
      }
      fd.push(out);
    }
    for (const p of built.params) {
      const base = p.dataSync().slice() as Float32Array;
      const out = new Float64Array(base.length);
      for (let k = 0; k < base.length; k++) {
        const at = (delta: number) => {
          const v = base.slice();
          v[k] = base[k]! + delta;
          p.assign(tf.tensor(v, p.shape));
          return loss(xs);
        };
        out[k] = (at(h) - at(-h)) / (2 * h);
      }
      p.assign(tf.tensor(base, p.shape));
      fd.push(out);
    }
  }
  tf.dispose([...xs, w, ...built.params]);
  return { grads, fd };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

beforeAll(async () => {
  await initBackend('wasm');
  installKernelPatches('cpu');
  await tf.setBackend('cpu');
});

// The same cases on every fast backend this installation has (native only where its addon was built).
const nativeBuilt = registerNativeBackend();
for (const backend of ['wasm', 'native'] as const) {
  describe.skipIf(backend === 'native' && !nativeBuilt)(`gradients on ${backend}`, () => {
    for (const c of cases) {
      it(c.name, async () => {
        const cpu = await evaluate('cpu', c, false);
        const fast = await evaluate(backend, c, true);
        expect(fast.grads.length).toBe(cpu.grads.length);
        expect(fast.grads.length).toBeGreaterThan(0);
        for (let i = 0; i < fast.grads.length; i++) {
          const scale = Math.max(1, maxAbs(cpu.grads[i]!));
          expect(maxDiff(fast.grads[i]!, cpu.grads[i]!) / scale, `${backend} vs cpu, gradient ${i}`).toBeLessThan(1e-4);
          const fdTol = c.linear ? 1e-4 : 2e-3;
          expect(maxDiff(fast.grads[i]!, fast.fd![i]!) / scale, `${backend} vs finite differences, gradient ${i}`).toBeLessThan(fdTol);
        }
        await tf.setBackend('cpu');
      });
    }
  });
}
