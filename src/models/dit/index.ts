// The DiT's public surface, so callers import one module.
export { DiT, type DiTOptions, type DitCondition, type DitTextCondition, isTextCondition } from './model.js';
export { AdaLnModulation, DiTBlock, FinalLayer, type CrossContext } from './blocks.js';
export { LabelEmbedder, PatchEmbed, TextProjection, TimestepEmbedder, sincosPosEmbed2d, timestepEmbedding, timestepFrequencies, type LabelDropOptions } from './embeddings.js';
export {
  type DitConfig,
  TIMESTEP_FREQUENCY_DIM,
  ditConditioning,
  ditConfig,
  ditConfigs,
  ditLabelRows,
  ditMlpHidden,
  ditNumPatches,
  ditOutChannels,
  ditParameterCount,
  validateDitConfig,
} from './config.js';
export {
  type DitLayout,
  type LoadDitOptions,
  type LoadedDitWeights,
  ditConfigFromDiffusers,
  inferDitConfig,
  loadDit,
  loadDitWeights,
  officialFromDiffusers,
  readDitState,
  resolveDitLocation,
} from './load.js';
