import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { activationCode, cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

type Conv2DPad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

interface ConvAttrs {
  strides: number | [number, number];
  pad: Conv2DPad;
  dataFormat: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
  leakyreluAlpha?: number;
  inputShape?: [number, number, number, number];
  filterShape?: [number, number, number, number];
}

const enum Pass {
  Forward = 0,
  BackwardData = 1,
  BackwardWeights = 2,
}

/**
 * The addon's 19 shape parameters for a tfjs Conv2DInfo. oneDNN demands that
 * (in − effectiveFilter + padBefore + padAfter) / stride + 1 equal the output size exactly; tfjs's
 * numeric and explicit pads with truncation may leave rows the filter never reaches, so the far
 * padding is recomputed from the output size when the two disagree.
 */
export function convParams(info: tf.backend_util.Conv2DInfo, activation: number): Int32Array {
  const { top, left } = info.padInfo;
  let { bottom, right } = info.padInfo;
  const fits = (inSize: number, eff: number, before: number, after: number, stride: number, out: number) =>
    Math.floor((inSize - eff + before + after) / stride) + 1 === out;
  if (!fits(info.inHeight, info.effectiveFilterHeight, top, bottom, info.strideHeight, info.outHeight)) {
    bottom = (info.outHeight - 1) * info.strideHeight + info.effectiveFilterHeight - info.inHeight - top;
  }
  if (!fits(info.inWidth, info.effectiveFilterWidth, left, right, info.strideWidth, info.outWidth)) {
    right = (info.outWidth - 1) * info.strideWidth + info.effectiveFilterWidth - info.inWidth - left;
  }
  return Int32Array.from([
    info.batchSize,
    info.inChannels,
    info.inHeight,
    info.inWidth,
    info.outChannels,
    info.filterHeight,
    info.filterWidth,
    info.outHeight,
    info.outWidth,
    info.strideHeight,
    info.strideWidth,
    info.dilationHeight,
    info.dilationWidth,
    top,
    left,
    bottom,
    right,
    info.dataFormat === 'channelsFirst' ? 1 : 0,
    activation,
  ]);
}

function convInfo(inShape: number[], filterShape: number[], attrs: ConvAttrs, dilations: number | [number, number]) {
  return tf.backend_util.computeConv2DInfo(
    inShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    dilations,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  );
}

/**
 * Runs one pass, or returns undefined when oneDNN rejects the shape (a negative far padding, for
 * one); the addon remembers rejected shapes so the caller's fallback stays cheap.
 */
function tryConv(
  addon: NativeAddon,
  pass: Pass,
  params: Int32Array,
  alpha: number,
  in1: Float32Array,
  in2: Float32Array,
  bias: Float32Array | null,
  out: Float32Array,
): boolean {
  try {
    addon.conv(pass, params, alpha, in1, in2, bias, out);
    return true;
  } catch {
    return false;
  }
}

function forwardConfig(addon: NativeAddon, backendName: string, kernelName: 'Conv2D' | 'FusedConv2D'): tf.KernelConfig {
  const fallback = cpuKernel(kernelName);
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { x, filter, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
      const attrs = args.attrs as unknown as ConvAttrs;
      const backend = args.backend as CpuBackendStorage;
      const activation = activationCode(attrs.activation);
      const xv = float32Values(backend, x!);
      const wv = float32Values(backend, filter!);
      if (activation === undefined || preluActivationWeights || !xv || !wv) return fallback(args);
      const info = convInfo(x!.shape, filter!.shape, attrs, attrs.dilations ?? 1);
      let biasValues: Float32Array | null = null;
      if (bias) {
        // Only a per-output-channel bias maps onto oneDNN's; other broadcasts use the cpu kernel.
        const channelAxis = info.dataFormat === 'channelsFirst' ? bias.shape.length - 3 : bias.shape.length - 1;
        const perChannel = sizeOf(bias.shape) === info.outChannels && (bias.shape.length === 1 || bias.shape[channelAxis] === info.outChannels);
        biasValues = perChannel ? (float32Values(backend, bias) ?? null) : null;
        if (!biasValues) return fallback(args);
      }
      if (sizeOf(info.outShape) === 0 || sizeOf(x!.shape) === 0) return fallback(args);
      const out = nativeBuffers.take(sizeOf(info.outShape));
      const params = convParams(info, activation);
      if (!tryConv(addon, Pass.Forward, params, attrs.leakyreluAlpha ?? 0.2, xv, wv, biasValues, out)) return fallback(args);
      return backend.makeTensorInfo([...info.outShape], 'float32', out);
    },
  };
}

export const conv2DConfig = (addon: NativeAddon, backendName: string) => forwardConfig(addon, backendName, 'Conv2D');
export const fusedConv2DConfig = (addon: NativeAddon, backendName: string) => forwardConfig(addon, backendName, 'FusedConv2D');

export function conv2DBackpropInputConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Conv2DBackpropInput');
  return {
    kernelName: 'Conv2DBackpropInput',
    backendName,
    kernelFunc: (args) => {
      const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
      const attrs = args.attrs as unknown as ConvAttrs;
      const backend = args.backend as CpuBackendStorage;
      const dyv = float32Values(backend, dy);
      const wv = float32Values(backend, filter);
      const inputShape = attrs.inputShape!;
      if (!dyv || !wv || sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0) return fallback(args);
      const info = convInfo(inputShape, filter.shape, attrs, 1);
      const out = nativeBuffers.take(sizeOf(inputShape));
      if (!tryConv(addon, Pass.BackwardData, convParams(info, 0), 0, dyv, wv, null, out)) return fallback(args);
      return backend.makeTensorInfo([...inputShape], 'float32', out);
    },
  };
}

export function conv2DBackpropFilterConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Conv2DBackpropFilter');
  return {
    kernelName: 'Conv2DBackpropFilter',
    backendName,
    kernelFunc: (args) => {
      const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const attrs = args.attrs as unknown as ConvAttrs;
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      const dyv = float32Values(backend, dy);
      const filterShape = attrs.filterShape!;
      if (!xv || !dyv || sizeOf(x.shape) === 0 || sizeOf(dy.shape) === 0) return fallback(args);
      const info = convInfo(x.shape, filterShape, attrs, 1);
      const out = nativeBuffers.take(sizeOf(filterShape));
      if (!tryConv(addon, Pass.BackwardWeights, convParams(info, 0), 0, xv, dyv, null, out)) return fallback(args);
      return backend.makeTensorInfo([...filterShape], 'float32', out);
    },
  };
}
