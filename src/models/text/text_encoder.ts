import { tf } from '../../backend/tf.js';
import { Module } from '../../nn/module.js';
import type { TokenBatch } from './clip_tokenizer.js';

/** What a generator conditions on: per-token states for cross-attention plus one pooled vector per text. */
export interface TextEncoding {
  /** [B, L, dim] */
  tokens: tf.Tensor3D;
  /** [B, L] float32, 1 = real token (start/end tokens included), 0 = padding. */
  mask: tf.Tensor2D;
  /** [B, pooledDim] */
  pooled: tf.Tensor2D;
}

/**
 * The interface trainers use for any text encoder. It is a Module, so its weights save and load
 * with the checkpoint and it can be trained jointly or frozen; `spec()` is the JSON needed to
 * rebuild the same architecture and tokenizer before loading those weights.
 */
export abstract class TextEncoderModule extends Module {
  abstract readonly kind: string;
  /** Width of `tokens`. */
  abstract readonly dim: number;
  /** Width of `pooled`. */
  abstract readonly pooledDim: number;
  /** L: every encoding is padded or truncated to this many tokens. */
  abstract readonly contextLength: number;

  abstract encode(texts: string[]): TextEncoding;
  abstract spec(): TextEncoderSpec;
}

export interface ClipTextEncoderSpec {
  kind: 'clip';
  /** Local Hugging Face folder (model folder or diffusers pipeline root). */
  path: string;
  /** 'last' = last_hidden_state (SD 1.x); 'penultimate' = hidden_states[-2] (SDXL, "clip skip 2"). */
  layer?: 'last' | 'penultimate';
  /** HF pads with EOT (default), openai/CLIP with 0. */
  pad?: 'eot' | 'zero';
  trainable?: boolean;
}

export interface BuiltinTextEncoderSpec {
  kind: 'builtin';
  hiddenSize?: number;
  numHiddenLayers?: number;
  numAttentionHeads?: number;
  intermediateSize?: number;
  contextLength?: number;
  hiddenAct?: string;
  /** Serialised WordTokenizer; absent = build from the dataset's captions. */
  vocab?: unknown;
  minCount?: number;
  maxWords?: number;
  /** Standard deviation of the initial token embeddings (default: CLIP's 0.02). */
  embeddingStd?: number;
  /** 'eos' (CLIP's rule, default) or 'mean' over real tokens. */
  pooling?: 'eos' | 'mean';
  trainable?: boolean;
}

export type TextEncoderSpec = ClipTextEncoderSpec | BuiltinTextEncoderSpec;

export function tokenBatchTensors(batch: TokenBatch): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  return {
    ids: tf.tensor2d(batch.ids, [batch.batch, batch.length], 'int32'),
    mask: tf.tensor2d(Float32Array.from(batch.mask), [batch.batch, batch.length], 'float32'),
  };
}

export function disposeTextEncoding(e: TextEncoding): void {
  e.tokens.dispose();
  e.mask.dispose();
  e.pooled.dispose();
}
