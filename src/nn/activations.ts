import { tf } from '../backend/tf.js';
import { FUSED_KERNELS, hasFusedKernel, type FusedActivation } from '../backend/fused.js';

/** Activation functions by the names configs and HF configs use ("silu", "gelu", "quick_gelu", …). */
export type Activation = (x: tf.Tensor) => tf.Tensor;

/** The backend's one-pass kernel (value and derivative) where it has one, else the tfjs composite. */
function fusedOr(kind: FusedActivation, composite: Activation): Activation {
  const fused = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([x]);
    return {
      value: tf.engine().runKernel(FUSED_KERNELS.activation, { x }, { kind }) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(FUSED_KERNELS.activationGrad, { dy, x: saved[0]! }, { kind }) as tf.Tensor,
    };
  });
  return (x) => (x.dtype === 'float32' && hasFusedKernel(FUSED_KERNELS.activation) ? (fused(x) as tf.Tensor) : composite(x));
}

export const silu: Activation = fusedOr('silu', (x) => tf.tidy(() => x.mul(tf.sigmoid(x))));

/** GELU, tanh approximation (PyTorch approximate='tanh', "gelu_pytorch_tanh"). */
export const geluTanh: Activation = fusedOr('gelu_tanh', (x) =>
  tf.tidy(() => {
    const inner = x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
    return x.mul(0.5).mul(tf.tanh(inner).add(1));
  }),
);

/** Exact GELU x·Φ(x) = 0.5·x·(1 + erf(x/√2)). */
export const geluErf: Activation = fusedOr('gelu_erf', (x) => tf.tidy(() => x.mul(0.5).mul(tf.erf(x.mul(Math.SQRT1_2)).add(1))));

/** CLIP's QuickGELU: x·σ(1.702x). */
export const quickGelu: Activation = fusedOr('quick_gelu', (x) => tf.tidy(() => x.mul(tf.sigmoid(x.mul(1.702)))));

export const relu: Activation = (x) => tf.relu(x);

/**
 * tf.leakyRelu with its gradient in one native pass where the backend has it (tfjs composes it
 * from Greater, Multiply and Select: three kernels and a bool mask per activation map).
 */
export function leakyRelu(x: tf.Tensor, alpha = 0.2): tf.Tensor {
  if (x.dtype !== 'float32' || !hasFusedKernel(FUSED_KERNELS.leakyReluGrad)) return tf.leakyRelu(x, alpha);
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [input, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([input]);
    return {
      value: tf.leakyRelu(input, alpha),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(FUSED_KERNELS.leakyReluGrad, { dy, x: saved[0]! }, { alpha }) as tf.Tensor,
    };
  });
  return run(x) as tf.Tensor;
}

export const activations: Record<string, Activation> = {
  silu,
  swish: silu,
  gelu: geluErf,
  gelu_tanh: geluTanh,
  gelu_pytorch_tanh: geluTanh,
  quick_gelu: quickGelu,
  relu,
};

export function activation(name: string): Activation {
  const f = activations[name];
  if (!f) throw new Error(`unknown activation '${name}'; known: ${Object.keys(activations).join(', ')}`);
  return f;
}
