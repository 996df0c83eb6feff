import { tf } from '../tf.js';

type Conv2DPad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];

interface BackpropFilterAttrs {
  strides: number | [number, number];
  pad: Conv2DPad;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/** Views a kernel input (a Tensor or a bare TensorInfo) as a Tensor owned by the enclosing tidy. */
function asTensor(info: tf.TensorInfo): tf.Tensor {
  return tf.engine().runKernel('Reshape', { x: info } as unknown as tf.NamedTensorMap, { shape: info.shape }) as tf.Tensor;
}

/**
 * dW for a 2-D convolution, written as one forward convolution so that it runs on wasm's
 * XNNPACK Conv2D instead of a JS loop:
 *   dW[kh,kw,c,o] = Σ_{n,i,j} x[n, i·sh + kh − top, j·sw + kw − left, c] · dy[n,i,j,o]
 * is a stride-1 convolution of x viewed as [C, H, W, N] (batch C, channels N) with dy viewed as a
 * [OH, OW, N, O] filter dilated by the forward strides; its output [C, KH, KW, O] is dW transposed.
 */
export function conv2dBackpropFilter(x4: tf.Tensor4D, dy4: tf.Tensor4D, attrs: BackpropFilterAttrs): tf.Tensor4D {
  return tf.tidy(() => {
    let x = x4;
    let dy = dy4;
    if (attrs.dataFormat === 'NCHW') {
      x = x.transpose([0, 2, 3, 1]);
      dy = dy.transpose([0, 2, 3, 1]);
    }
    const [kh, kw] = attrs.filterShape;
    const info = tf.backend_util.computeConv2DInfo(
      x.shape,
      attrs.filterShape,
      attrs.strides,
      1,
      attrs.pad,
      attrs.dimRoundingMode,
      false,
      'channelsLast',
    );
    const { top, left } = info.padInfo;
    const [, h, w] = x.shape;
    // The forward conv may stop before the last input rows/columns (stride leftovers); the
    // far-side padding that makes the output exactly kh×kw is then negative, so crop instead.
    let bottom = kh + (info.outHeight - 1) * info.strideHeight - h - top;
    let right = kw + (info.outWidth - 1) * info.strideWidth - w - left;
    if (bottom < 0 || right < 0) {
      x = x.slice([0, 0, 0, 0], [-1, h + Math.min(bottom, 0), w + Math.min(right, 0), -1]);
      bottom = Math.max(bottom, 0);
      right = Math.max(right, 0);
    }
    const xAsBatch = x.transpose([3, 1, 2, 0]) as tf.Tensor4D;
    const dyAsFilter = dy.transpose([1, 2, 0, 3]) as tf.Tensor4D;
    const pad: [[number, number], [number, number], [number, number], [number, number]] = [
      [0, 0],
      [top, bottom],
      [left, right],
      [0, 0],
    ];
    const dwT = tf.conv2d(xAsBatch, dyAsFilter, 1, pad, 'NHWC', [info.strideHeight, info.strideWidth]);
    return dwT.transpose([1, 2, 0, 3]) as tf.Tensor4D;
  });
}

export const conv2dBackpropFilterConfig: tf.KernelConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: ({ inputs, attrs }) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    return tf.tidy(() =>
      conv2dBackpropFilter(asTensor(x) as tf.Tensor4D, asTensor(dy) as tf.Tensor4D, attrs as unknown as BackpropFilterAttrs),
    );
  },
};
