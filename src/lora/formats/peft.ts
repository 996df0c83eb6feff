import { JobError } from '../../util/errors.js';
import type { TensorEntry } from '../../io/safetensors.js';
import { patternValue } from '../inject.js';
import { loraScaling } from '../lora_linear.js';
import { type LoraModuleWeights, type LoraWeights, loraRank } from '../weights.js';
import { carriedMetadata, commonRank, entry, foldScale, groupBySuffix, readModule, refuseDiffs, weights } from './common.js';
import type { LoraFormat, LoraFormatName, LoraSource } from './types.js';

/** diffusers' header key for the PEFT LoraConfig (loaders/lora_base.py LORA_ADAPTER_METADATA_KEY). */
export const LORA_ADAPTER_METADATA_KEY = 'lora_adapter_metadata';
/** Component prefix diffusers packs a transformer's adapter under. */
const COMPONENT = 'transformer';

const PEFT_SUFFIXES = {
  '.lora_A.weight': 'down',
  '.lora_B.weight': 'up',
  '.lora_magnitude_vector': 'magnitude',
  '.lora_magnitude_vector.weight': 'magnitude',
} as const;

const PREFIXES = [`${COMPONENT}.`, 'base_model.model.'];

function stripPrefix(stem: string): string {
  for (const p of PREFIXES) if (stem.startsWith(p)) return stem.slice(p.length);
  return stem;
}

export function isPeftStyle(names: readonly string[]): boolean {
  return names.length > 0 && names.some((n) => n.endsWith('.lora_A.weight')) && !names.some((n) => n.endsWith('.lora_down.weight'));
}

interface PeftConfig {
  r: number;
  lora_alpha: number;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  use_rslora: boolean;
}

/** The LoraConfig in the header (keys with or without diffusers' `transformer.` prefix), or undefined. */
function readPeftConfig(src: LoraSource): PeftConfig | undefined {
  const raw = src.metadata[LORA_ADAPTER_METADATA_KEY];
  if (raw === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new JobError(`${src.path}: header '${LORA_ADAPTER_METADATA_KEY}' is not valid JSON`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new JobError(`${src.path}: header '${LORA_ADAPTER_METADATA_KEY}' is not a JSON object`);
  const o = parsed as Record<string, unknown>;
  const get = (k: string) => o[`${COMPONENT}.${k}`] ?? o[k];
  const r = get('r');
  const alpha = get('lora_alpha');
  if (typeof r !== 'number' || typeof alpha !== 'number') throw new JobError(`${src.path}: '${LORA_ADAPTER_METADATA_KEY}' has no numeric r and lora_alpha`);
  const record = (v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, number>) : {});
  return { r, lora_alpha: alpha, rank_pattern: record(get('rank_pattern')), alpha_pattern: record(get('alpha_pattern')), use_rslora: get('use_rslora') === true };
}

/** How a PEFT-style layout names modules in the file relative to the base model. */
export interface ModuleNaming {
  /** Base-model modules → file modules (may split one module into several). */
  toFile(lora: LoraWeights): Map<string, LoraModuleWeights>;
  /** File modules → base-model modules (may fuse). */
  fromFile(modules: Map<string, LoraModuleWeights>, file: string): Map<string, LoraModuleWeights>;
}

export const identityNaming: ModuleNaming = {
  toFile: (lora) => new Map(lora.modules),
  fromFile: (modules) => modules,
};

/**
 * PEFT/diffusers layout: `transformer.<module>.lora_A.weight` [r, in], `….lora_B.weight` [out, r],
 * no alpha tensor. The scale is folded into B and the header's LoraConfig says lora_alpha = r for
 * every module, so diffusers (which reads the config), ComfyUI and PEFT (which do not) all apply it
 * at the strength it was trained with.
 */
export function peftStyleFormat(spec: {
  name: LoraFormatName;
  description: string;
  naming: ModuleNaming;
  detect: (names: readonly string[], metadata: Record<string, string>) => boolean;
}): LoraFormat {
  return {
    name: spec.name,
    description: spec.description,
    detect: spec.detect,
    read(src) {
      const config = readPeftConfig(src);
      const groups = groupBySuffix(src.names(), PEFT_SUFFIXES, src.path);
      const modules = new Map<string, LoraModuleWeights>();
      for (const [stem, roles] of groups) {
        const name = stripPrefix(stem);
        const alphaFor = (rank: number) => {
          // No config: scale 1, as diffusers and ComfyUI load such files.
          if (!config) return rank;
          const a = patternValue(name, config.alpha_pattern) ?? config.lora_alpha;
          return loraScaling(rank, a, config.use_rslora) * rank;
        };
        modules.set(name, readModule(src, stem, roles, alphaFor));
      }
      return weights(spec.naming.fromFile(modules, src.path), src.metadata);
    },
    write(lora, opts) {
      refuseDiffs(lora, spec.name);
      const fileModules = spec.naming.toFile(lora);
      const tensors = new Map<string, TensorEntry>();
      const rankPattern: Record<string, number> = {};
      const r = commonRank({ modules: fileModules, metadata: {} });
      for (const [name, m0] of fileModules) {
        const m = foldScale(m0);
        const key = `${COMPONENT}.${name}`;
        tensors.set(`${key}.lora_A.weight`, entry(m.down, opts));
        tensors.set(`${key}.lora_B.weight`, entry(m.up, opts));
        if (m.magnitude) tensors.set(`${key}.lora_magnitude_vector`, entry(m.magnitude, opts));
        if (loraRank(m) !== r) rankPattern[escapeRegex(name)] = loraRank(m);
      }
      const config: Record<string, unknown> = {
        r,
        lora_alpha: r,
        // alpha = rank for every module: the scale lives in B.
        alpha_pattern: { ...rankPattern },
        rank_pattern: rankPattern,
        target_modules: [...(opts.targets ?? [...new Set([...fileModules.keys()].map((n) => n.split('.').slice(-2).join('.')))])].sort(),
        use_dora: [...fileModules.values()].some((m) => m.magnitude !== undefined),
        use_rslora: false,
        lora_dropout: 0,
        bias: 'none',
        init_lora_weights: true,
        peft_type: 'LORA',
        base_model_name_or_path: opts.baseModel ?? null,
      };
      const packed = Object.fromEntries(Object.keys(config).sort().map((k) => [`${COMPONENT}.${k}`, config[k]]));
      const metadata: Record<string, string> = { ...carriedMetadata(lora), format: 'pt', [LORA_ADAPTER_METADATA_KEY]: JSON.stringify(packed, null, 2) };
      return { tensors, metadata };
    },
  };
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export const peftFormat: LoraFormat = peftStyleFormat({
  name: 'peft',
  description: 'PEFT/diffusers keys on the official module names: transformer.<module>.lora_A/lora_B.weight, config in lora_adapter_metadata',
  naming: identityNaming,
  detect: (names) => isPeftStyle(names) && !names.some((n) => n.startsWith('diffusion_model.') || /(^|\.)transformer_blocks\./.test(n)),
});
