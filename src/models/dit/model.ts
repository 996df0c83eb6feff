import { tf } from '../../backend/tf.js';
import { normal, xavierUniform } from '../../nn/init.js';
import { Linear } from '../../nn/linear.js';
import { Module, ModuleList } from '../../nn/module.js';
import { Rng } from '../../util/rng.js';
import type { TextEncoding } from '../text/text_encoder.js';
import { type CrossContext, DiTBlock, FinalLayer } from './blocks.js';
import { type DitConfig, TIMESTEP_FREQUENCY_DIM, ditConditioning, ditMlpHidden, ditNumPatches, ditOutChannels, validateDitConfig } from './config.js';
import { type LabelDropOptions, LabelEmbedder, PatchEmbed, TextProjection, TimestepEmbedder, sincosPosEmbed2d } from './embeddings.js';

/** What a text-conditioned DiT reads from a text encoder: the pooled vector, and the token states with their mask for cross-attention. */
export type DitTextCondition = Pick<TextEncoding, 'pooled' | 'tokens' | 'mask'>;

/** Class labels [N] (int) for a class-conditioned DiT, a text encoding for a text-conditioned one. */
export type DitCondition = tf.Tensor | DitTextCondition;

export function isTextCondition(y: DitCondition): y is DitTextCondition {
  return !(y instanceof tf.Tensor);
}

export interface DiTOptions {
  rng?: Rng;
}

/**
 * Diffusion Transformer (Peebles & Xie), parameter for parameter the official models.py: state-dict
 * keys, torch weight layouts and initialisation are the reference's, so its checkpoints load by name.
 * Images are NHWC here: x [N, H, W, C] → [N, H, W, outChannels] (eps first, then the variance
 * interpolation channels when learnSigma).
 */
export class DiT extends Module {
  readonly config: DitConfig;
  readonly outChannels: number;
  readonly xEmbedder: PatchEmbed;
  readonly tEmbedder: TimestepEmbedder;
  /** Class-conditioned models: the label table (with the null class). */
  readonly yEmbedder: LabelEmbedder | null;
  /** Text-conditioned models: pooled text vector → D, added to the timestep embedding. */
  readonly pooledEmbedder: TextProjection | null;
  /** Text-conditioned models with cross-attention: token states → D. */
  readonly captionProjection: TextProjection | null;
  /** Fixed 2-D sin-cos table [1, T, D]: a parameter (so checkpoints carry it) that is never trained. */
  readonly posEmbed: tf.Variable;
  readonly blocks: ModuleList<DiTBlock>;
  readonly finalLayer: FinalLayer;

  constructor(config: DitConfig, opts: DiTOptions = {}) {
    super();
    const c = validateDitConfig(config);
    const rng = opts.rng ?? new Rng(0);
    this.config = c;
    this.outChannels = ditOutChannels(c);
    const d = c.hiddenSize;
    this.xEmbedder = this.module('x_embedder', new PatchEmbed(c.inputSize, c.patchSize, c.inChannels, d, rng));
    this.tEmbedder = this.module('t_embedder', new TimestepEmbedder(d, TIMESTEP_FREQUENCY_DIM, rng));
    const text = ditConditioning(c) === 'text';
    this.yEmbedder = text ? null : this.module('y_embedder', new LabelEmbedder(c.numClasses, d, c.classDropoutProb, rng));
    this.pooledEmbedder = text ? this.module('pooled_embedder', new TextProjection(c.textPooledDim!, d, 'silu', rng)) : null;
    this.captionProjection = text && c.crossAttention ? this.module('caption_projection', new TextProjection(c.textTokenDim!, d, 'gelu_tanh', rng)) : null;
    const grid = c.inputSize / c.patchSize;
    this.posEmbed = this.param('pos_embed', tf.tensor3d(sincosPosEmbed2d(d, grid), [1, ditNumPatches(c), d]), false);
    const blocks: DiTBlock[] = [];
    for (let i = 0; i < c.depth; i++) blocks.push(new DiTBlock(d, c.numHeads, ditMlpHidden(c), rng, { crossAttention: this.captionProjection !== null }));
    this.blocks = this.module('blocks', new ModuleList(blocks));
    this.finalLayer = this.module('final_layer', new FinalLayer(d, c.patchSize, this.outChannels, rng));
    this.initializeWeights(rng.fork('dit-init'));
  }

  /** The reference's `initialize_weights`: xavier linears, zero biases, N(0, 0.02) embeddings, adaLN-Zero. */
  private initializeWeights(rng: Rng): void {
    const set = (v: tf.Variable, value: tf.Tensor) => {
      v.assign(value);
      value.dispose();
    };
    for (const [, m] of this.namedModules()) {
      if (!(m instanceof Linear)) continue;
      set(m.weight, xavierUniform(m.weight.shape, rng));
      if (m.bias) set(m.bias, tf.zerosLike(m.bias));
    }
    // The patch convolution is initialised as the Linear it is: xavier over [D, C·p·p].
    const proj = this.xEmbedder.proj;
    const flat = [proj.outChannels, proj.weight.size / proj.outChannels];
    set(proj.weight, tf.tidy(() => xavierUniform(flat, rng).reshape(proj.weight.shape)));
    set(proj.bias!, tf.zerosLike(proj.bias!));
    if (this.yEmbedder) set(this.yEmbedder.embeddingTable.weight, normal(this.yEmbedder.embeddingTable.weight.shape, 0.02, rng));
    for (const lin of [this.tEmbedder.mlp.first, this.tEmbedder.mlp.second]) set(lin.weight, normal(lin.weight.shape, 0.02, rng));
    // PixArt-α: N(0, 0.02) caption projection, zero cross-attention output (a fresh block ignores the text tokens).
    if (this.captionProjection) for (const lin of [this.captionProjection.linear1, this.captionProjection.linear2]) set(lin.weight, normal(lin.weight.shape, 0.02, rng));
    const crossOut = [...this.blocks].flatMap((b) => (b.crossAttn ? [b.crossAttn.toOut.at(0)] : []));
    const zeroed = [...[...this.blocks].map((b) => b.adaLNModulation.linear), this.finalLayer.adaLNModulation.linear, this.finalLayer.linear, ...crossOut];
    for (const lin of zeroed) {
      set(lin.weight, tf.zerosLike(lin.weight));
      set(lin.bias!, tf.zerosLike(lin.bias!));
    }
  }

