import { JobError } from '../../util/errors.js';
import type { TensorEntry } from '../../io/safetensors.js';
import { DIFF_SUFFIXES, carriedMetadata, entry, groupBySuffix, readGroups, refuseDora, refuseDoraScale, writeDiffs } from './common.js';
import type { LoraFormat } from './types.js';

const PREFIX = 'diffusion_model.';
const COMFY_SUFFIXES = {
  '.lora_A.weight': 'down',
  '.lora_B.weight': 'up',
  '.lora_down.weight': 'down',
  '.lora_up.weight': 'up',
  '.alpha': 'alpha',
} as const;

/**
 * ComfyUI's generic layout for any model: `diffusion_model.<native module path>.lora_A.weight` /
 * `.lora_B.weight` plus `.alpha` (ComfyUI applies alpha / r when the key exists, 1 otherwise).
 */
export const comfyFormat: LoraFormat = {
  name: 'comfy',
  description: 'ComfyUI: diffusion_model.<path>.lora_A/lora_B.weight + .alpha',
  detect: (names) => names.length > 0 && names.every((n) => n.startsWith(PREFIX)),
  read(src) {
    refuseDoraScale(src);
    const groups = groupBySuffix(src.names(), { ...COMFY_SUFFIXES, ...DIFF_SUFFIXES }, src.path);
    for (const stem of groups.keys()) if (!stem.startsWith(PREFIX)) throw new JobError(`${src.path}: '${stem}' does not start with '${PREFIX}'`);
    return readGroups(src, groups, (stem) => stem.slice(PREFIX.length), (r) => r);
  },
  write(lora, opts) {
    refuseDora(lora, 'comfy');
    const tensors = new Map<string, TensorEntry>();
    for (const [name, m] of lora.modules) {
      const key = PREFIX + name;
      tensors.set(`${key}.lora_A.weight`, entry(m.down, opts));
      tensors.set(`${key}.lora_B.weight`, entry(m.up, opts));
      tensors.set(`${key}.alpha`, { shape: [], data: Float32Array.of(m.alpha), dtype: opts.dtype ?? 'F32' });
    }
    writeDiffs(lora, (m) => PREFIX + m, tensors, opts);
    return { tensors, metadata: { ...carriedMetadata(lora), format: 'pt', ...(opts.baseModel ? { base_model: opts.baseModel } : {}) } };
  },
};
