import { UsageError } from '../../util/errors.js';
import { activations } from '../../nn/activations.js';

/** transformers CLIPTextConfig, the fields the text tower's forward depends on (camelCase). */
export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: string;
  layerNormEps: number;
  /** Width of text_projection (CLIPTextModelWithProjection); null = no projection. */
  projectionDim: number | null;
  bosTokenId: number;
  eosTokenId: number;
  /**
   * Where the pooled vector is read: 'argmax' = position of the largest id (openai/CLIP, and HF for
   * legacy configs with eos_token_id 2), 'eos' = first position holding eosTokenId.
   */
  pooling: 'argmax' | 'eos';
}

/** CLIPTextConfig defaults (= openai/clip-vit-base-patch32's text tower). */
export const CLIP_TEXT_DEFAULTS: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 512,
  intermediateSize: 2048,
  numHiddenLayers: 12,
  numAttentionHeads: 8,
  maxPositionEmbeddings: 77,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
  projectionDim: null,
  bosTokenId: 49406,
  eosTokenId: 49407,
  pooling: 'eos',
};

const INT_FIELDS = {
  vocab_size: 'vocabSize',
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_hidden_layers: 'numHiddenLayers',
  num_attention_heads: 'numAttentionHeads',
  max_position_embeddings: 'maxPositionEmbeddings',
  bos_token_id: 'bosTokenId',
  eos_token_id: 'eosTokenId',
} as const;

/** Fields both CLIP towers read the same way from their config.json section. */
export interface ClipTowerCommon {
  hiddenAct: string;
  layerNormEps: number;
  projectionDim: number | null;
}

/**
 * One CLIP tower's config from an HF config.json object: the tower's own config, or a CLIPConfig
 * whose `sub` (text_config / vision_config) holds it. Integer fields are copied through `intFields`
 * (HF name → our field) and must be ≥ `minInt`; `projectionWeight` names the tensor whose presence
 * (`hasProjection`) makes projection_dim required.
 */
export function readClipTowerConfig<C extends ClipTowerCommon>(
  raw: unknown,
  where: string,
  sub: 'text_config' | 'vision_config',
  defaults: C,
  intFields: Readonly<Record<string, keyof C>>,
  minInt: 0 | 1,
  hasProjection: boolean,
  projectionWeight: string,
): C {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UsageError(`${where}: expected a JSON object`);
  const outer = raw as Record<string, unknown>;
  const inner = outer[sub];
  const obj = (typeof inner === 'object' && inner !== null ? inner : outer) as Record<string, unknown>;
  const prefix = obj === outer ? '' : `${sub}.`;
  const cfg: C = { ...defaults };
  for (const [key, field] of Object.entries(intFields)) {
    const v = obj[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < minInt) {
      throw new UsageError(`${where}: ${prefix}${key} must be a ${minInt === 0 ? 'non-negative' : 'positive'} integer, got ${JSON.stringify(v)}`);
    }
    (cfg as Record<keyof C, unknown>)[field] = v;
  }
  if (obj.hidden_act !== undefined) {
    if (typeof obj.hidden_act !== 'string' || !(obj.hidden_act in activations)) {
      throw new UsageError(`${where}: ${prefix}hidden_act ${JSON.stringify(obj.hidden_act)} is not one of ${Object.keys(activations).join(', ')}`);
    }
    cfg.hiddenAct = obj.hidden_act;
  }
  if (obj.layer_norm_eps !== undefined) {
    if (typeof obj.layer_norm_eps !== 'number' || !(obj.layer_norm_eps > 0)) throw new UsageError(`${where}: ${prefix}layer_norm_eps must be a positive number`);
    cfg.layerNormEps = obj.layer_norm_eps;
  }
  // CLIPConfig keeps projection_dim at the top level; the tower configs inside themselves.
  const proj = obj.projection_dim ?? outer.projection_dim;
  if (hasProjection) {
    if (typeof proj !== 'number' || !Number.isInteger(proj) || proj <= 0) {
      throw new UsageError(`${where}: projection_dim must be a positive integer when ${projectionWeight} is present`);
    }
    cfg.projectionDim = proj;
  }
  return cfg;
}

/**
 * Read an HF config.json object: a CLIPTextConfig, or a CLIPConfig whose `text_config` holds it.
 * `hasProjection` says whether the weights carry text_projection (the config's projection_dim is
 * present on plain CLIPTextModel configs too, so it alone does not decide).
 */
export function parseClipTextConfig(raw: unknown, where: string, hasProjection = false): ClipTextConfig {
  const cfg = readClipTowerConfig(raw, where, 'text_config', CLIP_TEXT_DEFAULTS, INT_FIELDS, 0, hasProjection, 'text_projection.weight');
  cfg.pooling = cfg.eosTokenId === 2 ? 'argmax' : 'eos';
  validateClipTextConfig(cfg, where);
  return cfg;
}

export function validateClipTextConfig(cfg: ClipTextConfig, where: string): void {
  for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numHiddenLayers', 'numAttentionHeads', 'maxPositionEmbeddings'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new UsageError(`${where}: ${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new UsageError(`${where}: hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`);
  }
}
