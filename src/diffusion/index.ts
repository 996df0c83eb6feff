// Diffusion maths shared by every generator job: schedules, objectives, samplers (model-agnostic).
export * from './schedule.js';
export * from './objectives.js';
export {
  type ModelFn,
  type Sampler,
  type SamplerOptions,
  NoiseStreams,
  type NoiseSource,
  classifierFreeGuidance,
  ddimSampler,
  ddpmSampler,
  eulerSampler,
  flowTimeGrid,
  getSampler,
  registerSampler,
  samplerNames,
  samplersFor,
} from './samplers.js';
