import { tf } from './tf.js';

/**
 * Embedding lookups and their gradient by whole-row copies. tfjs's cpu GatherV2 moves one element
 * at a time through TensorBuffer index arithmetic (22 ms for a 768×64 lookup here), and its
 * UnsortedSegmentSum, the gradient of every gather, runs four full-size ops per segment:
 * O(numSegments·size), 259 ms of a 556 ms NSP base-stage step on the builtin text encoder.
 * Both are O(size) loops here, shared by the cpu, native and wasm backends.
 */
type Values = Float32Array | Int32Array | Uint8Array;

const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** out[o, j, :] = x[o, ids[j], :] for x viewed as [outer, dim, inner]; throws on an index outside [0, dim). */
export function gatherRows(x: Values, outer: number, dim: number, inner: number, ids: ArrayLike<number>, out: Values): void {
  for (let j = 0; j < ids.length; j++) {
    const id = ids[j]!;
    if (!(id >= 0 && id < dim)) throw new RangeError(`GatherV2: the index value ${id} is not in [0, ${dim - 1}]`);
  }
  const n = ids.length;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < n; j++) {
      const src = (o * dim + ids[j]!) * inner;
      const dst = (o * n + j) * inner;
      if (inner >= 64) out.set(x.subarray(src, src + inner), dst);
      else for (let k = 0; k < inner; k++) out[dst + k] = x[src + k]!;
    }
  }
}

/** out[s, :] = Σ_{i : ids[i] = s} x[i, :]; ids outside [0, numSegments) are dropped (TensorFlow's rule). `out` must be zeroed. */
export function segmentSumRows(x: Values, ids: ArrayLike<number>, rowSize: number, numSegments: number, out: Values): void {
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * rowSize;
    const dst = s * rowSize;
    for (let k = 0; k < rowSize; k++) out[dst + k] += x[src + k]!;
  }
}

interface CpuStorage {
  data: { get(id: object): { values: Values } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Values): tf.TensorInfo;
}

const ctorOf = (dtype: tf.DataType): new (n: number) => Values =>
  dtype === 'int32' ? Int32Array : dtype === 'bool' ? Uint8Array : Float32Array;

// Taken when this module loads, before anything replaces it: batched gathers still go there.
const stockGather = tf.getKernel('GatherV2', 'cpu')!.kernelFunc;

/** GatherV2 and UnsortedSegmentSum for a backend that keeps tensors as JS typed arrays (cpu, native). */
export function gatherScatterCpuConfigs(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: 'GatherV2',
      backendName,
      kernelFunc: (args) => {
        const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
        const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims?: number };
        if ((batchDims ?? 0) !== 0 || x.dtype === 'string' || x.dtype === 'complex64') return stockGather(args);
        const cpu = args.backend as unknown as CpuStorage;
        const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
        const outer = product(x.shape.slice(0, ax));
        const inner = product(x.shape.slice(ax + 1));
        const ids = cpu.data.get(indices.dataId).values;
        const out = new (ctorOf(x.dtype))(outer * ids.length * inner);
        gatherRows(cpu.data.get(x.dataId).values, outer, x.shape[ax]!, inner, ids, out);
        return cpu.makeTensorInfo([...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)], x.dtype, out);
      },
    },
    {
      kernelName: 'UnsortedSegmentSum',
      backendName,
      kernelFunc: ({ inputs, attrs, backend }) => {
        const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
        const numSegments = (attrs as { numSegments: number }).numSegments;
        const cpu = backend as unknown as CpuStorage;
        const inner = x.shape.slice(segmentIds.shape.length);
        const out = new (ctorOf(x.dtype))(numSegments * product(inner));
        segmentSumRows(cpu.data.get(x.dataId).values, cpu.data.get(segmentIds.dataId).values, product(inner), numSegments, out);
        return cpu.makeTensorInfo([numSegments, ...inner], x.dtype, out);
      },
    },
  ];
}
