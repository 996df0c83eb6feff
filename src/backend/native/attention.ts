import { tf } from '../tf.js';
import { FUSED_KERNELS, type AttentionKernelAttrs } from '../fused.js';
import type { NativeAddon } from './addon.js';
import { requireFloat32, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// softmax(q·kᵀ·scale)·v as tfjs ops is ~8 kernels forward (2 transposes, 2 batched matmuls, softmax,
// reshapes) and ~14 backward; these are one kernel each way, on the projections' own layout.

/** [batch, nq, nk, heads, kvHeads, dim] from q [B, Nq, H, d] and k [B, Nk, Hkv, d]. */
function dims(q: tf.TensorInfo, k: tf.TensorInfo, v: tf.TensorInfo): Int32Array {
  const kernel = FUSED_KERNELS.attention;
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) throw new Error(`${kernel}: q, k, v must be rank 4 [B, N, heads, d]`);
  const [b, nq, h, d] = q.shape as [number, number, number, number];
  const [bk, nk, hkv, dk] = k.shape as [number, number, number, number];
  if (bk !== b || dk !== d || v.shape.some((x, i) => x !== k.shape[i]) || h % hkv !== 0) {
    throw new Error(`${kernel}: q [${q.shape}] does not fit k [${k.shape}] / v [${v.shape}]`);
  }
  return Int32Array.of(b, nq, nk, h, hkv, d);
}

export function attentionConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  const kernel = FUSED_KERNELS.attention;
  return [
    {
      kernelName: FUSED_KERNELS.attention,
      backendName,
      kernelFunc: (args) => {
        const { q, k, v } = args.inputs as Record<'q' | 'k' | 'v', tf.TensorInfo>;
        const { scale, causal } = args.attrs as unknown as AttentionKernelAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = dims(q, k, v);
        const [b, nq, nk, h] = [d[0]!, d[1]!, d[2]!, d[3]!];
        const o = nativeBuffers.take(b * nq * h * d[5]!);
        const p = nativeBuffers.take(b * h * nq * nk);
        addon.attention(d, scale, causal, requireFloat32(backend, q, kernel, 'q'), requireFloat32(backend, k, kernel, 'k'), requireFloat32(backend, v, kernel, 'v'), o, p);
        return [backend.makeTensorInfo([...q.shape], 'float32', o), backend.makeTensorInfo([b, h, nq, nk], 'float32', p)];
      },
    },
    {
      kernelName: FUSED_KERNELS.attentionGrad,
      backendName,
      kernelFunc: (args) => {
        const { dy, q, k, v, probs } = args.inputs as Record<'dy' | 'q' | 'k' | 'v' | 'probs', tf.TensorInfo>;
        const { scale } = args.attrs as unknown as AttentionKernelAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = dims(q, k, v);
        const dq = nativeBuffers.take(tf.util.sizeFromShape(q.shape));
        const dk = nativeBuffers.take(tf.util.sizeFromShape(k.shape));
        const dv = nativeBuffers.take(tf.util.sizeFromShape(v.shape));
        const [dyv, qv, kv, vv, pv] = ([[dy, 'dy'], [q, 'q'], [k, 'k'], [v, 'v'], [probs, 'probs']] as const).map(([t, what]) => requireFloat32(backend, t, kernel, what));
        addon.attentionGrad(d, scale, dyv!, qv!, kv!, vv!, pv!, dq, dk, dv);
        return [
          backend.makeTensorInfo([...q.shape], 'float32', dq),
          backend.makeTensorInfo([...k.shape], 'float32', dk),
          backend.makeTensorInfo([...v.shape], 'float32', dv),
        ];
      },
    },
  ];
}
