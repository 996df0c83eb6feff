import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// Memory-bound kernels that profiling an NSP training step showed dominating once matmul and conv
// were native: the cpu backend's broadcasting arithmetic and comparisons, softmax and strided
// slices are index-arithmetic JS loops, 10–100× slower than a plain C++ loop over the same arrays.

/** Broadcasting binary kernels: op code (native/src/elementwise.h) and output dtype. */
const BINARY = {
  Add: [0, 'float32'],
  Sub: [1, 'float32'],
  Multiply: [2, 'float32'],
  RealDiv: [3, 'float32'],
  Maximum: [4, 'float32'],
  Minimum: [5, 'float32'],
  SquaredDifference: [6, 'float32'],
  Pow: [7, 'float32'],
  Greater: [8, 'bool'],
  GreaterEqual: [9, 'bool'],
  Less: [10, 'bool'],
  LessEqual: [11, 'bool'],
  Equal: [12, 'bool'],
  NotEqual: [13, 'bool'],
} as const satisfies Record<string, readonly [number, 'float32' | 'bool']>;

/** `shape` left-padded with 1s to `rank`, as the addon's broadcasting wants it. */
function paddedShape(shape: readonly number[], rank: number): Int32Array {
  const out = new Int32Array(rank).fill(1);
  out.set(shape, rank - shape.length);
  return out;
}

function binaryConfig(addon: NativeAddon, backendName: string, kernelName: keyof typeof BINARY): tf.KernelConfig {
  const fallback = cpuKernel(kernelName);
  const [op, dtype] = BINARY[kernelName];
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const backend = args.backend as CpuBackendStorage;
      const av = float32Values(backend, a);
      const bv = float32Values(backend, b);
      if (!av || !bv) return fallback(args);
      const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const size = sizeOf(outShape);
      // Tiny operands (scalars, per-step bookkeeping) cost less in JS than crossing into C++.
      if (size < 64 || outShape.length === 0) return fallback(args);
      const rank = outShape.length;
      const out = dtype === 'bool' ? new Uint8Array(size) : nativeBuffers.take(size);
      addon.binary(op, av, paddedShape(a.shape, rank), bv, paddedShape(b.shape, rank), out, Int32Array.from(outShape));
      return backend.makeTensorInfo(outShape, dtype, out);
    },
  };
}

function softmaxConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Softmax');
  return {
    kernelName: 'Softmax',
    backendName,
    kernelFunc: (args) => {
      const { logits } = args.inputs as { logits: tf.TensorInfo };
      const { dim } = args.attrs as unknown as { dim: number };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, logits);
      const rank = logits.shape.length;
      if (!xv || rank === 0 || (dim !== -1 && dim !== rank - 1) || sizeOf(logits.shape) === 0) return fallback(args);
      const cols = logits.shape[rank - 1]!;
      const out = nativeBuffers.take(sizeOf(logits.shape));
      addon.softmax(xv, out, sizeOf(logits.shape) / cols, cols);
      return backend.makeTensorInfo([...logits.shape], 'float32', out);
    },
  };
}

function sliceInfo(addon: NativeAddon, backend: CpuBackendStorage, x: tf.TensorInfo, xv: Float32Array, begin: number[], size: number[]): tf.TensorInfo {
  const out = nativeBuffers.take(sizeOf(size));
  if (out.length > 0) addon.slice(xv, Int32Array.from(x.shape), Int32Array.from(begin), Int32Array.from(size), out);
  return backend.makeTensorInfo([...size], 'float32', out);
}

function sliceConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Slice');
  return {
    kernelName: 'Slice',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const attrs = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || x.shape.length === 0) return fallback(args);
      const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size);
      tf.slice_util.assertParamsValid(x as tf.Tensor, begin, size);
      return sliceInfo(addon, backend, x, xv, begin, size);
    },
  };
}

export function elementwiseConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return [
    ...(Object.keys(BINARY) as (keyof typeof BINARY)[]).map((k) => binaryConfig(addon, backendName, k)),
    softmaxConfig(addon, backendName),
    sliceConfig(addon, backendName),
  ];
}
