import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// The tfjs cpu backend transposes the reduced axes innermost before every reduction, then sums in
// a JS loop: in an NSP training step the bias/FiLM/GroupNorm gradients made Sum and Mean 70 % of
// the time. The addon reduces any axis set in one pass over the input as it lies in memory.

const REDUCE = { Sum: 0, Mean: 1, Max: 2, Min: 3, Prod: 4 } as const;
type ReduceKernel = keyof typeof REDUCE;
/** The attribute naming the axes differs per kernel (Max says reductionIndices). */
const AXES_ATTR: Record<ReduceKernel, 'axis' | 'reductionIndices'> = {
  Sum: 'axis',
  Mean: 'axis',
  Max: 'reductionIndices',
  Min: 'axis',
  Prod: 'axis',
};

function reduceConfig(addon: NativeAddon, backendName: string, kernelName: ReduceKernel): tf.KernelConfig {
  const fallback = cpuKernel(kernelName);
  const op = REDUCE[kernelName];
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const attrs = args.attrs as unknown as Record<string, number | number[]> & { keepDims: boolean };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      // Integer and bool sums change dtype (to int32) in tfjs; the addon is float32 only.
      if (!xv || x.shape.length === 0 || sizeOf(x.shape) === 0) return fallback(args);
      const axes = tf.util.parseAxisParam(attrs[AXES_ATTR[kernelName]]!, x.shape);
      const mask = new Int32Array(x.shape.length);
      for (const a of axes) mask[a] = 1;
      const outShape = x.shape.filter((_, i) => !mask[i]);
      const out = nativeBuffers.take(sizeOf(outShape));
      addon.reduce(op, xv, Int32Array.from(x.shape), mask, out);
      const shape = attrs.keepDims ? x.shape.map((d, i) => (mask[i] ? 1 : d)) : outShape;
      return backend.makeTensorInfo(shape, 'float32', out);
    },
  };
}

export function reduceConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return (Object.keys(REDUCE) as ReduceKernel[]).map((k) => reduceConfig(addon, backendName, k));
}
