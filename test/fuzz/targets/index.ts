import type { FuzzTarget } from '../harness.js';
import { captionTargets } from './captions.js';
import { configTargets } from './config.js';
import { mediaTargets } from './media.js';
import { safetensorsTargets } from './safetensors.js';

/**
 * Every fuzzed parser. Adding one is one line here (or one entry in a group's list): the suite and `npm run fuzz`
 * pick it up. Not yet here because the code does not exist on this branch: the PyTorch-file/pickle and .npz readers
 * (src/io/pickle.ts, pytorch_file.ts, npz.ts) and a TensorBoard event reader (the toolkit only writes events).
 */
export const FUZZ_TARGETS: FuzzTarget[] = [...safetensorsTargets, ...configTargets, ...captionTargets, ...mediaTargets];
