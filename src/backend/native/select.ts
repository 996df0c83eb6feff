import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { boolValues, cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// Select (tf.where) picks between two tensors by a bool mask; relu and leakyRelu gradients run it
// over every activation map. The condition is either shaped like t, or rank 1 choosing whole rows of
// t's first axis (TensorFlow's semantics; tfjs's cpu kernel indexes t and e by row there, which is
// wrong, so that case is checked against a JS loop in the tests).

export function selectConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Select');
  return {
    kernelName: 'Select',
    backendName,
    kernelFunc: (args) => {
      const { condition, t, e } = args.inputs as { condition: tf.TensorInfo; t: tf.TensorInfo; e: tf.TensorInfo };
      const backend = args.backend as CpuBackendStorage;
      const cv = boolValues(backend, condition);
      const tv = float32Values(backend, t);
      const ev = float32Values(backend, e);
      if (!cv || !tv || !ev || !tf.util.arraysEqual(t.shape, e.shape)) return fallback(args);
      const size = sizeOf(t.shape);
      const perElement = tf.util.arraysEqual(condition.shape, t.shape);
      const perRow = condition.shape.length === 1 && t.shape.length > 1 && condition.shape[0] === t.shape[0];
      // Small same-shape selects stay in JS; row selects never do, so their result cannot depend on size.
      if (!(perElement || perRow) || (!perRow && size < 64)) return fallback(args);
      const out = nativeBuffers.take(size);
      addon.select(cv, tv, ev, out);
      return backend.makeTensorInfo([...t.shape], 'float32', out);
    },
  };
}
