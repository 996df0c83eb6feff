export { BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE } from './blocks.js';
export {
  FID_INCEPTION_CONFIG,
  FidInceptionV3,
  INCEPTION_MIN_SIZE,
  loadFidInception,
  loadFidInceptionFromSource,
  type FidInceptionConfig,
  type FidInceptionOutput,
  type InceptionInputScaling,
} from './model.js';
export { inceptionFeatures, type InceptionFeatureOptions, type InceptionFeatures } from './features.js';
