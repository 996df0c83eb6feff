import { tf } from '../tf.js';
import { FUSED_ACTIVATIONS, FUSED_KERNELS, type FusedActivation } from '../fused.js';
import type { NativeAddon } from './addon.js';
import { requireFloat32, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

const KERNEL = FUSED_KERNELS.activation;

// GELU as tfjs ops is 8 kernels forward and ~20 backward over the whole activation tensor (SiLU 2
// and ~8); one pass each way instead.


function kindCode(kind: unknown): 0 | 1 | 2 | 3 {
  const code = FUSED_ACTIVATIONS[kind as FusedActivation];
  if (code === undefined) throw new Error(`${KERNEL}: unknown activation '${String(kind)}'`);
  return code;
}

export function activationConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: FUSED_KERNELS.activation,
      backendName,
      kernelFunc: (args) => {
        const { x } = args.inputs as { x: tf.TensorInfo };
        const backend = args.backend as CpuBackendStorage;
        const xv = requireFloat32(backend, x, KERNEL, 'x');
        const y = nativeBuffers.take(xv.length);
        addon.activation(kindCode(args.attrs?.kind), xv, y);
        return backend.makeTensorInfo([...x.shape], 'float32', y);
      },
    },
    {
      kernelName: FUSED_KERNELS.activationGrad,
      backendName,
      kernelFunc: (args) => {
        const { dy, x } = args.inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const backend = args.backend as CpuBackendStorage;
        const xv = requireFloat32(backend, x, KERNEL, 'x');
        const dx = nativeBuffers.take(xv.length);
        addon.activationGrad(kindCode(args.attrs?.kind), requireFloat32(backend, dy, KERNEL, 'dy'), xv, dx);
        return backend.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
    {
      kernelName: FUSED_KERNELS.leakyReluGrad,
      backendName,
      kernelFunc: (args) => {
        const { dy, x } = args.inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const backend = args.backend as CpuBackendStorage;
        const kernel = FUSED_KERNELS.leakyReluGrad;
        const xv = requireFloat32(backend, x, kernel, 'x');
        const dyv = requireFloat32(backend, dy, kernel, 'dy');
        if (dyv.length !== xv.length) throw new Error(`${kernel}: dy [${dy.shape}] and x [${x.shape}] differ`);
        const dx = nativeBuffers.take(xv.length);
        addon.leakyReluGrad(dyv, xv, Number(args.attrs?.alpha), dx);
        return backend.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
  ];
}
