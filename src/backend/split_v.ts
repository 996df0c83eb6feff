import { tf } from './tf.js';

/**
 * SplitV by block copies. The stock cpu and wasm kernels slice element by element through generic
 * strided indexing (~10 M floats/s here); concat's gradient is a SplitV, so every densely connected
 * block paid it on each backward pass. Each output here is `outer` contiguous runs of `size·inner`
 * values, copied with one tight loop (short runs) or TypedArray.set (long runs).
 */
export function splitSizes(dim: number, numOrSizeSplits: number | number[]): number[] {
  if (typeof numOrSizeSplits === 'number') {
    if (dim % numOrSizeSplits !== 0) throw new Error(`SplitV: dimension ${dim} is not divisible into ${numOrSizeSplits} parts`);
    return Array.from({ length: numOrSizeSplits }, () => dim / numOrSizeSplits);
  }
  const sizes = [...numOrSizeSplits];
  const free = sizes.indexOf(-1);
  if (free >= 0) sizes[free] = dim - sizes.reduce((a, b) => a + (b === -1 ? 0 : b), 0);
  if (sizes.reduce((a, b) => a + b, 0) !== dim) throw new Error(`SplitV: sizes ${numOrSizeSplits} do not add up to ${dim}`);
  return sizes;
}

type Values = Float32Array | Int32Array | Uint8Array;

export function splitBlocks(src: Values, shape: number[], axis: number, sizes: number[], outputs: Values[]): void {
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const rowLen = shape[axis]! * inner;
  let offset = 0;
  sizes.forEach((size, p) => {
    const out = outputs[p]!;
    const run = size * inner;
    const start = offset * inner;
    if (run >= 64) {
      for (let r = 0; r < outer; r++) out.set(src.subarray(r * rowLen + start, r * rowLen + start + run), r * run);
    } else {
      for (let r = 0, o = 0; r < outer; r++) {
        const base = r * rowLen + start;
        for (let k = 0; k < run; k++) out[o++] = src[base + k]!;
      }
    }
    offset += size;
  });
}

interface SplitAttrs {
  numOrSizeSplits: number | number[];
  axis: number | number[];
}

function prepare(x: tf.TensorInfo, attrs: SplitAttrs): { axis: number; sizes: number[]; shapes: number[][] } {
  const rawAxis = Array.isArray(attrs.axis) ? attrs.axis[0]! : attrs.axis;
  const axis = rawAxis < 0 ? rawAxis + x.shape.length : rawAxis;
  const sizes = splitSizes(x.shape[axis]!, attrs.numOrSizeSplits);
  return { axis, sizes, shapes: sizes.map((s) => x.shape.map((d, i) => (i === axis ? s : d))) };
}

interface CpuBackendLike {
  data: { get(id: object): { values: Values } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Values): tf.TensorInfo;
}

export const splitVCpuConfig: tf.KernelConfig = {
  kernelName: 'SplitV',
  backendName: 'cpu',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const cpu = backend as unknown as CpuBackendLike;
    const { axis, sizes, shapes } = prepare(x, attrs as unknown as SplitAttrs);
    const src = cpu.data.get(x.dataId).values;
    const Ctor = src.constructor as new (n: number) => Values;
    const outs = shapes.map((s) => new Ctor(s.reduce((a, b) => a * b, 1)));
    splitBlocks(src, x.shape, axis, sizes, outs);
    return outs.map((o, i) => cpu.makeTensorInfo(shapes[i]!, x.dtype, o));
  },
};

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Values;
}

export const splitVWasmConfig: tf.KernelConfig = {
  kernelName: 'SplitV',
  backendName: 'wasm',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { x } = inputs as { x: tf.TensorInfo };
    const wasm = backend as unknown as WasmBackendLike;
    const { axis, sizes, shapes } = prepare(x, attrs as unknown as SplitAttrs);
    const outs = shapes.map((s) => wasm.makeOutput(s, x.dtype));
    // Views are taken after every allocation: growing the wasm heap detaches earlier views.
    const src = wasm.typedArrayFromHeap(x);
    splitBlocks(src, x.shape, axis, sizes, outs.map((o) => wasm.typedArrayFromHeap(o)));
    return outs;
  },
};
