import { tf } from '../backend/tf.js';
import { FUSED_KERNELS, hasFusedKernel, type ConvListActivation, type ConvListAttrs } from '../backend/fused.js';

/** The activation a convolution applies to its output (the ReLU family, which oneDNN applies as a post-op). */
export interface ConvActivation {
  kind: ConvListActivation;
  /** Leaky ReLU slope, >= 0. */
  alpha?: number;
}

export interface ConvListSpec {
  stride: number;
  /** Zero rows/columns added [top, left, bottom, right]. */
  pad: [number, number, number, number];
  activation?: ConvActivation;
}

/** Whether the backend can run `convList` as one kernel each way for these operands. */
export function canFuseConvList(xs: tf.Tensor[], weight: tf.Tensor): boolean {
  return hasFusedKernel(FUSED_KERNELS.convList) && weight.dtype === 'float32' && xs.every((x) => x.dtype === 'float32');
}

/**
 * act(conv2d(concat(xs, channels), weight) + bias) in one kernel each way: xs NHWC sharing batch and
 * spatial size, weight [O, ΣC, kh, kw] as PyTorch stores it, bias [O]. The concatenation a residual
 * dense block feeds every conv is never materialised as a tensor, and the weight is never transposed
 * as one. Callers check `canFuseConvList` and otherwise compose the same function from tfjs ops.
 */
export function convList(xs: tf.Tensor4D[], weight: tf.Tensor4D, bias: tf.Tensor1D | null, spec: ConvListSpec): tf.Tensor4D {
  const activation = spec.activation ?? { kind: 'linear' };
  const alpha = activation.alpha ?? 0;
  if (activation.kind === 'leaky_relu' && !(alpha >= 0)) throw new Error(`convList: leaky relu slope must be >= 0, got ${alpha}`);
  const attrs: ConvListAttrs = { inputs: xs.length, hasBias: bias !== null, stride: spec.stride, pad: spec.pad, activation: activation.kind, alpha };
  const k = xs.length;
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const tensors = args.slice(0, -1) as tf.Tensor[];
    const inputs: tf.NamedTensorMap = { weight: tensors[k]! };
    tensors.slice(0, k).forEach((x, i) => (inputs[`x${i}`] = x));
    if (bias) inputs.bias = tensors[k + 1]!;
    const y = tf.engine().runKernel(FUSED_KERNELS.convList, inputs, attrs) as tf.Tensor4D;
    // Linear needs no output for its gradient; saving it would only cost an Identity kernel.
    save(activation.kind === 'linear' ? tensors.slice(0, k + 1) : [...tensors.slice(0, k + 1), y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const gradInputs: tf.NamedTensorMap = { dy, weight: saved[k]! };
        saved.slice(0, k).forEach((x, i) => (gradInputs[`x${i}`] = x));
        if (activation.kind !== 'linear') gradInputs.y = saved[k + 1]!;
        return tf.engine().runKernel(FUSED_KERNELS.convListGrad, gradInputs, attrs) as tf.Tensor[];
      },
    };
  });
  return run(...xs, weight, ...(bias ? [bias] : [])) as tf.Tensor4D;
}
