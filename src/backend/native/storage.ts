import { tf } from '../tf.js';

/** The parts of tfjs's MathBackendCPU that native kernels use (the `native` backend is one). */
export interface CpuBackendStorage {
  data: { get(dataId: tf.DataId): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array | Uint8Array): tf.TensorInfo;
}

/** The tensor's own Float32Array (no copy), or undefined for other dtypes / complex storage. */
export function float32Values(backend: CpuBackendStorage, t: tf.TensorInfo): Float32Array | undefined {
  if (t.dtype !== 'float32') return undefined;
  const values = backend.data.get(t.dataId).values;
  return values instanceof Float32Array ? values : undefined;
}

/** The tensor's own Float32Array for a kernel that has no fallback; anything else is a usage error. */
export function requireFloat32(backend: CpuBackendStorage, t: tf.TensorInfo, kernel: string, what: string): Float32Array {
  const v = float32Values(backend, t);
  if (!v) throw new Error(`${kernel}: ${what} must be a float32 tensor, got ${t.dtype}`);
  return v;
}

/** A bool tensor's own Uint8Array of 0/1 bytes (the cpu backend's bool storage), or undefined. */
export function boolValues(backend: CpuBackendStorage, t: tf.TensorInfo): Uint8Array | undefined {
  if (t.dtype !== 'bool') return undefined;
  const values = backend.data.get(t.dataId).values;
  return values instanceof Uint8Array ? values : undefined;
}

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** How often each native kernel handed a call to the cpu kernel (diagnostics, tests, bench). */
export const fallbackCounts: Record<string, number> = {};

/** The stock cpu kernel, kept to fall back on for cases the libraries do not cover; counted. */
export function cpuKernel(kernelName: string): tf.KernelFunc {
  const k = tf.getKernel(kernelName, 'cpu');
  if (!k) throw new Error(`tfjs cpu backend has no '${kernelName}' kernel`);
  const run = k.kernelFunc;
  return (args) => {
    fallbackCounts[kernelName] = (fallbackCounts[kernelName] ?? 0) + 1;
    return run(args);
  };
}

/** tfjs fused activation name → the addon's post-op code; undefined where oneDNN has no match (prelu). */
export function activationCode(activation: string | undefined): number | undefined {
  switch (activation ?? 'linear') {
    case 'linear':
      return 0;
    case 'relu':
      return 1;
    case 'relu6':
      return 2;
    case 'leakyrelu':
      return 3;
    case 'sigmoid':
      return 4;
    case 'elu':
      return 5;
    default:
      return undefined;
  }
}
