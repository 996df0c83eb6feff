// The VAE's public surface, so jobs import one module rather than five.
export { AutoencoderKL, DiagonalGaussianDistribution, Decoder, Encoder } from './autoencoder_kl.js';
export type { AutoencoderKLOptions } from './autoencoder_kl.js';
export {
  type VaeConfig,
  vaeConfig,
  vaeConfigs,
  vaeConfigFromDiffusers,
  vaeConfigToDiffusers,
  vaeDownsampleFactor,
  vaeParameterCount,
  validateVaeConfig,
} from './config.js';
export { loadVae, loadVaeWeights, saveVae, toDiffusersVaeName, type LoadVaeOptions, type LoadedVae } from './load.js';
export { DEFAULT_VAE_LOSS_WEIGHTS, klLoss, l1Loss, mseLoss, vaeLoss, type VaeLoss, type VaeLossWeights } from './loss.js';
