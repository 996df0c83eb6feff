import { tf } from '../../backend/tf.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { activations } from '../../nn/activations.js';
import type { ClipTextConfig } from './clip_text_config.js';
import { ClipTextModel } from './clip_text_model.js';
import { type BuiltinTextEncoderSpec, TextEncoderModule, type TextEncoding, tokenBatchTensors } from './text_encoder.js';
import { WordTokenizer } from './word_tokenizer.js';

/**
 * The default recipe's text encoder: a word vocabulary from the training captions and a small
 * CLIP-architecture transformer trained from scratch with the generator. Pooling reads the state at
 * the end-of-caption token (as CLIP does): under the causal mask it is the only position that has
 * seen the whole caption, whereas a mean would mix in prefixes that have not.
 */

export const BUILTIN_TEXT_DEFAULTS = {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  intermediateSize: 256,
  contextLength: 16,
  hiddenAct: 'quick_gelu',
} as const;

export class BuiltinTextEncoder extends TextEncoderModule {
  readonly kind = 'builtin';
  readonly dim: number;
  readonly pooledDim: number;
  readonly contextLength: number;
  private readonly model: ClipTextModel;

  constructor(
    readonly tokenizer: WordTokenizer,
    private readonly options: BuiltinTextEncoderSpec = { kind: 'builtin' },
    rng: Rng = new Rng(0),
  ) {
    super();
    const o = { ...BUILTIN_TEXT_DEFAULTS, ...definedOnly(options) };
    for (const k of ['hiddenSize', 'numHiddenLayers', 'numAttentionHeads', 'intermediateSize', 'contextLength'] as const) {
      if (!Number.isInteger(o[k]) || o[k] <= 0) throw new UsageError(`text encoder (builtin): ${k} must be a positive integer, got ${JSON.stringify(o[k])}`);
    }
    if (o.contextLength < 2) throw new UsageError(`text encoder (builtin): contextLength must be at least 2 (bos + eos), got ${o.contextLength}`);
    if (o.hiddenSize % o.numAttentionHeads !== 0) {
      throw new UsageError(`text encoder (builtin): hiddenSize ${o.hiddenSize} is not divisible by numAttentionHeads ${o.numAttentionHeads}`);
    }
    if (!(o.hiddenAct in activations)) throw new UsageError(`text encoder (builtin): hiddenAct '${o.hiddenAct}' is not one of ${Object.keys(activations).join(', ')}`);
    const config: ClipTextConfig = {
      vocabSize: tokenizer.vocabSize,
      hiddenSize: o.hiddenSize,
      intermediateSize: o.intermediateSize,
      numHiddenLayers: o.numHiddenLayers,
      numAttentionHeads: o.numAttentionHeads,
      maxPositionEmbeddings: o.contextLength,
      hiddenAct: o.hiddenAct,
      layerNormEps: 1e-5,
      projectionDim: null,
      bosTokenId: tokenizer.bosId,
      eosTokenId: tokenizer.eosId,
      pooling: 'eos',
    };
    this.model = new ClipTextModel(config, { rng: rng.fork('builtin-text') });
    if (options.embeddingStd !== undefined) {
      // CLIP's 0.02 suits fine-tuning pretrained tables; trained jointly from scratch, words need to be
      // distinguishable from the first step or the generator learns the caption-independent mean first.
      const emb = this.model.textModel.embeddings.tokenEmbedding.weight;
      const init = tf.tensor(rng.fork('builtin-token-init').fillNormal(new Float32Array(emb.size), 0, options.embeddingStd), emb.shape);
      emb.assign(init);
      init.dispose();
    }
    this.module('text_model', this.model.textModel);
    this.dim = o.hiddenSize;
    this.pooledDim = o.hiddenSize;
    this.contextLength = o.contextLength;
    if (options.trainable === false) this.freeze();
  }

  static fromSpec(spec: BuiltinTextEncoderSpec, ctx: { captions?: Iterable<string>; rng?: Rng } = {}): BuiltinTextEncoder {
    let tokenizer: WordTokenizer;
    if (spec.vocab !== undefined) tokenizer = WordTokenizer.fromJSON(spec.vocab, 'text encoder (builtin): vocab');
    else if (ctx.captions) tokenizer = WordTokenizer.build(ctx.captions, { minCount: spec.minCount, maxWords: spec.maxWords });
    else throw new UsageError('text encoder (builtin): needs either a saved vocab or the dataset captions to build one');
    return new BuiltinTextEncoder(tokenizer, spec, ctx.rng);
  }

  encode(texts: string[]): TextEncoding {
    const { ids, mask } = tokenBatchTensors(this.tokenizer.call(texts, this.contextLength));
    const out = this.model.forward(ids);
    ids.dispose();
    if (this.options.pooling !== 'mean') return { tokens: out.lastHiddenState, mask, pooled: out.pooled };
    // Mean over real tokens: every word reaches the pooled vector through the residual stream from
    // the first step, which a generator trained jointly from scratch picks up much sooner than EOS.
    const pooled = tf.tidy(() => {
      const m = mask.expandDims(2);
      return out.lastHiddenState.mul(m).sum(1).div(m.sum(1)) as tf.Tensor2D;
    });
    out.pooled.dispose();
    return { tokens: out.lastHiddenState, mask, pooled };
  }

  /** Architecture plus the vocabulary, so a checkpoint rebuilds the same encoder without the captions. */
  spec(): BuiltinTextEncoderSpec {
    return {
      ...this.options,
      kind: 'builtin',
      hiddenSize: this.dim,
      numHiddenLayers: this.model.config.numHiddenLayers,
      numAttentionHeads: this.model.config.numAttentionHeads,
      intermediateSize: this.model.config.intermediateSize,
      contextLength: this.contextLength,
      hiddenAct: this.model.config.hiddenAct,
      vocab: this.tokenizer.toJSON(),
    };
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
