import { tf } from '../../backend/tf.js';
import { Module, ModuleList } from '../../nn/module.js';
import { Conv2d } from '../../nn/conv.js';
import { Linear } from '../../nn/linear.js';
import { GroupNorm } from '../../nn/norm.js';
import { silu } from '../../nn/activations.js';
import { Rng } from '../../util/rng.js';

/** diffusers builds every VAE norm with eps 1e-6 (resnet_eps), not GroupNorm's default 1e-5. */
export const VAE_NORM_EPS = 1e-6;

/**
 * diffusers ResnetBlock2D without time embedding: GN → SiLU → conv3×3 → GN → SiLU → conv3×3, plus a
 * 1×1 `conv_shortcut` on the skip path when the channel count changes. Dropout is 0 in every VAE.
 */
export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly convShortcut: Conv2d | null;

  constructor(readonly inChannels: number, readonly outChannels: number, groups: number, rng: Rng) {
    super();
    this.norm1 = this.module('norm1', new GroupNorm(groups, inChannels, VAE_NORM_EPS));
    this.conv1 = this.module('conv1', new Conv2d(inChannels, outChannels, 3, { padding: 1, rng }));
    this.norm2 = this.module('norm2', new GroupNorm(groups, outChannels, VAE_NORM_EPS));
    this.conv2 = this.module('conv2', new Conv2d(outChannels, outChannels, 3, { padding: 1, rng }));
    this.convShortcut = inChannels !== outChannels ? this.module('conv_shortcut', new Conv2d(inChannels, outChannels, 1, { rng })) : null;
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.conv1.forward(silu(this.norm1.forward(x)) as tf.Tensor4D);
      h = this.conv2.forward(silu(this.norm2.forward(h)) as tf.Tensor4D);
      const skip = this.convShortcut ? this.convShortcut.forward(x) : x;
      return skip.add(h);
    });
  }
}

/**
 * diffusers Downsample2D with use_conv and padding=0: zero-pad one pixel on the bottom and right
 * only, then a stride-2 3×3 convolution without padding, so H×W maps to exactly H/2×W/2 with the
 * same sample grid as the original LDM code.
 */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, rng: Rng) {
    super();
    this.conv = this.module('conv', new Conv2d(channels, channels, 3, { stride: 2, padding: 0, rng }));
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.conv.forward(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])));
  }
}

/** diffusers Upsample2D with use_conv: nearest-neighbour ×2 (pixel (i,j) ← (⌊i/2⌋,⌊j/2⌋)), then 3×3 conv. */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, rng: Rng) {
    super();
    this.conv = this.module('conv', new Conv2d(channels, channels, 3, { padding: 1, rng }));
  }
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [, h, w] = x.shape;
      return this.conv.forward(tf.image.resizeNearestNeighbor(x, [2 * h, 2 * w], false, false));
    });
  }
}

/** Bound on the number of query×key scores held at once; queries are processed in chunks below it. */
const MAX_SCORE_ELEMENTS = 1 << 24;

/**
 * The VAE mid-block self-attention (diffusers `Attention` built with heads = 1, dim_head = channels,
 * residual_connection, rescale_output_factor 1): tokens are the H·W pixels, GroupNorm'd, and
 * attend with scale 1/√C. Softmax rows are independent, so chunking the queries is exact and keeps
 * a 128×128 latent (16 384 tokens) from materialising a 1 GiB score matrix.
 */
export class VaeAttention extends Module {
  readonly groupNorm: GroupNorm;
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: ModuleList<Linear>;

