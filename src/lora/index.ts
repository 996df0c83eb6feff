// LoRA adapters: layers (PEFT math and names, DoRA), injection by patterns, adapters as data,
// merging and applying at a strength, the file formats the ecosystem loads, SVD resize/extract.
export { LoraLinear, DoraMagnitude, detach, loraScaling, rowNorm, type LoraLayerOptions } from './lora_linear.js';
export { LoraConv2d } from './lora_conv.js';
export {
  DIT_LORA_EXTRA_TARGETS,
  DIT_LORA_TARGETS,
  LoraModel,
  injectLora,
  matchesLoraTarget,
  patternValue,
  type LoraConfig,
  type LoraLayer,
  type LoraTarget,
} from './inject.js';
export * from './weights.js';
export * from './formats/index.js';
export * from './resize.js';
export { svd, svdOfProduct, truncatedSvd, type Svd } from './linalg.js';
export * from './files.js';
