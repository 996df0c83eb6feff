import { tf } from '../../backend/tf.js';
import { silu } from '../../nn/activations.js';
import { Attention, CrossAttention } from '../../nn/attention.js';
import { Linear } from '../../nn/linear.js';
import { MLP } from '../../nn/mlp.js';
import { Module } from '../../nn/module.js';
import { LayerNorm } from '../../nn/norm.js';
import { gatedResidual, normModulate, type NormModulateSpec } from '../../nn/norm_modulate.js';
import { Rng } from '../../util/rng.js';

/**
 * `adaLN_modulation` = Sequential(SiLU, Linear(D, k·D)): the condition c [N, D] → k vectors [N, D].
 * The linear is child `1` so the names match the official checkpoints.
 */
export class AdaLnModulation extends Module {
  readonly linear: Linear;
  constructor(hiddenSize: number, readonly chunks: number, rng: Rng) {
    super();
    this.linear = this.module('1', new Linear(hiddenSize, chunks * hiddenSize, { rng }));
  }
  /** The k vectors side by side, [N, k·D]: chunk i is columns i·D … (i+1)·D. */
  forward(c: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.linear.forward(silu(c)) as tf.Tensor2D);
  }
}

/**
 * LayerNorm (no affine) of x then x·(1 + scale) + shift with (shift, scale) the chunks at
 * `shiftChunk`, `shiftChunk + 1` of the modulation: one fused op (normModulate), the projection
 * passed whole so its split is never a kernel.
 */
function adaLN(norm: LayerNorm, x: tf.Tensor, mod: tf.Tensor2D, shiftChunk: number): tf.Tensor {
  const d = norm.dim;
  const spec: NormModulateSpec = { groups: 1, perPosition: true, eps: norm.eps, shiftOffset: shiftChunk * d, scaleOffset: (shiftChunk + 1) * d, activation: 'none' };
  return normModulate(x, mod, spec);
}

/**
 * Transformer block with adaLN-Zero: the condition sets shift/scale of both pre-norms and a gate on
 * both residual branches; zero-initialised modulation makes a fresh block the identity.
 */
/** Text token states the blocks cross-attend to: tokens [N, L, D] (already projected to the model width), mask [N, L]. */
export interface CrossContext {
  tokens: tf.Tensor3D;
  mask: tf.Tensor2D;
}

export class DiTBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  /** PixArt-α's cross-attention to the text tokens, between self-attention and MLP (absent in class-conditioned models). */
  readonly crossAttn: CrossAttention | null;
  readonly norm2: LayerNorm;
  readonly mlp: MLP;
  readonly adaLNModulation: AdaLnModulation;

  constructor(hiddenSize: number, numHeads: number, mlpHidden: number, rng: Rng, opts: { crossAttention?: boolean } = {}) {
    super();
    this.norm1 = this.module('norm1', new LayerNorm(hiddenSize, 1e-6, false));
    this.attn = this.module('attn', new Attention(hiddenSize, { numHeads, qkvBias: true, fused: true, rng }));
    this.crossAttn = opts.crossAttention ? this.module('cross_attn', new CrossAttention(hiddenSize, hiddenSize, { numHeads, qkvBias: true, rng })) : null;
    this.norm2 = this.module('norm2', new LayerNorm(hiddenSize, 1e-6, false));
    this.mlp = this.module('mlp', new MLP(hiddenSize, mlpHidden, hiddenSize, { act: 'gelu_tanh', rng }));
    this.adaLNModulation = this.module('adaLN_modulation', new AdaLnModulation(hiddenSize, 6, rng));
  }

  /** x [N, T, D], c [N, D] (and the text context with cross-attention) → [N, T, D]. */
  forward(x: tf.Tensor3D, c: tf.Tensor2D, context?: CrossContext): tf.Tensor3D {
    return tf.tidy(() => {
      // Chunks of the modulation: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
      const mod = this.adaLNModulation.forward(c);
      const d = this.norm1.dim;
      const attnIn = adaLN(this.norm1, x, mod, 0) as tf.Tensor3D;
      let h = gatedResidual(x, this.attn.forward(attnIn), mod, 2 * d) as tf.Tensor3D;
      if (this.crossAttn) {
        if (!context) throw new Error('DiTBlock: this block cross-attends to text tokens; pass the text context');
        // Ungated residual, no norm on the query side: PixArt-α's block.
        h = h.add(this.crossAttn.forward(h, context.tokens, { keyMask: context.mask }));
      }
      const mlpIn = adaLN(this.norm2, h, mod, 3);
      return gatedResidual(h, this.mlp.forward(mlpIn), mod, 5 * d) as tf.Tensor3D;
    });
  }
}

/** Final adaLN (shift, scale) and the projection of each token to its p·p·C output patch. */
export class FinalLayer extends Module {
  readonly normFinal: LayerNorm;
  readonly linear: Linear;
  readonly adaLNModulation: AdaLnModulation;

  constructor(hiddenSize: number, patchSize: number, outChannels: number, rng: Rng) {
    super();
    this.normFinal = this.module('norm_final', new LayerNorm(hiddenSize, 1e-6, false));
    this.linear = this.module('linear', new Linear(hiddenSize, patchSize * patchSize * outChannels, { rng }));
    this.adaLNModulation = this.module('adaLN_modulation', new AdaLnModulation(hiddenSize, 2, rng));
  }

  /** x [N, T, D], c [N, D] → [N, T, p·p·C]. */
  forward(x: tf.Tensor3D, c: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      return this.linear.forward(adaLN(this.normFinal, x, this.adaLNModulation.forward(c), 0)) as tf.Tensor3D;
    });
  }
}
