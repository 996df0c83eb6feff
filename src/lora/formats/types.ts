import type { SafetensorsDtype } from '../../io/dtypes.js';
import type { TensorEntry } from '../../io/safetensors.js';
import type { HostTensor } from '../../nn/module.js';
import type { LoraWeights } from '../weights.js';

export const LORA_FORMAT_NAMES = ['peft', 'kohya', 'comfy', 'diffusers'] as const;
export type LoraFormatName = (typeof LORA_FORMAT_NAMES)[number];

/** What a writer may record about the training run (kohya `ss_*` keys and friends). */
export interface LoraWriteOptions {
  /** Float dtype of the stored tensors (default F32). */
  dtype?: Extract<SafetensorsDtype, 'F32' | 'F16' | 'BF16'>;
  /** Base model id, e.g. `DiT-XL/2` (kohya ss_base_model_version, PEFT base_model_name_or_path). */
  baseModel?: string;
  outputName?: string;
  trainingComment?: string;
  /** kohya ss_tag_frequency: dataset folder → tag → count. */
  tagFrequency?: Record<string, Record<string, number>>;
  /** Extra `ss_*` keys (kohya) as the trainer knows them; values are stringified. */
  trainingMetadata?: Record<string, string | number | boolean>;
  /** Module-name targets the adapters were created with (recorded in the config metadata). */
  targets?: readonly string[];
}

/** Tensors to read from an open file. */
export interface LoraSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  names(): string[];
  read(name: string): HostTensor;
}

export interface LoraReadOptions {
  /** Module names of the base model, to resolve kohya's `_`-joined names exactly. */
  moduleNames?: ReadonlySet<string>;
}

/**
 * One file layout. `detect` looks at tensor names and metadata only; `read` returns modules named as
 * the base model (official DiT) names them, with alpha such that alpha/r is the applied scale.
 */
export interface LoraFormat {
  readonly name: LoraFormatName;
  readonly description: string;
  /** True when the file's keys are this layout. */
  detect(names: readonly string[], metadata: Record<string, string>): boolean;
  read(src: LoraSource, opts: LoraReadOptions): LoraWeights;
  write(lora: LoraWeights, opts: LoraWriteOptions): { tensors: Map<string, TensorEntry>; metadata: Record<string, string> };
}
