import { tf } from '../tf.js';
import { segmentSumRows } from '../gather_scatter.js';

/** The part of tfjs-backend-wasm's BackendWasm this kernel uses: heap allocation and heap views. */
interface WasmHeap {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/**
 * out[s, ...] = Σ_{i : ids[i] = s} x[i, ...], ids outside [0, numSegments) dropped (TF semantics).
 * A single pass over x directly on the wasm heap: O(size(x)) rather than the cpu kernel's
 * O(numSegments·size(x)).
 */
export const unsortedSegmentSumConfig: tf.KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
    const numSegments = (attrs as { numSegments: number }).numSegments;
    const heap = backend as unknown as WasmHeap;
    if (x.dtype !== 'float32' && x.dtype !== 'int32') {
      throw new Error(`UnsortedSegmentSum on wasm supports float32 and int32 data, got ${x.dtype}`);
    }
    const idRank = segmentIds.shape.length;
    const innerShape = x.shape.slice(idRank);
    const rowSize = innerShape.reduce((a, b) => a * b, 1);
    const out = heap.makeOutput([numSegments, ...innerShape], x.dtype);
    // Views only after the last allocation: a heap growth would detach earlier ones.
    const outView = heap.typedArrayFromHeap(out);
    const xView = heap.typedArrayFromHeap(x);
    const idView = heap.typedArrayFromHeap(segmentIds);
    outView.fill(0);
    segmentSumRows(xView, idView, rowSize, numSegments, outView);
    return out;
  },
};
