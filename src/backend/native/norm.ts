import { tf } from '../tf.js';
import { FUSED_KERNELS } from '../fused.js';
import type { NativeAddon } from './addon.js';
import type { CpuBackendStorage } from './storage.js';

// GroupNorm/LayerNorm as tfjs composites cost ~10 kernels forward and ~25 backward, each a full
// pass over the activations; these do one pass each way.

interface GroupNormAttrs {
  groups: number;
  eps: number;
}

function values(backend: CpuBackendStorage, t: tf.TensorInfo, what: string): Float32Array {
  const v = backend.data.get(t.dataId).values;
  if (t.dtype !== 'float32' || !(v instanceof Float32Array)) throw new Error(`${FUSED_KERNELS.groupNorm}: ${what} must be a float32 tensor`);
  return v;
}

function dims(x: tf.TensorInfo, groups: number): Int32Array {
  if (x.shape.length !== 3) throw new Error(`${FUSED_KERNELS.groupNorm}: expected x of rank 3 [n, s, c], got [${x.shape}]`);
  const [n, s, c] = x.shape as [number, number, number];
  return Int32Array.of(n, s, c, groups);
}

export function normConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: FUSED_KERNELS.groupNorm,
      backendName,
      kernelFunc: (args) => {
        const { x } = args.inputs as { x: tf.TensorInfo };
        const { groups, eps } = args.attrs as unknown as GroupNormAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = dims(x, groups);
        const y = new Float32Array(d[0]! * d[1]! * d[2]!);
        const mean = new Float32Array(d[0]! * groups);
        const rstd = new Float32Array(d[0]! * groups);
        addon.groupNorm(values(backend, x, 'x'), d, eps, y, mean, rstd);
        return [
          backend.makeTensorInfo([...x.shape], 'float32', y),
          backend.makeTensorInfo([d[0]!, groups], 'float32', mean),
          backend.makeTensorInfo([d[0]!, groups], 'float32', rstd),
        ];
      },
    },
    {
      kernelName: FUSED_KERNELS.groupNormGrad,
      backendName,
      kernelFunc: (args) => {
        const { dy, x, mean, rstd } = args.inputs as Record<'dy' | 'x' | 'mean' | 'rstd', tf.TensorInfo>;
        const { groups } = args.attrs as unknown as GroupNormAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = dims(x, groups);
        const dx = new Float32Array(d[0]! * d[1]! * d[2]!);
        addon.groupNormGrad(values(backend, dy, 'dy'), values(backend, x, 'x'), values(backend, mean, 'mean'), values(backend, rstd, 'rstd'), d, dx);
        return backend.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
  ];
}
