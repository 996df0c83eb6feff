import { JobError } from '../../util/errors.js';
import type { TensorEntry } from '../../io/safetensors.js';
import { loraRank } from '../weights.js';
import { DIFF_SUFFIXES, commonRank, entry, groupBySuffix, readGroups, refuseDora, refuseDoraScale, writeDiffs } from './common.js';
import { kohyaHashes } from './kohya_hash.js';
import type { LoraFormat, LoraReadOptions } from './types.js';

const PREFIX = 'lora_unet_';
const KOHYA_SUFFIXES = {
  '.lora_down.weight': 'down',
  '.lora_up.weight': 'up',
  '.alpha': 'alpha',
} as const;

/**
 * Segments of the official DiT's module paths that contain `_` themselves; kohya joins path segments
 * with `_`, so these are glued back together when no base model is at hand to resolve names.
 */
const COMPOUND_SEGMENTS = ['adaLN_modulation', 'x_embedder', 't_embedder', 'y_embedder', 'final_layer', 'norm_final', 'embedding_table', 'cross_attn', 'to_q', 'to_k', 'to_v', 'to_out', 'pos_embed'];

export function kohyaName(module: string): string {
  return PREFIX + module.replace(/\./g, '_');
}

/** `blocks_0_adaLN_modulation_1` → `blocks.0.adaLN_modulation.1`: exactly via the base's module names when given. */
export function kohyaFlatToModule(flat: string, known?: ReadonlySet<string>): string {
  if (known) {
    for (const name of known) if (name.replace(/\./g, '_') === flat) return name;
  }
  const parts = flat.split('_');
  const out: string[] = [];
  for (let i = 0; i < parts.length; ) {
    const compound = COMPOUND_SEGMENTS.find((c) => {
      const n = c.split('_').length;
      return parts.slice(i, i + n).join('_') === c;
    });
    const take = compound ? compound.split('_').length : 1;
    out.push(parts.slice(i, i + take).join('_'));
    i += take;
  }
  return out.join('.');
}

function str(v: string | number | boolean): string {
  // kohya stores str(value): Python spells booleans True/False.
  return typeof v === 'boolean' ? (v ? 'True' : 'False') : String(v);
}

/**
 * kohya sd-scripts layout: `lora_unet_<module path, . → _>.lora_down.weight` [r, in],
 * `.lora_up.weight` [out, r], `.alpha` (0-dim; scale = alpha / r), DoRA magnitude as `.dora_scale` [out, 1];
 * `ss_*` training metadata and the sshs_* hashes computed as kohya does.
 */
export const kohyaFormat: LoraFormat = {
  name: 'kohya',
  description: 'kohya sd-scripts: lora_unet_<path>.lora_down/lora_up.weight + .alpha, ss_* metadata, sshs_* hashes',
  detect: (names) => names.length > 0 && names.some((n) => n.startsWith(PREFIX) && n.endsWith('.lora_down.weight')),
  read(src, opts: LoraReadOptions) {
    refuseDoraScale(src);
    const groups = groupBySuffix(src.names(), { ...KOHYA_SUFFIXES, ...DIFF_SUFFIXES }, src.path);
    for (const stem of groups.keys()) {
      if (!stem.startsWith(PREFIX)) throw new JobError(`${src.path}: '${stem}' is not a ${PREFIX}… module (text-encoder LoRAs are not supported)`);
    }
    // kohya's loader: a module without alpha gets alpha = rank (scale 1).
    return readGroups(src, groups, (stem) => kohyaFlatToModule(stem.slice(PREFIX.length), opts.moduleNames), (r) => r);
  },
  write(lora, opts) {
    refuseDora(lora, 'kohya');
    const tensors = new Map<string, TensorEntry>();
    for (const [name, m] of lora.modules) {
      const key = kohyaName(name);
      tensors.set(`${key}.lora_down.weight`, entry(m.down, opts));
      tensors.set(`${key}.lora_up.weight`, entry(m.up, opts));
      tensors.set(`${key}.alpha`, { shape: [], data: Float32Array.of(m.alpha), dtype: opts.dtype ?? 'F32' });
    }
    writeDiffs(lora, kohyaName, tensors, opts);
    const dim = commonRank(lora);
    const alphas = [...lora.modules.values()].filter((m) => loraRank(m) === dim).map((m) => m.alpha);
    const mixed = [...lora.modules.values()].some((m) => loraRank(m) !== dim);
    const networkArgs: Record<string, string> = {};
    if (mixed) networkArgs.rank_per_module = 'true';
    const fromFile = Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => k.startsWith('ss_')));
    const given: Record<string, string> = {};
    if (opts.baseModel !== undefined) given.ss_base_model_version = opts.baseModel;
    if (opts.outputName !== undefined) given.ss_output_name = opts.outputName;
    if (opts.trainingComment !== undefined) given.ss_training_comment = opts.trainingComment;
    if (opts.tagFrequency !== undefined) given.ss_tag_frequency = JSON.stringify(opts.tagFrequency);
    for (const [k, v] of Object.entries(opts.trainingMetadata ?? {})) given[k.startsWith('ss_') ? k : `ss_${k}`] = str(v);
    // Defaults, then what the source file recorded, then what this network is, then what the caller says.
    const ss: Record<string, string> = {
      ss_base_model_version: 'dit',
      ss_v2: 'False',
      ss_output_name: 'lora',
      ss_training_comment: 'None',
      ss_tag_frequency: '{}',
      ...fromFile,
      ss_network_module: 'networks.lora',
      ss_network_dim: String(dim),
      ss_network_alpha: str(alphas[0] ?? dim),
      ss_network_args: JSON.stringify(networkArgs),
      ...given,
    };
    const spec = Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => k.startsWith('modelspec.')));
    const { modelHash, legacyHash } = kohyaHashes(tensors, ss);
    return { tensors, metadata: { ...spec, ...ss, sshs_model_hash: modelHash, sshs_legacy_hash: legacyHash } };
  },
};
