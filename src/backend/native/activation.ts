import { tf } from '../tf.js';
import { FUSED_ACTIVATIONS, FUSED_KERNELS, type FusedActivation } from '../fused.js';
import type { NativeAddon } from './addon.js';
import type { CpuBackendStorage } from './storage.js';

// GELU as tfjs ops is 8 kernels forward and ~20 backward over the whole activation tensor (SiLU 2
// and ~8); one pass each way instead.

function values(backend: CpuBackendStorage, t: tf.TensorInfo, what: string): Float32Array {
  const v = backend.data.get(t.dataId).values;
  if (t.dtype !== 'float32' || !(v instanceof Float32Array)) throw new Error(`${FUSED_KERNELS.activation}: ${what} must be a float32 tensor`);
  return v;
}

function kindCode(kind: unknown): 0 | 1 | 2 | 3 {
  const code = FUSED_ACTIVATIONS[kind as FusedActivation];
  if (code === undefined) throw new Error(`${FUSED_KERNELS.activation}: unknown activation '${String(kind)}'`);
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
        const xv = values(backend, x, 'x');
        const y = new Float32Array(xv.length);
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
        const xv = values(backend, x, 'x');
        const dx = new Float32Array(xv.length);
        addon.activationGrad(kindCode(args.attrs?.kind), values(backend, dy, 'dy'), xv, dx);
        return backend.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
  ];
}
