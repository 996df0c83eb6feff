import { tf } from '../../backend/tf.js';
import { Embedding } from '../../nn/embedding.js';
import { Module, ModuleList } from '../../nn/module.js';
import { Rng } from '../../util/rng.js';
import { checkNspConfig, NspCondition, NspModelConfig } from './config.js';
import { ScalePredictor } from './predictor.js';

/**
 * Next Scale Prediction generator. Stage 0 turns a noise latent at sizes[0] into the coarsest image;
 * stage k>0 maps scale k−1 to scale k as bilinear ×(sizes[k]/sizes[k−1]) plus a predicted residual.
 * Parameters are named `stages.<k>.*` and `scale_embedding.weight`.
 */
export class NextScaleGenerator extends Module {
  readonly scaleEmbedding: Embedding;
  readonly stages: ModuleList<ScalePredictor>;

  constructor(readonly config: NspModelConfig, seed = 0) {
    super();
    const problems = checkNspConfig(config);
    if (problems.length) throw new Error(`invalid NSP model config:\n  ${problems.join('\n  ')}`);
    const rng = new Rng(seed);
    this.scaleEmbedding = this.module('scale_embedding', new Embedding(config.sizes.length, config.condDim, { rng, std: 0.02 }));
    this.stages = this.module('stages', new ModuleList(config.sizes.map((_, k) => new ScalePredictor(config, k, rng))));
  }

  get numStages(): number {
    return this.config.sizes.length;
  }

  /**
   * The input stage k sees: the noise latent for the base stage, else the previous scale upsampled
   * bilinearly (half-pixel centres, i.e. PyTorch's align_corners=False).
   */
  stageInput(stage: number, previous: tf.Tensor4D): tf.Tensor4D {
    if (stage === 0) return previous;
    const s = this.config.sizes[stage]!;
    return tf.image.resizeBilinear(previous, [s, s], false, true);
  }

  /**
   * One stage's output: x_k = up(x_{k−1}) + α·f_k(up(x_{k−1}), c) for k>0, x_0 = f_0(z, c).
   * α < 1 fades a newly trained stage in (ProGAN-style); inference uses α = 1.
   */
  predict(stage: number, previous: tf.Tensor4D, text: NspCondition | tf.Tensor2D, alpha = 1): tf.Tensor4D {
    return tf.tidy(() => {
      const input = this.stageInput(stage, previous);
      const emb = this.scaleEmbedding.forward(tf.tensor1d([stage], 'int32')).reshape([-1]) as tf.Tensor1D;
      const residual = this.stages.at(stage).forward(input, text instanceof tf.Tensor ? { pooled: text } : text, emb);
      if (stage === 0) return residual;
      return input.add(alpha === 1 ? residual : residual.mul(alpha));
    });
  }

  /** Full chain from a noise latent: the image at every scale from 0 to `lastStage`. */
  generate(noise: tf.Tensor4D, text: NspCondition | tf.Tensor2D, opts: { lastStage?: number } = {}): tf.Tensor4D[] {
    const last = opts.lastStage ?? this.numStages - 1;
    const outputs: tf.Tensor4D[] = [];
    let current = noise;
    for (let k = 0; k <= last; k++) {
      current = this.predict(k, current, text);
      outputs.push(current);
    }
    return outputs;
  }
}

export function addNoise(x: tf.Tensor4D, sigma: number, rng: Rng): tf.Tensor4D {
  return tf.tidy(() => x.add(tf.tensor(rng.fillNormal(new Float32Array(x.size), 0, sigma), x.shape)));
}

/** Box-filter downsampling of ground truth to every scale (exact area averaging for integer factors). */
export function pyramid(images: tf.Tensor4D, sizes: number[]): tf.Tensor4D[] {
  const full = images.shape[1];
  return sizes.map((s) => {
    if (full % s !== 0) throw new Error(`image size ${full} is not a multiple of scale ${s}`);
    const f = full / s;
    return f === 1 ? images.clone() : tf.avgPool(images, f, f, 'valid');
  });
}
