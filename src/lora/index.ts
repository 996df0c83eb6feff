// LoRA adapters: the layer (PEFT math and names) and injection by module-name patterns.
export { LoraLinear, type LoraLayerOptions } from './lora_linear.js';
export { DIT_LORA_TARGETS, LoraModel, injectLora, matchesLoraTarget, type LoraConfig } from './inject.js';
