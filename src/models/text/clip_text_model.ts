import { tf } from '../../backend/tf.js';
import { Activation, activation } from '../../nn/activations.js';
import { Embedding } from '../../nn/embedding.js';
import { normal, zeros } from '../../nn/init.js';
import { Linear } from '../../nn/linear.js';
import { Module, ModuleList } from '../../nn/module.js';
import { LayerNorm } from '../../nn/norm.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { ClipTextConfig, validateClipTextConfig } from './clip_text_config.js';

/**
 * The CLIP text tower with transformers' module tree, so stateDict() keys are HF's
 * (text_model.encoder.layers.3.self_attn.q_proj.weight, …): a pre-LN causal transformer whose
 * pooled vector is the final-LN state at the end-of-text token.
 */

export interface ClipTextForwardOptions {
  /** [B, L], 1 = real token; added to the causal mask like HF's attention_mask. SD pipelines pass none. */
  attentionMask?: tf.Tensor;
  /** Also return HF's hidden_states: the embeddings, then every layer's output (before final LN). */
  outputHiddenStates?: boolean;
}

export interface ClipTextOutput {
  /** [B, L, D] after final_layer_norm. */
  lastHiddenState: tf.Tensor3D;
  /** [B, D] pooler_output: lastHiddenState at the EOT position. */
  pooled: tf.Tensor2D;
  /** [B, projectionDim] text_projection(pooled), when the model has a projection. */
  textEmbeds: tf.Tensor2D | null;
  /** numHiddenLayers+1 tensors [B, L, D]; hiddenStates[n-2] is SDXL's "penultimate" layer. */
  hiddenStates: tf.Tensor3D[] | null;
}

/** The fields the transformer layers depend on; shared by the text and vision towers. */
export type ClipEncoderConfig = Pick<
  ClipTextConfig,
  'hiddenSize' | 'intermediateSize' | 'numHiddenLayers' | 'numAttentionHeads' | 'hiddenAct' | 'layerNormEps'
>;

// Additive mask value: large enough that exp underflows to 0 after the softmax's max subtraction.
const MASKED = -1e9;

// HF's CLIP initialisation; skipped (rng = null) when weights are about to be loaded, since drawing
// ~10⁸ normals for CLIP-L costs seconds.
function initLinear(lin: Linear, std: number, rng: Rng | null): void {
  if (!rng) return;
  const w = normal(lin.weight.shape, std, rng);
  lin.weight.assign(w);
  w.dispose();
  if (lin.bias) {
    const b = zeros(lin.bias.shape);
    lin.bias.assign(b);
    b.dispose();
  }
}

class ClipTextEmbeddings extends Module {
  readonly tokenEmbedding: Embedding;
  readonly positionEmbedding: Embedding;
  constructor(cfg: ClipTextConfig, rng: Rng) {
    super();
    this.tokenEmbedding = this.module('token_embedding', new Embedding(cfg.vocabSize, cfg.hiddenSize, { rng: rng.fork('token'), std: 0.02 }));
    this.positionEmbedding = this.module('position_embedding', new Embedding(cfg.maxPositionEmbeddings, cfg.hiddenSize, { rng: rng.fork('position'), std: 0.02 }));
  }
  forward(ids: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      const length = ids.shape[1];
      const positions = this.positionEmbedding.weight.slice([0, 0], [length, -1]);
      return this.tokenEmbedding.forward(ids).add(positions) as tf.Tensor3D;
    });
  }
}

