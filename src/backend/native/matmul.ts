import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { activationCode, cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';
import { nativeBf16Active } from './bf16.js';
import { bf16Operand } from './bf16_operands.js';

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
  activation?: string;
  leakyreluAlpha?: number;
}

/** OpenBLAS cores with AVX2 or wider kernels (0.3.21's DYNAMIC_ARCH names). */
const VECTOR_BLAS_CORES = new Set(['haswell', 'zen', 'skylakex', 'cooperlake', 'sapphirerapids']);
/** dnnl_cpu_isa_avx2: from here up oneDNN's JIT kernels are at least as wide as any OpenBLAS core. */
const DNNL_ISA_AVX2 = 0x7;

export interface GemmPolicy {
  /** Whether OpenBLAS takes the small products (it has less fixed overhead than oneDNN's sgemm). */
  openblasForSmall: boolean;
  reason: string;
}

/**
 * OpenBLAS 0.3.21 does not know newer CPUs (Zen 5, Sapphire Rapids with some microcode) and falls
 * back to its generic Prescott (SSE3) kernels, 3–5× slower than oneDNN there. Small products go to
 * OpenBLAS only when its core is a vector one or oneDNN itself has no AVX2; everything else runs
 * on oneDNN, which detects the ISA by itself. OPENBLAS_CORETYPE is never overridden here: some
 * builds compute wrong results on cores they were forced to.
 */
export function gemmPolicy(openblasCore: string, dnnlIsa: number): GemmPolicy {
  const core = openblasCore.trim().toLowerCase();
  if (VECTOR_BLAS_CORES.has(core)) return { openblasForSmall: true, reason: `OpenBLAS (${openblasCore}) for products under 48³, oneDNN above` };
  if ((dnnlIsa & DNNL_ISA_AVX2) !== DNNL_ISA_AVX2) {
    return { openblasForSmall: true, reason: `OpenBLAS (${openblasCore}) for products under 48³ (no AVX2 here), oneDNN above` };
  }
  return { openblasForSmall: false, reason: `oneDNN for every size (OpenBLAS runs its generic ${openblasCore} kernels on this CPU)` };
}

/**
 * Which library runs a single (unbatched) GEMM of this size. oneDNN's sgemm wins from mid-size
 * up; OpenBLAS has less fixed overhead on small products when it runs vector kernels.
 */
export function gemmLibrary(m: number, n: number, k: number, policy: GemmPolicy = { openblasForSmall: true, reason: '' }): 0 | 1 {
  return policy.openblasForSmall && m * n * k < 48 ** 3 ? 1 : 0;
}

/**
 * Output shape and the batch dims of both operands padded to one rank, with correct mutual
 * broadcasting ([2,1,M,K]×[1,4,K,N] → [2,4,M,N]; tfjs's own kernels get this case wrong).
 */
export function matmulShapes(aShape: readonly number[], bShape: readonly number[], transA: boolean, transB: boolean) {
  const rank = Math.max(aShape.length, bShape.length);
  const pad = (s: readonly number[]) => [...new Array<number>(rank - s.length).fill(1), ...s];
  const aDims = pad(aShape);
  const bDims = pad(bShape);
  const m = transA ? aDims[rank - 1]! : aDims[rank - 2]!;
  const k = transA ? aDims[rank - 2]! : aDims[rank - 1]!;
  const kb = transB ? bDims[rank - 1]! : bDims[rank - 2]!;
  const n = transB ? bDims[rank - 2]! : bDims[rank - 1]!;
  if (k !== kb) throw new Error(`BatchMatMul: inner dimensions ${k} and ${kb} differ (shapes ${aShape} × ${bShape})`);
  const batch: number[] = [];
  for (let i = 0; i < rank - 2; i++) {
    const da = aDims[i]!;
    const db = bDims[i]!;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`BatchMatMul: batch dims of ${aShape} and ${bShape} do not broadcast`);
    batch.push(Math.max(da, db));
  }
  const outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(aShape.slice(0, -2), bShape.slice(0, -2)), m, n];
  return { aDims, bDims, m, n, k, batchA: sizeOf(aDims.slice(0, -2)), batchB: sizeOf(bDims.slice(0, -2)), outShape };
}

/** What the matmul primitive does with its product: bias and activation, a scale, or adding into an existing output. */
export interface MatmulEpilogue {
  bias?: Float32Array | null;
  activation?: number;
  alpha?: number;
  /** The product is multiplied by this (before the bias). */
  scale?: number;
  /** Add the result into this array (of the output's size) instead of a new one; it is returned as the values. */
  addTo?: Float32Array;
}

