import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module } from './module.js';
import { computeCast, hasComputeCast } from './compute_cast.js';
import { FUSED_KERNELS, hasFusedKernel, type LinearGradAttrs, type LoraLinearGradAttrs } from '../backend/fused.js';
import { defaultBias, kaimingUniform } from './init.js';

export interface LinearOptions {
  bias?: boolean;
  rng?: Rng;
}

/** A branch added to a Linear's output (e.g. LoRA): x [rows, in] → [rows, out], or null to add nothing. */
export interface LinearAdapter {
  delta(x: tf.Tensor2D): tf.Tensor | null;
  /** The branch as scale·x·Aᵀ·Bᵀ when it is exactly that right now (so it can run inside the Linear's own kernel), else null. */
  lowRankBranch?(): LowRankBranch | null;
}

/** A plain LoRA branch: scale·(x·loraAᵀ)·loraBᵀ, loraA [r, in], loraB [out, r]. */
export interface LowRankBranch {
  loraA: tf.Variable;
  loraB: tf.Variable;
  scale: number;
}

/** y = x Wᵀ + b over the last axis; weight stored [out, in] as in torch.nn.Linear. */
export class Linear extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;
  private adapterBranch: LinearAdapter | null = null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    const rng = opts.rng ?? new Rng(0);
    const shape = [outFeatures, inFeatures];
    this.weight = this.param('weight', kaimingUniform(shape, rng));
    this.bias = opts.bias === false ? null : this.param('bias', defaultBias(outFeatures, shape, rng));
  }

  get adapter(): LinearAdapter | null {
    return this.adapterBranch;
  }

  /** Install a branch added to every output (null removes it); one at a time. */
  setAdapter(adapter: LinearAdapter | null): void {
    if (adapter && this.adapterBranch) throw new Error('Linear already has an adapter; remove it first');
    this.adapterBranch = adapter;
  }

  forward(x: tf.Tensor): tf.Tensor {
    if (!hasComputeCast() && x.dtype === 'float32' && hasFusedKernel(FUSED_KERNELS.linear)) {
      const lowRank = this.adapterBranch?.lowRankBranch?.() ?? null;
      if (lowRank && hasFusedKernel(FUSED_KERNELS.loraLinear)) return fusedLoraLinear(x, this.weight, this.bias, lowRank);
      return tf.tidy(() => {
        const y = fusedLinear(x, this.weight, this.bias);
        const delta = this.adapterBranch?.delta(x.reshape([-1, this.inFeatures]) as tf.Tensor2D);
        return delta ? y.add(delta.reshape(y.shape)) : y;
      });
    }
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2 = x.reshape([-1, this.inFeatures]) as tf.Tensor2D;
      let y: tf.Tensor = tf.matMul(computeCast(x2), computeCast(this.weight as tf.Tensor2D), false, true);
      if (this.bias) y = y.add(this.bias);
      const delta = this.adapterBranch?.delta(x2);
      if (delta) y = y.add(delta);
      return y.reshape([...lead, this.outFeatures]);
    });
  }
}

/**
 * x·Wᵀ + b as one kernel each way on any rank of x (no reshapes). Only the gradients that are wanted
 * are computed: a frozen weight or bias (LoRA's base) is not an input of the op at all, so neither
 * its GEMM nor a saved copy of x is spent on it. The parameters are read from the closure (they
 * outlive the step), only x is saved for the backward pass.
 */
function fusedLinear(x: tf.Tensor, weight: tf.Variable, bias: tf.Variable | null): tf.Tensor {
  const want = linearGradAttrs(x, weight, bias);
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const input = args[0] as tf.Tensor;
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const y = tf.engine().runKernel(FUSED_KERNELS.linear, bias ? { x: input, weight, bias } : { x: input, weight }) as tf.Tensor;
    save(want.dweight ? [input] : []);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(FUSED_KERNELS.linearGrad, want.dweight ? { dy, weight, x: saved[0]! } : { dy, weight }, want) as tf.Tensor[],
    };
  });
  return run(x, ...trainedParams(want, weight, bias)) as tf.Tensor;
}

/** The base gradients a fused Linear kernel computes: x's always, the weight's and bias's when they train. */
function linearGradAttrs(x: tf.Tensor, weight: tf.Variable, bias: tf.Variable | null): LinearGradAttrs {
  return { xShape: [...x.shape], dx: true, dweight: weight.trainable, dbias: bias !== null && bias.trainable };
}

/** The op's inputs after x: the weight and bias when they train (a frozen one is read from the closure). */
function trainedParams(want: LinearGradAttrs, weight: tf.Variable, bias: tf.Variable | null): tf.Tensor[] {
  return [...(want.dweight ? [weight] : []), ...(want.dbias ? [bias!] : [])];
}

/**
 * A Linear and its LoRA branch as one kernel each way: y = x·Wᵀ + b + (scale·x·Aᵀ)·Bᵀ, the branch
 * product added in the base product's epilogue. The unfused form is ~9 kernels forward and ~7
 * backward (three Linears, reshapes, the add and its gradient), each an extra pass or the engine's
 * per-kernel cost. h = scale·x·Aᵀ is saved for dB; W and b are inputs only when they train.
 */
function fusedLoraLinear(x: tf.Tensor, weight: tf.Variable, bias: tf.Variable | null, branch: LowRankBranch): tf.Tensor {
  const { loraA, loraB, scale } = branch;
  const want: LoraLinearGradAttrs = { ...linearGradAttrs(x, weight, bias), scale };
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const input = args[0] as tf.Tensor;
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const inputs: tf.NamedTensorMap = { x: input, weight, loraA, loraB };
    if (bias) inputs.bias = bias;
    const [y, h] = tf.engine().runKernel(FUSED_KERNELS.loraLinear, inputs, { scale }) as tf.Tensor[];
    save([input, h!]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(FUSED_KERNELS.loraLinearGrad, { dy, x: saved[0]!, h: saved[1]!, weight, loraA, loraB }, want) as tf.Tensor[],
    };
  });
  return run(x, ...trainedParams(want, weight, bias), loraA, loraB) as tf.Tensor;
}
