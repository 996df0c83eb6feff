import { tf } from '../../backend/tf.js';
import { Module, ModuleList } from '../../nn/module.js';
import { Conv2d } from '../../nn/conv.js';
import { GroupNorm } from '../../nn/norm.js';
import { silu } from '../../nn/activations.js';
import { Rng } from '../../util/rng.js';
import { DownEncoderBlock2D, MidBlock2D, UpDecoderBlock2D, VAE_NORM_EPS } from './blocks.js';
import { type VaeConfig, validateVaeConfig } from './config.js';

/** diffusers vae.Encoder (double_z): image [N,H,W,in] → moments [N,H/f,W/f,2·latent]. */
export class Encoder extends Module {
  readonly convIn: Conv2d;
  readonly downBlocks: ModuleList<DownEncoderBlock2D>;
  readonly midBlock: MidBlock2D;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(c: VaeConfig, rng: Rng) {
    super();
    const blocks = c.blockOutChannels;
    const g = c.normNumGroups;
    this.convIn = this.module('conv_in', new Conv2d(c.inChannels, blocks[0]!, 3, { padding: 1, rng }));
    const down: DownEncoderBlock2D[] = [];
    let prev = blocks[0]!;
    blocks.forEach((ch, i) => {
      down.push(new DownEncoderBlock2D(prev, ch, c.layersPerBlock, g, i < blocks.length - 1, rng));
      prev = ch;
    });
    this.downBlocks = this.module('down_blocks', new ModuleList(down));
    const last = blocks[blocks.length - 1]!;
    this.midBlock = this.module('mid_block', new MidBlock2D(last, g, c.midBlockAddAttention, rng));
    this.convNormOut = this.module('conv_norm_out', new GroupNorm(g, last, VAE_NORM_EPS));
    this.convOut = this.module('conv_out', new Conv2d(last, 2 * c.latentChannels, 3, { padding: 1, rng }));
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.convIn.forward(x);
      for (const b of this.downBlocks) h = b.forward(h);
      h = this.midBlock.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)) as tf.Tensor4D);
    });
  }
}

/** diffusers vae.Decoder: latent [N,h,w,latent] → image [N,h·f,w·f,out]; channels run coarse to fine. */
export class Decoder extends Module {
  readonly convIn: Conv2d;
  readonly upBlocks: ModuleList<UpDecoderBlock2D>;
  readonly midBlock: MidBlock2D;
  readonly convNormOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(c: VaeConfig, rng: Rng) {
    super();
    const reversed = [...c.blockOutChannels].reverse();
    const g = c.normNumGroups;
    const last = reversed[0]!;
    this.convIn = this.module('conv_in', new Conv2d(c.latentChannels, last, 3, { padding: 1, rng }));
    // Registered before mid_block to mirror diffusers' attribute order (and hence its state_dict order).
    this.upBlocks = this.module('up_blocks', new ModuleList<UpDecoderBlock2D>());
    this.midBlock = this.module('mid_block', new MidBlock2D(last, g, c.midBlockAddAttention, rng));
    let prev = last;
    reversed.forEach((ch, i) => {
      this.upBlocks.push(new UpDecoderBlock2D(prev, ch, c.layersPerBlock + 1, g, i < reversed.length - 1, rng));
      prev = ch;
    });
    const first = c.blockOutChannels[0]!;
    this.convNormOut = this.module('conv_norm_out', new GroupNorm(g, first, VAE_NORM_EPS));
    this.convOut = this.module('conv_out', new Conv2d(first, c.outChannels, 3, { padding: 1, rng }));
  }

  forward(z: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.convIn.forward(z);
      h = this.midBlock.forward(h);
      for (const b of this.upBlocks) h = b.forward(h);
      return this.convOut.forward(silu(this.convNormOut.forward(h)) as tf.Tensor4D);
    });
  }
}

/**
 * diffusers/LDM DiagonalGaussianDistribution over NHWC latents: the first half of the moment
 * channels is the mean, the second the log-variance, clamped to [−30, 20] so exp() stays finite.
 * Owns its tensors: call dispose() (or create it inside a tidy).
 */
export class DiagonalGaussianDistribution {
  readonly mean: tf.Tensor4D;
  readonly logvar: tf.Tensor4D;
  readonly std: tf.Tensor4D;
  readonly var: tf.Tensor4D;

  constructor(moments: tf.Tensor4D) {
    const [mean, logvar, std, variance] = tf.tidy(() => {
      const [m, lv] = tf.split(moments, 2, 3) as [tf.Tensor4D, tf.Tensor4D];
      const clamped = lv.clipByValue(-30, 20);
      return [m, clamped, clamped.mul(0.5).exp(), clamped.exp()] as tf.Tensor4D[];
    });
    this.mean = mean!;
    this.logvar = logvar!;
    this.std = std!;
    this.var = variance!;
  }

