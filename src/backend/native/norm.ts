import { tf } from '../tf.js';
import { FUSED_KERNELS } from '../fused.js';
import type { NativeAddon } from './addon.js';
import { requireFloat32, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

const KERNEL = FUSED_KERNELS.groupNorm;

// GroupNorm/LayerNorm as tfjs composites cost ~10 kernels forward and ~25 backward, each a full
// pass over the activations; these do one pass each way.

interface GroupNormAttrs {
  groups: number;
  eps: number;
}


function dims(x: tf.TensorInfo, groups: number): Int32Array {
  if (x.shape.length !== 3) throw new Error(`${KERNEL}: expected x of rank 3 [n, s, c], got [${x.shape}]`);
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
        const y = nativeBuffers.take(d[0]! * d[1]! * d[2]!);
        const mean = nativeBuffers.take(d[0]! * groups);
        const rstd = nativeBuffers.take(d[0]! * groups);
        addon.groupNorm(requireFloat32(backend, x, KERNEL, 'x'), d, eps, y, mean, rstd);
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
        const dx = nativeBuffers.take(d[0]! * d[1]! * d[2]!);
        const [dyv, xv, mv, rv] = ([[dy, 'dy'], [x, 'x'], [mean, 'mean'], [rstd, 'rstd']] as const).map(([t, what]) => requireFloat32(backend, t, KERNEL, what));
        addon.groupNormGrad(dyv!, xv!, mv!, rv!, d, dx);
        return backend.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
  ];
}
