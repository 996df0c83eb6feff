import { UsageError } from '../../util/errors.js';
import type { ClipTextModel } from './clip_text_model.js';
import type { ClipTokenizer } from './clip_tokenizer.js';
import { loadClipTextFromHfFolder } from './hf_folder.js';
import { type ClipTextEncoderSpec, TextEncoderModule, type TextEncoding, tokenBatchTensors } from './text_encoder.js';

/**
 * A pretrained CLIP text tower behind the TextEncoderModule interface. Its state-dict keys are the
 * HF ones (text_model.…, text_projection.weight), so a checkpoint that includes it reads like the
 * original. Frozen unless the spec says trainable. `pooled` is text_embeds when the model has a
 * projection (what SDXL feeds as its pooled vector), else pooler_output.
 */
export class ClipTextEncoder extends TextEncoderModule {
  readonly kind = 'clip';
  readonly dim: number;
  readonly pooledDim: number;
  readonly contextLength: number;

  constructor(
    private readonly model: ClipTextModel,
    readonly tokenizer: ClipTokenizer,
    private readonly options: ClipTextEncoderSpec,
  ) {
    super();
    const cfg = model.config;
    this.module('text_model', model.textModel);
    if (model.textProjection) this.module('text_projection', model.textProjection);
    this.dim = cfg.hiddenSize;
    this.pooledDim = cfg.projectionDim ?? cfg.hiddenSize;
    this.contextLength = Math.min(77, cfg.maxPositionEmbeddings);
    if (options.layer === 'penultimate' && cfg.numHiddenLayers < 2) throw new UsageError(`${options.path}: layer 'penultimate' needs at least 2 layers`);
    if (tokenizer.vocabSize > cfg.vocabSize) {
      throw new UsageError(`${options.path}: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${cfg.vocabSize}`);
    }
    if (cfg.pooling === 'eos' && cfg.eosTokenId !== tokenizer.eotId) {
      throw new UsageError(`${options.path}: config eos_token_id ${cfg.eosTokenId} differs from the tokenizer's <|endoftext|> id ${tokenizer.eotId}`);
    }
    if (!options.trainable) this.freeze();
  }

  static fromSpec(spec: ClipTextEncoderSpec): ClipTextEncoder {
    const { model, tokenizer } = loadClipTextFromHfFolder(spec.path);
    return new ClipTextEncoder(model, tokenizer, spec);
  }

  encode(texts: string[]): TextEncoding {
    const batch = this.tokenizer.call(texts, { contextLength: this.contextLength, pad: this.options.pad ?? 'eot' });
    const { ids, mask } = tokenBatchTensors(batch);
    const penultimate = this.options.layer === 'penultimate';
    const out = this.model.forward(ids, { outputHiddenStates: penultimate });
    const states = out.hiddenStates;
    const tokens = penultimate ? states![states!.length - 2]! : out.lastHiddenState;
    const pooled = out.textEmbeds ?? out.pooled;
    for (const t of [ids, out.lastHiddenState, out.pooled, ...(states ?? [])]) if (t !== tokens && t !== pooled) t.dispose();
    return { tokens, mask, pooled };
  }

  spec(): ClipTextEncoderSpec {
    return { ...this.options };
  }
}
