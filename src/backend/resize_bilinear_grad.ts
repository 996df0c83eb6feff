import { tf } from './tf.js';

/**
 * dL/dimages of tf.image.resizeBilinear, honouring both alignCorners and halfPixelCenters.
 * tfjs 4.22's own ResizeBilinearGrad kernels ignore halfPixelCenters (the PyTorch
 * align_corners=False convention) on cpu and wasm, and cpu labels its output [N, W, H, C],
 * which breaks non-square images. Each output pixel spreads its gradient over the (up to) four
 * input pixels the forward pass blended, with the forward pass's clamping.
 */
export function resizeBilinearGradValues(
  dy: ArrayLike<number>,
  imageShape: readonly number[],
  dyShape: readonly number[],
  alignCorners: boolean,
  halfPixelCenters: boolean,
  out: Float32Array,
): Float32Array {
  const [batch, inH, inW, depth] = imageShape as [number, number, number, number];
  const [, outH, outW] = dyShape as [number, number, number];
  const scale = (inSize: number, outSize: number) =>
    alignCorners && outSize > 1 ? (inSize - 1) / (outSize - 1) : inSize / outSize;
  const taps = (outSize: number, inSize: number) => {
    const s = scale(inSize, outSize);
    const lo = new Int32Array(outSize);
    const hi = new Int32Array(outSize);
    const frac = new Float64Array(outSize);
    for (let o = 0; o < outSize; o++) {
      const src = halfPixelCenters ? (o + 0.5) * s - 0.5 : o * s;
      lo[o] = Math.max(0, Math.floor(src));
      hi[o] = Math.min(inSize - 1, Math.ceil(src));
      frac[o] = src - lo[o]!;
    }
    return { lo, hi, frac };
  };
  const rows = taps(outH, inH);
  const cols = taps(outW, inW);
  out.fill(0);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * inH * inW * depth;
    for (let r = 0; r < outH; r++) {
      const top = base + rows.lo[r]! * inW * depth;
      const bottom = base + rows.hi[r]! * inW * depth;
      const fr = rows.frac[r]!;
      for (let c = 0; c < outW; c++) {
        const left = cols.lo[c]! * depth;
        const right = cols.hi[c]! * depth;
        const fc = cols.frac[c]!;
        const wTL = (1 - fr) * (1 - fc);
        const wTR = (1 - fr) * fc;
        const wBL = fr * (1 - fc);
        const wBR = fr * fc;
        for (let d = 0; d < depth; d++) {
          const g = dy[k++]!;
          out[top + left + d] += g * wTL;
          out[top + right + d] += g * wTR;
          out[bottom + left + d] += g * wBL;
          out[bottom + right + d] += g * wBR;
        }
      }
    }
  }
  return out;
}

interface ResizeGradAttrs {
  alignCorners: boolean;
  halfPixelCenters?: boolean;
}

interface CpuStorage {
  readSync(dataId: object): ArrayLike<number>;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

interface WasmHeap {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

function attrsOf(attrs: unknown): [boolean, boolean] {
  const a = attrs as ResizeGradAttrs;
  return [Boolean(a.alignCorners), Boolean(a.halfPixelCenters)];
}

export const resizeBilinearGradCpuConfig: tf.KernelConfig = {
  kernelName: 'ResizeBilinearGrad',
  backendName: 'cpu',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { images, dy } = inputs as { images: tf.TensorInfo; dy: tf.TensorInfo };
    const cpu = backend as unknown as CpuStorage;
    const out = new Float32Array(images.shape.reduce((a, b) => a * b, 1));
    resizeBilinearGradValues(cpu.readSync(dy.dataId), images.shape, dy.shape, ...attrsOf(attrs), out);
    return cpu.makeTensorInfo([...images.shape], 'float32', out);
  },
};

export const resizeBilinearGradWasmConfig: tf.KernelConfig = {
  kernelName: 'ResizeBilinearGrad',
  backendName: 'wasm',
  kernelFunc: ({ inputs, attrs, backend }) => {
    const { images, dy } = inputs as { images: tf.TensorInfo; dy: tf.TensorInfo };
    const heap = backend as unknown as WasmHeap;
    const outInfo = heap.makeOutput([...images.shape], 'float32');
    // Views only after the last allocation: a heap growth would detach earlier ones.
    const out = heap.typedArrayFromHeap(outInfo) as Float32Array;
    const dyView = heap.typedArrayFromHeap(dy);
    resizeBilinearGradValues(dyView, images.shape, dy.shape, ...attrsOf(attrs), out);
    return outInfo;
  },
};