class ClipAttention extends Module {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;
  private readonly heads: number;
  private readonly headDim: number;
  constructor(cfg: ClipEncoderConfig, rng: Rng, init: boolean) {
    super();
    const d = cfg.hiddenSize;
    this.heads = cfg.numAttentionHeads;
    this.headDim = d / this.heads;
    this.qProj = this.module('q_proj', new Linear(d, d, { rng: rng.fork('q') }));
    this.kProj = this.module('k_proj', new Linear(d, d, { rng: rng.fork('k') }));
    this.vProj = this.module('v_proj', new Linear(d, d, { rng: rng.fork('v') }));
    this.outProj = this.module('out_proj', new Linear(d, d, { rng: rng.fork('o') }));
    const inStd = d ** -0.5 * (2 * cfg.numHiddenLayers) ** -0.5;
    initLinear(this.qProj, inStd, init ? rng.fork('q-init') : null);
    initLinear(this.kProj, inStd, init ? rng.fork('k-init') : null);
    initLinear(this.vProj, inStd, init ? rng.fork('v-init') : null);
    initLinear(this.outProj, d ** -0.5, init ? rng.fork('o-init') : null);
  }
  /** x [B, L, D]; mask broadcastable to [B, H, L, L], additive. */
  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, l, d] = x.shape;
      const split = (t: tf.Tensor) => t.reshape([b, l, this.heads, this.headDim]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
      const q = split(this.qProj.forward(x).mul(this.headDim ** -0.5));
      const k = split(this.kProj.forward(x));
      const v = split(this.vProj.forward(x));
      const scores = tf.matMul(q, k, false, true).add(mask);
      const context = tf.matMul(tf.softmax(scores, -1), v);
      return this.outProj.forward(context.transpose([0, 2, 1, 3]).reshape([b, l, d])) as tf.Tensor3D;
    });
  }
}

class ClipMlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(cfg: ClipEncoderConfig, rng: Rng, init: boolean, private readonly act: Activation) {
    super();
    this.fc1 = this.module('fc1', new Linear(cfg.hiddenSize, cfg.intermediateSize, { rng: rng.fork('fc1') }));
    this.fc2 = this.module('fc2', new Linear(cfg.intermediateSize, cfg.hiddenSize, { rng: rng.fork('fc2') }));
    initLinear(this.fc1, (2 * cfg.hiddenSize) ** -0.5, init ? rng.fork('fc1-init') : null);
    initLinear(this.fc2, cfg.hiddenSize ** -0.5 * (2 * cfg.numHiddenLayers) ** -0.5, init ? rng.fork('fc2-init') : null);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.fc2.forward(this.act(this.fc1.forward(x))));
  }
}

export class ClipEncoderLayer extends Module {
  readonly selfAttn: ClipAttention;
  readonly layerNorm1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly layerNorm2: LayerNorm;
  constructor(cfg: ClipEncoderConfig, rng: Rng, init: boolean) {
    super();
    this.selfAttn = this.module('self_attn', new ClipAttention(cfg, rng.fork('attn'), init));
    this.layerNorm1 = this.module('layer_norm1', new LayerNorm(cfg.hiddenSize, cfg.layerNormEps));
    this.mlp = this.module('mlp', new ClipMlp(cfg, rng.fork('mlp'), init, activation(cfg.hiddenAct)));
    this.layerNorm2 = this.module('layer_norm2', new LayerNorm(cfg.hiddenSize, cfg.layerNormEps));
  }
  forward(x: tf.Tensor3D, mask: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const h = x.add(this.selfAttn.forward(this.layerNorm1.forward(x) as tf.Tensor3D, mask));
      return h.add(this.mlp.forward(this.layerNorm2.forward(h))) as tf.Tensor3D;
    });
  }
}

export class ClipEncoder extends Module {
  readonly layers: ModuleList<ClipEncoderLayer>;
  constructor(cfg: ClipEncoderConfig, rng: Rng, init: boolean) {
    super();
    this.layers = this.module(
      'layers',
      new ModuleList(Array.from({ length: cfg.numHiddenLayers }, (_, i) => new ClipEncoderLayer(cfg, rng.fork(`layer${i}`), init))),
    );
  }
}

/** HF CLIPTextTransformer (the `text_model` submodule). */
export class ClipTextTransformer extends Module {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipEncoder;
  readonly finalLayerNorm: LayerNorm;
  constructor(readonly config: ClipTextConfig, rng: Rng, init = true) {
    super();
    this.embeddings = this.module('embeddings', new ClipTextEmbeddings(config, rng.fork('embeddings')));
    this.encoder = this.module('encoder', new ClipEncoder(config, rng.fork('encoder'), init));
    this.finalLayerNorm = this.module('final_layer_norm', new LayerNorm(config.hiddenSize, config.layerNormEps));
  }

