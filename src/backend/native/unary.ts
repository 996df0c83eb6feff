import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { cpuKernel, float32Values, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// Elementwise maps (activations, roots, rounding): the cpu backend calls a JS closure per element,
// and an NSP training step runs them, and the masks of their gradients, over whole feature maps.

/** tfjs kernel → op code in native/src/unary.h. */
const UNARY = {
  Relu: 0,
  Relu6: 1,
  LeakyRelu: 2,
  Elu: 3,
  Selu: 4,
  Sigmoid: 5,
  Tanh: 6,
  Exp: 7,
  Expm1: 8,
  Log: 9,
  Log1p: 10,
  Sqrt: 11,
  Rsqrt: 12,
  Square: 13,
  Neg: 14,
  Abs: 15,
  Step: 16,
  Softplus: 17,
  Sin: 18,
  Cos: 19,
  Erf: 20,
  Reciprocal: 21,
  Sign: 22,
  Floor: 23,
  Ceil: 24,
  Round: 25,
  ClipByValue: 26,
} as const;

export type UnaryKernel = keyof typeof UNARY;

/** The op's scalar attributes as the addon's (p0, p1). */
function opParams(kernelName: UnaryKernel, attrs: tf.NamedAttrMap): [number, number] {
  switch (kernelName) {
    case 'LeakyRelu':
    case 'Step':
      return [attrs.alpha as number, 0];
    case 'ClipByValue':
      return [attrs.clipValueMin as number, attrs.clipValueMax as number];
    default:
      return [0, 0];
  }
}

/** Below this many elements the cpu kernel's JS loop beats the call into C++. */
const MIN_NATIVE_ELEMENTS = 32;

function unaryConfig(addon: NativeAddon, backendName: string, kernelName: UnaryKernel): tf.KernelConfig {
  const fallback = cpuKernel(kernelName);
  const op = UNARY[kernelName];
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || xv.length < MIN_NATIVE_ELEMENTS) return fallback(args);
      const [p0, p1] = opParams(kernelName, args.attrs ?? {});
      const out = nativeBuffers.take(xv.length);
      addon.unary(op, xv, out, p0, p1);
      return backend.makeTensorInfo([...x.shape], 'float32', out);
    },
  };
}

export function unaryConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return (Object.keys(UNARY) as UnaryKernel[]).map((k) => unaryConfig(addon, backendName, k));
}