  /**
   * x [N, H, W, C] latents, t [N] diffusion steps (0…999, may be fractional), y: [N] int class labels
   * or a text encoding. In training mode labels are dropped to the null class with probability
   * classDropoutProb (text conditioning is dropped by the caller, which encodes the empty prompt).
   */
  forward(x: tf.Tensor4D, t: tf.Tensor, y: DitCondition, call: LabelDropOptions = {}): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.xEmbedder.forward(x).add(this.posEmbed) as tf.Tensor3D;
      const { c, context } = this.condition(t, y, call);
      for (const block of this.blocks) h = block.forward(h, c, context);
      return this.unpatchify(this.finalLayer.forward(h, c));
    });
  }

  /** The adaLN condition c = t_emb + y_emb [N, D], and the projected text tokens for cross-attention. */
  private condition(t: tf.Tensor, y: DitCondition, call: LabelDropOptions): { c: tf.Tensor2D; context?: CrossContext } {
    const n = t.size;
    const tEmb = this.tEmbedder.forward(t);
    if (!isTextCondition(y)) {
      if (!this.yEmbedder) throw new Error('DiT: this model is text-conditioned; pass a text encoding, not class labels');
      if (y.size !== n) throw new Error(`DiT: ${y.size} class labels for a batch of ${n}`);
      return { c: tEmb.add(this.yEmbedder.forward(y, this.training, call)) as tf.Tensor2D };
    }
    if (!this.pooledEmbedder) throw new Error('DiT: this model is class-conditioned; pass class labels, not a text encoding');
    const [pn, pd] = y.pooled.shape;
    if (pn !== n || pd !== this.config.textPooledDim) throw new Error(`DiT: pooled text [${y.pooled.shape}] does not fit batch ${n} × textPooledDim ${this.config.textPooledDim}`);
    const c = tEmb.add(this.pooledEmbedder.forward(y.pooled)) as tf.Tensor2D;
    if (!this.captionProjection) return { c };
    const [tn, , td] = y.tokens.shape;
    if (tn !== n || td !== this.config.textTokenDim) throw new Error(`DiT: text tokens [${y.tokens.shape}] do not fit batch ${n} × textTokenDim ${this.config.textTokenDim}`);
    return { c, context: { tokens: this.captionProjection.forward(y.tokens) as tf.Tensor3D, mask: y.mask } };
  }

  /** Tokens [N, T, p·p·C] → image [N, H, W, C]: token (i, j) fills rows i·p…, columns j·p…, channels fastest. */
  unpatchify(x: tf.Tensor3D): tf.Tensor4D {
    const p = this.config.patchSize;
    const c = this.outChannels;
    const [n, tokens] = x.shape;
    const g = Math.round(Math.sqrt(tokens));
    if (g * g !== tokens) throw new Error(`unpatchify: ${tokens} tokens are not a square grid`);
    return tf.tidy(() => x.reshape([n, g, g, p, p, c]).transpose([0, 1, 3, 2, 4, 5]).reshape([n, g * p, g * p, c]) as tf.Tensor4D);
  }

  /**
   * Classifier-free guidance in one batch, as the reference's `forward_with_cfg`: the first half of x
   * is duplicated, y holds the conditional labels then the null labels, and the first
   * `guidedChannels` output channels of both halves become uncond + s·(cond − uncond). The reference
   * guides 3 channels "for exact reproducibility" of its paper numbers; pass inChannels for the
   * standard all-eps guidance.
   */
  forwardWithCfg(x: tf.Tensor4D, t: tf.Tensor, y: DitCondition, cfgScale: number, guidedChannels = 3): tf.Tensor4D {
    const n = x.shape[0];
    if (n % 2 !== 0) throw new Error(`forwardWithCfg: batch ${n} must be even (conditional half + unconditional half)`);
    return tf.tidy(() => {
      const half = x.slice([0, 0, 0, 0], [n / 2, -1, -1, -1]);
      const out = this.forward(tf.concat([half, half], 0) as tf.Tensor4D, t, y);
      const [eps, rest] = tf.split(out, [guidedChannels, this.outChannels - guidedChannels], -1);
      const [cond, uncond] = tf.split(eps!, 2, 0);
      const guided = uncond!.add(cond!.sub(uncond!).mul(cfgScale));
      return tf.concat([tf.concat([guided, guided], 0), rest!], -1) as tf.Tensor4D;
    });
  }
}
