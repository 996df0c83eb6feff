import { tf } from '../tf.js';
import { FUSED_KERNELS, type AdamKernelAttrs } from '../fused.js';
import type { NativeAddon } from './addon.js';
import { requireFloat32, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

const KERNEL = FUSED_KERNELS.adam;

// An Adam step as tfjs ops is ~14 kernels per parameter tensor, each allocating a tensor and
// scalar constants; a step of a small model is then mostly kernel overhead. One call instead.


export function adamConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  return {
    kernelName: FUSED_KERNELS.adam,
    backendName,
    kernelFunc: (args) => {
      const { param, grad, m, v } = args.inputs as { param: tf.TensorInfo; grad: tf.TensorInfo; m?: tf.TensorInfo; v?: tf.TensorInfo };
      const a = args.attrs as unknown as AdamKernelAttrs;
      const backend = args.backend as CpuBackendStorage;
      const pv = requireFloat32(backend, param, KERNEL, 'param');
      const out = [nativeBuffers.take(pv.length), nativeBuffers.take(pv.length), nativeBuffers.take(pv.length)] as const;
      addon.adam(
        pv,
        requireFloat32(backend, grad, KERNEL, 'grad'),
        m ? requireFloat32(backend, m, KERNEL, 'm') : null,
        v ? requireFloat32(backend, v, KERNEL, 'v') : null,
        ...out,
        [a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, a.step, a.decoupled ? 1 : 0],
      );
      return out.map((values) => backend.makeTensorInfo([...param.shape], 'float32', values));
    },
  };
}
