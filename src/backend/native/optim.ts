import { tf } from '../tf.js';
import { FUSED_KERNELS, type AdamKernelAttrs } from '../fused.js';
import type { NativeAddon } from './addon.js';
import type { CpuBackendStorage } from './storage.js';

// An Adam step as tfjs ops is ~14 kernels per parameter tensor, each allocating a tensor and
// scalar constants; a step of a small model is then mostly kernel overhead. One call instead.

function values(backend: CpuBackendStorage, t: tf.TensorInfo, what: string): Float32Array {
  const v = backend.data.get(t.dataId).values;
  if (t.dtype !== 'float32' || !(v instanceof Float32Array)) throw new Error(`${FUSED_KERNELS.adam}: ${what} must be a float32 tensor`);
  return v;
}

export function adamConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  return {
    kernelName: FUSED_KERNELS.adam,
    backendName,
    kernelFunc: (args) => {
      const { param, grad, m, v } = args.inputs as { param: tf.TensorInfo; grad: tf.TensorInfo; m?: tf.TensorInfo; v?: tf.TensorInfo };
      const a = args.attrs as unknown as AdamKernelAttrs;
      const backend = args.backend as CpuBackendStorage;
      const n = values(backend, param, 'param').length;
      const out = [new Float32Array(n), new Float32Array(n), new Float32Array(n)] as const;
      addon.adam(
        values(backend, param, 'param'),
        values(backend, grad, 'grad'),
        m ? values(backend, m, 'm') : null,
        v ? values(backend, v, 'v') : null,
        ...out,
        [a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, a.step, a.decoupled ? 1 : 0],
      );
      return out.map((values) => backend.makeTensorInfo([...param.shape], 'float32', values));
    },
  };
}
