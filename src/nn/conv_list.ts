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
export function convList(xs: tf.Tensor4D[], weight: tf.Variable, bias: tf.Variable | null, spec: ConvListSpec): tf.Tensor4D {
  const activation = spec.activation ?? { kind: 'linear' };
  const alpha = activation.alpha ?? 0;
  if (activation.kind === 'leaky_relu' && !(alpha >= 0)) throw new Error(`convList: leaky relu slope must be >= 0, got ${alpha}`);
  const dweight = weight.trainable;
  const dbias = bias !== null && bias.trainable;
  const attrs: ConvListAttrs = { inputs: xs.length, hasBias: bias !== null, dweight, dbias, stride: spec.stride, pad: spec.pad, activation: activation.kind, alpha };
  const k = xs.length;
  // The parameters are read from the closure (they outlive the step) and are inputs of the op only
  // when trainable, so a frozen one costs neither a saved copy nor a gradient.
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const inputs = args.slice(0, k) as tf.Tensor[];
    const named: tf.NamedTensorMap = { weight };
    inputs.forEach((x, i) => (named[`x${i}`] = x));
    if (bias) named.bias = bias;
    const y = tf.engine().runKernel(FUSED_KERNELS.convList, named, attrs) as tf.Tensor4D;
    // Linear needs no output for its gradient; saving it would only cost an Identity kernel.
    save(activation.kind === 'linear' ? inputs : [...inputs, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const gradInputs: tf.NamedTensorMap = { dy, weight };
        saved.slice(0, k).forEach((x, i) => (gradInputs[`x${i}`] = x));
        if (activation.kind !== 'linear') gradInputs.y = saved[k]!;
        return tf.engine().runKernel(FUSED_KERNELS.convListGrad, gradInputs, attrs) as tf.Tensor[];
      },
    };
  });
  return run(...xs, ...(dweight ? [weight] : []), ...(dbias ? [bias!] : [])) as tf.Tensor4D;
}