  constructor(
    readonly channels: number,
    groups: number,
    rng: Rng,
    private readonly maxScoreElements = MAX_SCORE_ELEMENTS,
  ) {
    super();
    this.groupNorm = this.module('group_norm', new GroupNorm(groups, channels, VAE_NORM_EPS));
    this.toQ = this.module('to_q', new Linear(channels, channels, { rng }));
    this.toK = this.module('to_k', new Linear(channels, channels, { rng }));
    this.toV = this.module('to_v', new Linear(channels, channels, { rng }));
    // to_out.1 is a Dropout in diffusers: no parameters, so only index 0 exists.
    this.toOut = this.module('to_out', new ModuleList([new Linear(channels, channels, { rng })]));
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [n, h, w, c] = x.shape;
      const tokens = this.groupNorm.forward(x).reshape([n, h * w, c]);
      const q = this.toQ.forward(tokens).mul(1 / Math.sqrt(c)) as tf.Tensor3D;
      const k = this.toK.forward(tokens) as tf.Tensor3D;
      const v = this.toV.forward(tokens) as tf.Tensor3D;
      const len = h * w;
      const chunk = Math.max(1, Math.floor(this.maxScoreElements / (len * n)));
      const parts: tf.Tensor3D[] = [];
      for (let start = 0; start < len; start += chunk) {
        const size = Math.min(chunk, len - start);
        const qc = chunk >= len ? q : (q.slice([0, start, 0], [n, size, c]) as tf.Tensor3D);
        parts.push(tf.matMul(tf.softmax(tf.matMul(qc, k, false, true)), v));
      }
      const attended = parts.length === 1 ? parts[0]! : tf.concat(parts, 1);
      const out = this.toOut.at(0).forward(attended).reshape([n, h, w, c]);
      return out.add(x);
    });
  }
}

/** diffusers UNetMidBlock2D without time embedding: resnet → attention → resnet at constant width. */
export class MidBlock2D extends Module {
  readonly attentions: ModuleList<VaeAttention>;
  readonly resnets: ModuleList<ResnetBlock2D>;

  constructor(channels: number, groups: number, addAttention: boolean, rng: Rng) {
    super();
    this.attentions = this.module('attentions', new ModuleList(addAttention ? [new VaeAttention(channels, groups, rng)] : []));
    this.resnets = this.module(
      'resnets',
      new ModuleList([new ResnetBlock2D(channels, channels, groups, rng), new ResnetBlock2D(channels, channels, groups, rng)]),
    );
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.resnets.at(0).forward(x);
      if (this.attentions.length > 0) h = this.attentions.at(0).forward(h);
      return this.resnets.at(1).forward(h);
    });
  }
}

/** diffusers DownEncoderBlock2D: `numLayers` resnets, then (except on the last level) a Downsample2D. */
export class DownEncoderBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly downsamplers: ModuleList<Downsample2D> | null;

  constructor(inChannels: number, outChannels: number, numLayers: number, groups: number, addDownsample: boolean, rng: Rng) {
    super();
    const resnets: ResnetBlock2D[] = [];
    for (let j = 0; j < numLayers; j++) resnets.push(new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, groups, rng));
    this.resnets = this.module('resnets', new ModuleList(resnets));
    this.downsamplers = addDownsample ? this.module('downsamplers', new ModuleList([new Downsample2D(outChannels, rng)])) : null;
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h);
      return this.downsamplers ? this.downsamplers.at(0).forward(h) : h;
    });
  }
}

/** diffusers UpDecoderBlock2D: `numLayers` resnets, then (except on the last level) an Upsample2D. */
export class UpDecoderBlock2D extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly upsamplers: ModuleList<Upsample2D> | null;

  constructor(inChannels: number, outChannels: number, numLayers: number, groups: number, addUpsample: boolean, rng: Rng) {
    super();
    const resnets: ResnetBlock2D[] = [];
    for (let j = 0; j < numLayers; j++) resnets.push(new ResnetBlock2D(j === 0 ? inChannels : outChannels, outChannels, groups, rng));
    this.resnets = this.module('resnets', new ModuleList(resnets));
    this.upsamplers = addUpsample ? this.module('upsamplers', new ModuleList([new Upsample2D(outChannels, rng)])) : null;
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h);
      return this.upsamplers ? this.upsamplers.at(0).forward(h) : h;
    });
  }
}