/** op(A)·op(B) into a new Float32Array (or added into epilogue.addTo), choosing sgemm or the oneDNN matmul primitive by shape. */
export function nativeMatMul(
  addon: NativeAddon,
  a: Float32Array,
  aShape: readonly number[],
  b: Float32Array,
  bShape: readonly number[],
  transA: boolean,
  transB: boolean,
  epilogue?: MatmulEpilogue,
  policy?: GemmPolicy,
): { values: Float32Array; shape: number[] } {
  const s = matmulShapes(aShape, bShape, transA, transB);
  const size = sizeOf(s.outShape);
  if (epilogue?.addTo && epilogue.addTo.length !== size) throw new Error(`matmul: addTo holds ${epilogue.addTo.length} floats, the product ${size}`);
  const out = epilogue?.addTo ?? nativeBuffers.take(size);
  const plain = !epilogue || (!epilogue.bias && !epilogue.activation && (epilogue.scale ?? 1) === 1 && !epilogue.addTo);
  // bf16 products run on the matmul primitive (addon.matmul switches to it); sgemm is fp32 only.
  if (plain && !nativeBf16Active() && s.batchB === 1 && (s.batchA === 1 || !transA)) {
    // One GEMM: a batch of untransposed A against a shared B stacks into [batch·M, K].
    const rows = s.batchA * s.m;
    addon.sgemm(gemmLibrary(rows, s.n, s.k, policy), transA, transB, rows, s.n, s.k, a, 0, b, 0, out, 0);
  } else {
    const bf16 = nativeBf16Active();
    addon.matmul(
      Int32Array.from(s.aDims),
      Int32Array.from(s.bDims),
      transA,
      transB,
      bf16 ? bf16Operand(addon, a) : a,
      bf16 ? bf16Operand(addon, b) : b,
      epilogue?.bias ?? null,
      out,
      epilogue?.activation ?? 0,
      epilogue?.alpha ?? 0,
      epilogue?.scale ?? 1,
      epilogue?.addTo !== undefined,
    );
  }
  return { values: out, shape: s.outShape };
}

/** The policy for this process's libraries, decided once. */
let processPolicy: GemmPolicy | undefined;
export function nativeGemmPolicy(addon: NativeAddon): GemmPolicy {
  if (!processPolicy) {
    const info = addon.info();
    processPolicy = gemmPolicy(info.openblasCore, info.dnnlCpuIsa);
  }
  return processPolicy;
}

export function batchMatMulConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('BatchMatMul');
  const policy = nativeGemmPolicy(addon);
  return {
    kernelName: 'BatchMatMul',
    backendName,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { transposeA, transposeB } = args.attrs as unknown as MatMulAttrs;
      const backend = args.backend as CpuBackendStorage;
      const av = float32Values(backend, a);
      const bv = float32Values(backend, b);
      if (!av || !bv || sizeOf(a.shape) === 0 || sizeOf(b.shape) === 0) return fallback(args);
      const r = nativeMatMul(addon, av, a.shape, bv, b.shape, transposeA, transposeB, undefined, policy);
      return backend.makeTensorInfo(r.shape, 'float32', r.values);
    },
  };
}

export function fusedMatMulConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('_FusedMatMul');
  const policy = nativeGemmPolicy(addon);
  return {
    kernelName: '_FusedMatMul',
    backendName,
    kernelFunc: (args) => {
      const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
      const attrs = args.attrs as unknown as MatMulAttrs;
      const backend = args.backend as CpuBackendStorage;
      const activation = activationCode(attrs.activation);
      const av = float32Values(backend, a!);
      const bv = float32Values(backend, b!);
      if (activation === undefined || preluActivationWeights || !av || !bv || sizeOf(a!.shape) === 0 || sizeOf(b!.shape) === 0) {
        return fallback(args);
      }
      const n = attrs.transposeB ? b!.shape[b!.shape.length - 2]! : b!.shape[b!.shape.length - 1]!;
      let biasValues: Float32Array | null = null;
      if (bias) {
        // oneDNN adds a per-column bias; other broadcasts (per row, full) stay on the cpu kernel.
        const perColumn = bias.shape.length >= 1 && bias.shape[bias.shape.length - 1] === n && sizeOf(bias.shape) === n;
        const values = float32Values(backend, bias);
        if (!perColumn || !values) return fallback(args);
        biasValues = values;
      }
      const r = nativeMatMul(addon, av, a!.shape, bv, b!.shape, attrs.transposeA, attrs.transposeB, {
        bias: biasValues,
        activation,
        alpha: attrs.leakyreluAlpha ?? 0.2,
      }, policy);
      return backend.makeTensorInfo(r.shape, 'float32', r.values);
    },
  };
}
