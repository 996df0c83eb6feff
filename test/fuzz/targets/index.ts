import type { FuzzTarget } from '../harness.js';
import { captionTargets } from './captions.js';
import { configTargets } from './config.js';
import { mediaTargets } from './media.js';
import { pytorchTargets } from './pytorch.js';
import { safetensorsTargets } from './safetensors.js';

/**
 * Every fuzzed parser. Adding one is one line here (or one entry in a group's list): the suite and `npm run fuzz`
 * pick it up. Not here because it does not exist: a TensorBoard event reader (the toolkit only writes events).
 */
export const FUZZ_TARGETS: FuzzTarget[] = [...safetensorsTargets, ...configTargets, ...captionTargets, ...mediaTargets, ...pytorchTargets];
