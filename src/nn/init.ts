import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';

/**
 * Weight initialisers with PyTorch's conventions. fan_in/fan_out follow torch.nn.init for a weight
 * shaped [out, in, ...kernel]: fan_in = in·∏kernel, fan_out = out·∏kernel.
 */
export function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new Error(`fan in/out need at least 2 dims, got [${shape}]`);
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive };
}

export function uniform(shape: number[], lo: number, hi: number, rng: Rng): tf.Tensor {
  return tf.tensor(rng.fillUniform(new Float32Array(size(shape)), lo, hi), shape);
}

export function normal(shape: number[], std: number, rng: Rng, mean = 0): tf.Tensor {
  return tf.tensor(rng.fillNormal(new Float32Array(size(shape)), mean, std), shape);
}

export function zeros(shape: number[]): tf.Tensor {
  return tf.zeros(shape);
}

export function ones(shape: number[]): tf.Tensor {
  return tf.ones(shape);
}

/** torch.nn.init.kaiming_uniform_(w, a): bound = gain·√(3/fan_in), gain = √(2/(1+a²)). */
export function kaimingUniform(shape: number[], rng: Rng, a = Math.sqrt(5)): tf.Tensor {
  const { fanIn } = fans(shape);
  const bound = Math.sqrt(2 / (1 + a * a)) * Math.sqrt(3 / fanIn);
  return uniform(shape, -bound, bound, rng);
}

/** torch.nn.init.xavier_uniform_: bound = gain·√(6/(fan_in+fan_out)). */
export function xavierUniform(shape: number[], rng: Rng, gain = 1): tf.Tensor {
  const { fanIn, fanOut } = fans(shape);
  const bound = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform(shape, -bound, bound, rng);
}

/** Bias default of nn.Linear / nn.Conv2d: uniform ±1/√fan_in of the weight. */
export function defaultBias(outFeatures: number, weightShape: number[], rng: Rng): tf.Tensor {
  const { fanIn } = fans(weightShape);
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return uniform([outFeatures], -bound, bound, rng);
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
