import { tf } from '../tf.js';
import type { NativeAddon } from './addon.js';
import { cpuKernel, float32Values, sizeOf, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// Data movement: the cpu backend transposes, concatenates, splits, tiles and pads by decoding
// every element's multi-index in JS. Attention head reshapes (Transpose), densely connected
// blocks (Concat, and SplitV for its gradient) and conv padding (PadV2) moved whole feature maps
// that way on every step; here each is one C++ pass of contiguous copies.

function transposeConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Transpose');
  return {
    kernelName: 'Transpose',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const { perm } = args.attrs as unknown as { perm: number[] };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || x.shape.length === 0) return fallback(args);
      const out = nativeBuffers.take(sizeOf(x.shape));
      if (out.length > 0) addon.transpose(xv, Int32Array.from(x.shape), Int32Array.from(perm), out);
      return backend.makeTensorInfo(perm.map((p) => x.shape[p]!), 'float32', out);
    },
  };
}

/** Values before `axis` index rows; a piece's row is its extent along `axis` times the inner size. */
const rowsOf = (shape: readonly number[], axis: number) => ({ outer: sizeOf(shape.slice(0, axis)), run: sizeOf(shape.slice(axis)) });

function concatConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Concat');
  return {
    kernelName: 'Concat',
    backendName,
    kernelFunc: (args) => {
      const inputs = args.inputs as unknown as tf.TensorInfo[];
      const { axis } = args.attrs as unknown as { axis: number | number[] };
      const backend = args.backend as CpuBackendStorage;
      const values = inputs.map((t) => float32Values(backend, t));
      if (inputs.length === 0 || inputs[0]!.shape.length === 0 || values.some((v) => !v)) return fallback(args);
      const $axis = tf.util.parseAxisParam(axis, inputs[0]!.shape)[0]!;
      const shapes = inputs.map((t) => t.shape);
      tf.backend_util.assertParamsConsistent(shapes, $axis);
      const outShape = tf.backend_util.computeOutShape(shapes, $axis);
      const out = nativeBuffers.take(sizeOf(outShape));
      if (out.length > 0) {
        const runs = Int32Array.from(shapes.map((s) => rowsOf(s, $axis).run));
        addon.concat(values as Float32Array[], runs, rowsOf(outShape, $axis).outer, out);
      }
      return backend.makeTensorInfo(outShape, 'float32', out);
    },
  };
}

function splitVConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('SplitV');
  return {
    kernelName: 'SplitV',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const attrs = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number | number[] };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || x.shape.length === 0) return fallback(args);
      const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0]!;
      const sizes = tf.backend_util.prepareSplitSize(x, attrs.numOrSizeSplits, axis);
      const shapes = sizes.map((s) => x.shape.map((d, i) => (i === axis ? s : d)));
      const outs = shapes.map((s) => nativeBuffers.take(sizeOf(s)));
      if (xv.length > 0 && sizes.length > 0) {
        const runs = Int32Array.from(shapes.map((s) => rowsOf(s, axis).run));
        addon.splitV(xv, runs, rowsOf(x.shape, axis).outer, outs);
      }
      return outs.map((o, i) => backend.makeTensorInfo(shapes[i]!, 'float32', o));
    },
  };
}

function tileConfig(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('Tile');
  return {
    kernelName: 'Tile',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const { reps } = args.attrs as unknown as { reps: number[] };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      if (!xv || x.shape.length === 0 || reps.length !== x.shape.length) return fallback(args);
      const outShape = x.shape.map((d, i) => d * reps[i]!);
      const out = nativeBuffers.take(sizeOf(outShape));
      if (out.length > 0) addon.tile(xv, Int32Array.from(x.shape), Int32Array.from(reps), out);
      return backend.makeTensorInfo(outShape, 'float32', out);
    },
  };
}

function padV2Config(addon: NativeAddon, backendName: string): tf.KernelConfig {
  const fallback = cpuKernel('PadV2');
  return {
    kernelName: 'PadV2',
    backendName,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      const { paddings, constantValue } = args.attrs as unknown as { paddings: [number, number][]; constantValue: number };
      const backend = args.backend as CpuBackendStorage;
      const xv = float32Values(backend, x);
      const valid = paddings.length === x.shape.length && paddings.every(([b, a]) => b >= 0 && a >= 0);
      if (!xv || x.shape.length === 0 || xv.length === 0 || !valid) return fallback(args);
      const outShape = x.shape.map((d, i) => paddings[i]![0] + d + paddings[i]![1]);
      const out = nativeBuffers.take(sizeOf(outShape));
      const before = Int32Array.from(paddings.map((p) => p[0]));
      const after = Int32Array.from(paddings.map((p) => p[1]));
      addon.pad(xv, Int32Array.from(x.shape), before, after, constantValue, out);
      return backend.makeTensorInfo(outShape, 'float32', out);
    },
  };
}

export function layoutConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  return [
    transposeConfig(addon, backendName),
    concatConfig(addon, backendName),
    splitVConfig(addon, backendName),
    tileConfig(addon, backendName),
    padV2Config(addon, backendName),
  ];
}