  forward(inputIds: tf.Tensor, opts: ClipTextForwardOptions = {}): Omit<ClipTextOutput, 'textEmbeds'> {
    if (inputIds.rank !== 2) throw new UsageError(`CLIP text model expects input ids [batch, length], got shape [${inputIds.shape}]`);
    const [, length] = inputIds.shape as [number, number];
    if (length > this.config.maxPositionEmbeddings) {
      throw new UsageError(`sequence length ${length} exceeds max_position_embeddings ${this.config.maxPositionEmbeddings}`);
    }
    const out = tf.tidy(() => {
      const ids = inputIds.toInt() as tf.Tensor2D;
      let mask: tf.Tensor = causalMask(length);
      if (opts.attentionMask) {
        const keep = opts.attentionMask.toFloat().reshape([-1, 1, 1, length]);
        mask = mask.add(tf.scalar(1).sub(keep).mul(MASKED));
      }
      const states: tf.Tensor3D[] = [];
      let h = this.embeddings.forward(ids);
      states.push(h);
      for (const layer of this.encoder.layers) {
        h = layer.forward(h, mask);
        states.push(h);
      }
      const last = this.finalLayerNorm.forward(h) as tf.Tensor3D;
      const poolAt =
        this.config.pooling === 'argmax' ? ids.argMax(-1) : ids.equal(this.config.eosTokenId).toInt().argMax(-1);
      // One-hot contraction instead of a batched gather: it has a gradient on every backend.
      const select = tf.oneHot(poolAt, length).toFloat().expandDims(-1);
      const pooled = last.mul(select).sum(1) as tf.Tensor2D;
      return { lastHiddenState: last, pooled, hiddenStates: opts.outputHiddenStates ? states : [] };
    });
    return { ...out, hiddenStates: opts.outputHiddenStates ? out.hiddenStates : null };
  }
}

function causalMask(length: number): tf.Tensor {
  return tf.tidy(() => {
    const allowed = tf.linalg.bandPart(tf.ones([length, length]), -1, 0);
    return tf.scalar(1).sub(allowed).mul(MASKED).reshape([1, 1, length, length]);
  });
}

/** HF CLIPTextModel, or CLIPTextModelWithProjection when config.projectionDim is set. */
export class ClipTextModel extends Module {
  readonly textModel: ClipTextTransformer;
  readonly textProjection: Linear | null;
  /** initWeights false: skip HF's initialisation of the linear layers (weights will be loaded). */
  constructor(readonly config: ClipTextConfig, opts: { rng?: Rng; initWeights?: boolean } = {}) {
    super();
    validateClipTextConfig(config, 'CLIP text config');
    const rng = opts.rng ?? new Rng(0);
    const init = opts.initWeights ?? true;
    this.textModel = this.module('text_model', new ClipTextTransformer(config, rng.fork('text_model'), init));
    this.textProjection = null;
    if (config.projectionDim !== null) {
      const proj = new Linear(config.hiddenSize, config.projectionDim, { bias: false, rng: rng.fork('proj') });
      initLinear(proj, config.hiddenSize ** -0.5, init ? rng.fork('proj-init') : null);
      this.textProjection = this.module('text_projection', proj);
    }
  }

  forward(inputIds: tf.Tensor, opts: ClipTextForwardOptions = {}): ClipTextOutput {
    const out = this.textModel.forward(inputIds, opts);
    const textEmbeds = this.textProjection ? (this.textProjection.forward(out.pooled) as tf.Tensor2D) : null;
    return { ...out, textEmbeds };
  }
}

export function disposeClipTextOutput(out: ClipTextOutput): void {
  out.lastHiddenState.dispose();
  out.pooled.dispose();
  out.textEmbeds?.dispose();
  out.hiddenStates?.forEach((t) => t.dispose());
}
