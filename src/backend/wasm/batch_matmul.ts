import { tf } from '../tf.js';

/**
 * tfjs-backend-wasm multiplies on XNNPACK only when neither operand is transposed and both batch
 * sizes are 1; everything else — every Linear (x·Wᵀ with torch's [out, in] weights), every
 * attention product, most gradients — goes to a naive blocked loop at 1–3 GFLOP/s. This
 * replacement reaches the XNNPACK case for all float32 products: transposed operands are
 * materialised (a memory-bound copy), a batch that only the left operand has is folded into its
 * rows, and a batch both have is split into per-slice products.
 */

/** The stock kernel under a private name, so the replacement can still reach its XNNPACK case. */
const STOCK_KERNEL = 'SfWasmStockBatchMatMul';

interface MatMulAttrs {
  transposeA: boolean;
  transposeB: boolean;
}

function asTensor(info: tf.TensorInfo): tf.Tensor {
  return tf.engine().runKernel('Reshape', { x: info } as unknown as tf.NamedTensorMap, { shape: info.shape }) as tf.Tensor;
}

const product = (dims: readonly number[]) => dims.reduce((p, d) => p * d, 1);

function stock(a: tf.Tensor, b: tf.Tensor, attrs: MatMulAttrs): tf.Tensor {
  return tf.engine().runKernel(STOCK_KERNEL, { a, b } as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/** [1, M, K] · [1, K, N] on XNNPACK. */
function xnn(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return stock(a, b, { transposeA: false, transposeB: false });
}

function swapLastTwo(t: tf.Tensor): tf.Tensor {
  const perm = [...Array(t.rank).keys()];
  [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1]!, perm[t.rank - 2]!];
  return tf.transpose(t, perm);
}

export function batchMatMul(aInfo: tf.TensorInfo, bInfo: tf.TensorInfo, attrs: MatMulAttrs): tf.Tensor {
  return tf.tidy(() => {
    const a = asTensor(aInfo);
    const b = asTensor(bInfo);
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.size === 0 || b.size === 0) return stock(a, b, attrs);
    const aBatch = a.shape.slice(0, -2);
    const bBatch = b.shape.slice(0, -2);
    const outBatch = tf.backend_util.assertAndGetBroadcastShape(aBatch, bBatch);
    const [na, nb, nOut] = [product(aBatch), product(bBatch), product(outBatch)];
    // A batch broadcast only partly (e.g. [2, 1] against [1, 3]) stays on the stock kernel.
    if ((na !== 1 && na !== nOut) || (nb !== 1 && nb !== nOut)) return stock(a, b, attrs);
    const left = attrs.transposeA ? swapLastTwo(a) : a;
    const right = attrs.transposeB ? swapLastTwo(b) : b;
    const [m, k] = left.shape.slice(-2) as [number, number];
    const n = right.shape[right.rank - 1]!;
    if (nb === 1) {
      // One right operand for every batch: fold the batch into the rows.
      return xnn(left.reshape([1, na * m, k]), right.reshape([1, k, n])).reshape([...outBatch, m, n]);
    }
    // One split per operand (the stock Slice reads the whole input back for every slice).
    const lefts = na === 1 ? [left.reshape([1, m, k])] : tf.split(left.reshape([na, m, k]), na, 0);
    const rights = tf.split(right.reshape([nb, k, n]), nb, 0);
    const pieces = rights.map((bi, i) => xnn(lefts[na === 1 ? 0 : i]!, bi));
    return tf.concat(pieces, 0).reshape([...outBatch, m, n]);
  });
}

/**
 * Puts the replacement in place of the wasm BatchMatMul (idempotent). Call after the wasm
 * backend's package is imported, like the other kernel patches.
 */
export function installWasmBatchMatMul(): void {
  const current = tf.getKernel('BatchMatMul', 'wasm');
  if (!current || tf.getKernel(STOCK_KERNEL, 'wasm')) return;
  tf.registerKernel({ ...current, kernelName: STOCK_KERNEL });
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel({
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      return batchMatMul(a, b, attrs as unknown as MatMulAttrs);
    },
  });
}