  /** mean + std·ε with ε ~ N(0, 1) drawn from `rng` (reparameterised: gradients flow to mean/logvar). */
  sample(rng: Rng): tf.Tensor4D {
    return tf.tidy(() => {
      const eps = tf.tensor(rng.fillNormal(new Float32Array(this.mean.size)), this.mean.shape);
      return this.mean.add(this.std.mul(eps)) as tf.Tensor4D;
    });
  }

  mode(): tf.Tensor4D {
    return this.mean.clone();
  }

  /** KL(q ‖ N(0, I)) — or against `other` — summed over each sample's latent elements: shape [N]. */
  kl(other?: DiagonalGaussianDistribution): tf.Tensor1D {
    return tf.tidy(() => {
      const terms = other
        ? this.mean.sub(other.mean).square().div(other.var).add(this.var.div(other.var)).sub(1).sub(this.logvar).add(other.logvar)
        : this.mean.square().add(this.var).sub(1).sub(this.logvar);
      return terms.sum([1, 2, 3]).mul(0.5) as tf.Tensor1D;
    });
  }

  /** Negative log-likelihood of `x` under this Gaussian, summed over each sample's elements: shape [N]. */
  nll(x: tf.Tensor4D): tf.Tensor1D {
    return tf.tidy(() =>
      x.sub(this.mean).square().div(this.var).add(this.logvar).add(Math.log(2 * Math.PI)).sum([1, 2, 3]).mul(0.5) as tf.Tensor1D,
    );
  }

  dispose(): void {
    tf.dispose([this.mean, this.logvar, this.std, this.var]);
  }
}

export interface AutoencoderKLOptions {
  /** Seeds the (PyTorch-default) initialisation; weights are usually overwritten by a checkpoint. */
  rng?: Rng;
}

/**
 * diffusers AutoencoderKL with state-dict names identical to diffusers checkpoints. Tensors are
 * NHWC; images are in [−1, 1].
 */
export class AutoencoderKL extends Module {
  readonly config: VaeConfig;
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quantConv: Conv2d | null;
  readonly postQuantConv: Conv2d | null;

  constructor(config: VaeConfig, opts: AutoencoderKLOptions = {}) {
    super();
    validateVaeConfig(config);
    this.config = { ...config, blockOutChannels: [...config.blockOutChannels] };
    const rng = opts.rng ?? new Rng(0);
    const lat = config.latentChannels;
    this.encoder = this.module('encoder', new Encoder(config, rng));
    this.decoder = this.module('decoder', new Decoder(config, rng));
    this.quantConv = config.useQuantConv ? this.module('quant_conv', new Conv2d(2 * lat, 2 * lat, 1, { rng })) : null;
    this.postQuantConv = config.usePostQuantConv ? this.module('post_quant_conv', new Conv2d(lat, lat, 1, { rng })) : null;
  }

  get scalingFactor(): number {
    return this.config.scalingFactor;
  }
  get shiftFactor(): number {
    return this.config.shiftFactor;
  }

  /** Image [N,H,W,C] in [−1, 1] → posterior over unscaled latents [N,H/f,W/f,latent]. */
  encode(x: tf.Tensor4D): DiagonalGaussianDistribution {
    const moments = tf.tidy(() => {
      const h = this.encoder.forward(x);
      return this.quantConv ? this.quantConv.forward(h) : h;
    });
    const posterior = new DiagonalGaussianDistribution(moments);
    moments.dispose();
    return posterior;
  }

  /** Unscaled latents → image (not clamped; the decoder can overshoot [−1, 1]). */
  decode(z: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.decoder.forward(this.postQuantConv ? this.postQuantConv.forward(z) : z));
  }

  /**
   * Full pass as in diffusers' forward(): decode a posterior sample (with `rng`) or, without one,
   * the mean. Returns the posterior too, for the KL term; the caller disposes it.
   */
  forward(x: tf.Tensor4D, rng?: Rng): { reconstruction: tf.Tensor4D; posterior: DiagonalGaussianDistribution } {
    const posterior = this.encode(x);
    const z = rng ? posterior.sample(rng) : posterior.mode();
    const reconstruction = this.decode(z);
    z.dispose();
    return { reconstruction, posterior };
  }

  /** Image → latents as the generative model sees them: (z − shift)·scale, z sampled or the mean. */
  encodeToLatents(x: tf.Tensor4D, rng?: Rng): tf.Tensor4D {
    const posterior = this.encode(x);
    const z = rng ? posterior.sample(rng) : posterior.mode();
    posterior.dispose();
    const scaled = tf.tidy(() => z.sub(this.shiftFactor).mul(this.scalingFactor) as tf.Tensor4D);
    z.dispose();
    return scaled;
  }

  /** Generative-model latents → image: undoes the scaling of encodeToLatents, then decodes. */
  decodeLatents(latents: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.decode(latents.div(this.scalingFactor).add(this.shiftFactor) as tf.Tensor4D));
  }
}
