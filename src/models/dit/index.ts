// The DiT's public surface, so callers import one module.
export { DiT, type DiTOptions } from './model.js';
export { AdaLnModulation, DiTBlock, FinalLayer } from './blocks.js';
export { LabelEmbedder, PatchEmbed, TimestepEmbedder, sincosPosEmbed2d, timestepEmbedding, timestepFrequencies, type LabelDropOptions } from './embeddings.js';
export {
  type DitConfig,
  TIMESTEP_FREQUENCY_DIM,
  ditConfig,
  ditConfigs,
  ditLabelRows,
  ditMlpHidden,
  ditNumPatches,
  ditOutChannels,
  ditParameterCount,
  validateDitConfig,
} from './config.js';
