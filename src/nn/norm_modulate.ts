import { tf } from '../backend/tf.js';
import { FUSED_KERNELS, hasFusedKernel, type NormModulateAttrs } from '../backend/fused.js';
import { silu } from './activations.js';
import { normalizeGroups } from './norm.js';

export type NormModulateSpec = NormModulateAttrs;

/**
 * act(norm(x)·(1 + scale) + shift) for x [B, …, C] with (scale, shift) the C columns of mod [B, W] at
 * spec.scaleOffset / spec.shiftOffset: GroupNorm (statistics per sample and group) or LayerNorm
 * (perPosition: per sample and position), no affine, then FiLM/adaLN's modulation and the
 * activation. mod is the modulation projection's whole output, so neither FiLM's split nor any
 * other step of the chain is a kernel of its own where the backend fuses it.
 */
export function normModulate(x: tf.Tensor, mod: tf.Tensor2D, spec: NormModulateSpec): tf.Tensor {
  const c = x.shape[x.rank - 1]!;
  const width = mod.shape[1];
  if (mod.shape[0] !== x.shape[0] || spec.scaleOffset < 0 || spec.shiftOffset < 0 || spec.scaleOffset + c > width || spec.shiftOffset + c > width) {
    throw new Error(`normModulate: mod [${mod.shape}] has no ${c} scale/shift columns at ${spec.scaleOffset}/${spec.shiftOffset} for x [${x.shape}]`);
  }
  if (!spec.perPosition && c % spec.groups !== 0) throw new Error(`normModulate: ${c} channels not divisible by ${spec.groups} groups`);
  if (hasFusedKernel(FUSED_KERNELS.normModulate) && x.dtype === 'float32' && mod.dtype === 'float32') return fused(x, mod, spec);
  return tf.tidy(() => {
    const n = x.shape[0]!;
    const normed = spec.perPosition
      ? normalizeGroups(x.reshape([x.size / c, 1, c]), 1, spec.eps)
      : normalizeGroups(x.reshape([n, x.size / (n * c), c]), spec.groups, spec.eps);
    const lift = [n, ...new Array<number>(x.rank - 2).fill(1), c];
    const scale = tf.slice(mod, [0, spec.scaleOffset], [n, c]).reshape(lift);
    const shift = tf.slice(mod, [0, spec.shiftOffset], [n, c]).reshape(lift);
    const y = normed.reshape(x.shape).mul(scale.add(1)).add(shift);
    return spec.activation === 'silu' ? silu(y) : y;
  });
}

function fused(x: tf.Tensor, mod: tf.Tensor2D, spec: NormModulateSpec): tf.Tensor {
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [input, m, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, mean, rstd] = tf.engine().runKernel(FUSED_KERNELS.normModulate, { x: input, mod: m }, spec) as tf.Tensor[];
    save([input, m, mean!, rstd!]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ms, mn, rs] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        return tf.engine().runKernel(FUSED_KERNELS.normModulateGrad, { dy, x: xs, mod: ms, mean: mn, rstd: rs }, spec) as tf.Tensor[];
      },
    };
  });
  return run(x, mod) as tf.Tensor;
}

/**
 * x + branch·gate with gate = mod[:, offset : offset + C] per sample, broadcast over every position
 * of x [B, …, C]: DiT's gated residual (adaLN-Zero), one kernel each way where the backend fuses
 * it, reading the gate straight out of the modulation projection's output.
 */
export function gatedResidual(x: tf.Tensor, branch: tf.Tensor, mod: tf.Tensor2D, offset: number): tf.Tensor {
  const c = x.shape[x.rank - 1]!;
  if (mod.shape[0] !== x.shape[0] || offset < 0 || offset + c > mod.shape[1]) throw new Error(`gatedResidual: mod [${mod.shape}] has no ${c} gate columns at ${offset} for x [${x.shape}]`);
  if (!tf.util.arraysEqual(x.shape, branch.shape)) throw new Error(`gatedResidual: x [${x.shape}] and branch [${branch.shape}] differ`);
  const fusable = hasFusedKernel(FUSED_KERNELS.gatedResidual) && [x, branch, mod].every((t) => t.dtype === 'float32');
  if (!fusable) {
    return tf.tidy(() => {
      const n = x.shape[0]!;
      const gate = tf.slice(mod, [0, offset], [n, c]).reshape([n, ...new Array<number>(x.rank - 2).fill(1), c]);
      return x.add(branch.mul(gate));
    });
  }
  const attrs = { offset };
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, bi, mi, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([bi, mi]);
    return {
      value: tf.engine().runKernel(FUSED_KERNELS.gatedResidual, { x: xi, branch: bi, mod: mi }, attrs) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [dbranch, dmod] = tf.engine().runKernel(FUSED_KERNELS.gatedResidualGrad, { dy, branch: saved[0]!, mod: saved[1]! }, attrs) as tf.Tensor[];
        return [dy, dbranch!, dmod!];
      },
    };
  });
  return run(x, branch, mod) as tf.Tensor;
}
