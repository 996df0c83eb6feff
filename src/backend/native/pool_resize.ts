import { tf } from '../tf.js';
import { resizeBilinearGradCpuConfig } from '../resize_bilinear_grad.js';
import type { NativeAddon } from './addon.js';
import { cpuKernel, fallbackCounts, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// Token-grid pooling and resizing (NSP blocks pool, modulate and resize back; stages upsample the
// previous scale; the VAE decoder upsamples by nearest neighbour). The cpu kernels index every
// tap through generic strides in JS; these are NHWC loops in C++ with the same index conventions.
// Gradients are the exact adjoints of the forward passes, which tfjs's own kernels are not in
// three cases: ResizeBilinearGrad (see resize_bilinear_grad.ts), ResizeNearestNeighborGrad with
// halfPixelCenters (tfjs ignores it), and AvgPoolGrad for windows clipped by padding (tfjs divides
// by the full window where the forward pass divided by the clipped one).

const enum Pool {
  AvgForward = 0,
  AvgBackward = 1,
}

const enum Resize {
  BilinearForward = 0,
  BilinearBackward = 1,
  NearestForward = 2,
  NearestBackward = 3,
}

interface PoolAttrs {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function poolParams(info: tf.backend_util.Conv2DInfo): Int32Array {
  return Int32Array.from([
    info.batchSize,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.outHeight,
    info.outWidth,
    info.filterHeight,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.padInfo.top,
    info.padInfo.left,
  ]);
}

const poolInfo = (shape: number[], attrs: PoolAttrs, rounding?: 'floor' | 'round' | 'ceil') =>
  tf.backend_util.computePool2DInfo(shape as [number, number, number, number], attrs.filterSize, attrs.strides, 1, attrs.pad, rounding);

function avgPoolConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('AvgPool');
  return {
    kernelName: 'AvgPool',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const attrs = args.attrs as unknown as PoolAttrs;
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || x.shape.length !== 4 || xv.length === 0) return fallback(args);
      const info = poolInfo(x.shape, attrs, attrs.dimRoundingMode);
      if (sizeOf(info.outShape) === 0 || info.padInfo.top < 0 || info.padInfo.left < 0) return fallback(args);
      const out = nativeBuffers.take(sizeOf(info.outShape));
      addon.pool(Pool.AvgForward, poolParams(info), xv, out);
      return backend.makeTensorInfo([...info.outShape], 'float32', out);
    },
  };
}

function avgPoolGradConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('AvgPoolGrad');
  return {
    kernelName: 'AvgPoolGrad',
    backendName,
    kernelFunc: (args) => {
      const { dy, input } = args.inputs as { dy: tf.TensorInfo; input: tf.TensorInfo };
      const attrs = args.attrs as unknown as PoolAttrs;
      const backend = args.backend as CpuBackendStorage;
      const dyv = float32Values(backend, dy);
      if (!dyv || input.shape.length !== 4 || sizeOf(input.shape) === 0 || dyv.length === 0) return fallback(args);
      // The gradient op forwards no rounding mode, as the cpu kernel assumes.
      const info = poolInfo(input.shape, attrs);
      const consistent = info.outShape.every((d, i) => d === dy.shape[i]);
      if (!consistent || info.padInfo.top < 0 || info.padInfo.left < 0) return fallback(args);
      const out = nativeBuffers.takeZeroed(sizeOf(input.shape));
      addon.pool(Pool.AvgBackward, poolParams(info), dyv, out);
      return backend.makeTensorInfo([...input.shape], 'float32', out);
    },
  };
}

interface ResizeAttrs {
  alignCorners: boolean;
  halfPixelCenters?: boolean;
  size?: [number, number];
}

/** batch inH inW channels outH outW, for an NHWC image and the resized size. */
const resizeParams = (image: readonly number[], outH: number, outW: number) => Int32Array.from([image[0]!, image[1]!, image[2]!, image[3]!, outH, outW]);

function resizeForwardConfig(addon: NativeAddon, backendName: string, kernelName: 'ResizeBilinear' | 'ResizeNearestNeighbor'): tf.KernelConfig {
  const fallback = cpuKernel(kernelName);
  const kind = kernelName === 'ResizeBilinear' ? Resize.BilinearForward : Resize.NearestForward;
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { images } = args.inputs as { images: tf.TensorInfo };
      const attrs = args.attrs as unknown as ResizeAttrs;
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, images);
      const [outH, outW] = attrs.size ?? [0, 0];
      if (!xv || images.shape.length !== 4 || xv.length === 0 || outH < 1 || outW < 1) return fallback(args);
      const outShape = [images.shape[0]!, outH, outW, images.shape[3]!];
      const out = nativeBuffers.take(sizeOf(outShape));
      addon.resize(kind, resizeParams(images.shape, outH, outW), Boolean(attrs.alignCorners), Boolean(attrs.halfPixelCenters), xv, out);
      return backend.makeTensorInfo(outShape, 'float32', out);
    },
  };
}

function resizeGradConfig(
  addon: NativeAddon,
  backendName: string,
  kernelName: 'ResizeBilinearGrad' | 'ResizeNearestNeighborGrad',
  fallback: tf.KernelFunc,
): tf.KernelConfig {
  const kind = kernelName === 'ResizeBilinearGrad' ? Resize.BilinearBackward : Resize.NearestBackward;
  return {
    kernelName,
    backendName,
    kernelFunc: (args) => {
      const { images, dy } = args.inputs as { images: tf.TensorInfo; dy: tf.TensorInfo };
      const attrs = args.attrs as unknown as ResizeAttrs;
      const backend = args.backend as CpuBackendStorage;
      const dyv = float32Values(backend, dy);
      const fits = images.shape.length === 4 && dy.shape.length === 4 && dy.shape[0] === images.shape[0] && dy.shape[3] === images.shape[3];
      if (!dyv || !fits || images.dtype !== 'float32' || sizeOf(images.shape) === 0 || dyv.length === 0) return fallback(args);
      const out = nativeBuffers.takeZeroed(sizeOf(images.shape));
      addon.resize(kind, resizeParams(images.shape, dy.shape[1]!, dy.shape[2]!), Boolean(attrs.alignCorners), Boolean(attrs.halfPixelCenters), dyv, out);
      return backend.makeTensorInfo([...images.shape], 'float32', out);
    },
  };
}

/** The repo's corrected JS ResizeBilinearGrad (the cpu backend's stock one is wrong), counted like cpuKernel's fallbacks. */
const correctedResizeBilinearGrad: tf.KernelFunc = (args) => {
  fallbackCounts.ResizeBilinearGrad = (fallbackCounts.ResizeBilinearGrad ?? 0) + 1;
  return resizeBilinearGradCpuConfig.kernelFunc(args);
};

export function poolResizeConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return [
    avgPoolConfig(addon, backendName),
    avgPoolGradConfig(addon, backendName),
    resizeForwardConfig(addon, backendName, 'ResizeBilinear'),
    resizeForwardConfig(addon, backendName, 'ResizeNearestNeighbor'),
    resizeGradConfig(addon, backendName, 'ResizeBilinearGrad', correctedResizeBilinearGrad),
    resizeGradConfig(addon, backendName, 'ResizeNearestNeighborGrad', cpuKernel('ResizeNearestNeighborGrad')),
  ];
}
