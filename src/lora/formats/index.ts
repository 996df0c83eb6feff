import fs from 'node:fs';
import { saveSafetensors, SafetensorsFile } from '../../io/safetensors.js';
import { JobError, UsageError } from '../../util/errors.js';
import type { LoraWeights } from '../weights.js';
import { comfyFormat } from './comfy.js';
import { ditDiffusersNaming } from './dit_diffusers_names.js';
import { kohyaFormat } from './kohya.js';
import { isPeftStyle, peftFormat, peftStyleFormat } from './peft.js';
import { LORA_FORMAT_NAMES, type LoraFormat, type LoraFormatName, type LoraReadOptions, type LoraWriteOptions } from './types.js';

export { kohyaHashes } from './kohya_hash.js';
export { kohyaFlatToModule, kohyaName } from './kohya.js';
export { LORA_ADAPTER_METADATA_KEY } from './peft.js';
export { officialToDiffusers } from './dit_diffusers_names.js';
export * from './types.js';

const diffusersFormat: LoraFormat = peftStyleFormat({
  name: 'diffusers',
  description: "diffusers DiTTransformer2DModel names (transformer_blocks.N.attn1.to_q …), fused qkv split exactly, config in lora_adapter_metadata",
  naming: ditDiffusersNaming,
  detect: (names) => isPeftStyle(names) && names.some((n) => /(^|\.)transformer_blocks\./.test(n)),
});

/** Every file layout by name; detection tries them in this order. */
export const LORA_FORMATS: ReadonlyMap<LoraFormatName, LoraFormat> = new Map(
  [kohyaFormat, comfyFormat, diffusersFormat, peftFormat].map((f) => [f.name, f] as const),
);

export function loraFormat(name: string): LoraFormat {
  const f = LORA_FORMATS.get(name as LoraFormatName);
  if (!f) throw new UsageError(`unknown LoRA format '${name}'; known: ${LORA_FORMAT_NAMES.join(', ')}`);
  return f;
}

/** The layout of a file from its tensor names and header alone. */
export function detectLoraFormat(names: readonly string[], metadata: Record<string, string>, file: string): LoraFormat {
  const hit = [...LORA_FORMATS.values()].find((f) => f.detect(names, metadata));
  if (!hit) {
    const sample = names.slice(0, 4).join(', ');
    throw new UsageError(
      `${file}: not a LoRA file in a known layout (${[...LORA_FORMATS.keys()].join(', ')}); ` +
        `expected keys like lora_unet_….lora_down.weight, diffusion_model.….lora_A.weight or transformer.….lora_A.weight, found ${names.length ? sample : 'no tensors'}`,
    );
  }
  return hit;
}

export interface ReadLoraResult {
  lora: LoraWeights;
  format: LoraFormat;
  fileBytes: number;
}

/** Read a LoRA file in any known layout (detected from its keys, or the one named). */
export function readLoraFile(file: string, opts: LoraReadOptions & { format?: LoraFormatName } = {}): ReadLoraResult {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new UsageError(`${file}: no such LoRA file`);
  }
  if (!stat.isFile()) throw new UsageError(`${file}: not a file`);
  const src = SafetensorsFile.open(file);
  try {
    const names = src.names();
    const format = opts.format ? loraFormat(opts.format) : detectLoraFormat(names, src.metadata, file);
    const lora = format.read(src, opts);
    if (lora.modules.size === 0) throw new JobError(`${file}: the file holds no LoRA modules`);
    return { lora, format, fileBytes: stat.size };
  } finally {
    src.close();
  }
}

/** Write `lora` in the named layout, atomically (a failed write leaves any previous file intact). */
export async function writeLoraFile(file: string, lora: LoraWeights, format: LoraFormatName, opts: LoraWriteOptions = {}): Promise<void> {
  const { tensors, metadata } = loraFormat(format).write(lora, opts);
  await saveSafetensors(file, tensors, metadata);
}
