import fs from 'node:fs';
import { readSafetensorsHeader, loadSafetensors, saveSafetensors, type TensorEntry } from '../io/safetensors.js';
import type { HostTensor, Module } from '../nn/module.js';
import { UsageError } from '../util/errors.js';
import { ditConfigs } from '../models/dit/config.js';
import { readLoraFile } from './formats/index.js';
import { type AppliedLoras, type LoraSpec, type LoraWeights, applyLoras, loraRank, parseLoraSpec } from './weights.js';

/** Read `FILE[:strength]` specs (any format); module names resolved against `moduleNames` when given. */
export function loadLoraSpecs(specs: readonly string[], moduleNames?: ReadonlySet<string>): LoraSpec[] {
  return specs.map((spec) => {
    const { file, strength } = parseLoraSpec(spec);
    if (!Number.isFinite(strength)) throw new UsageError(`--lora ${spec}: the strength after ':' must be a number`);
    return { lora: readLoraFile(file, { moduleNames }).lora, strength, label: file };
  });
}

/** For `sample --lora FILE[:strength]` (repeatable): apply the LoRAs to a live model; `remove()` undoes it exactly. */
export function applyLoraFiles(model: Module, specs: readonly string[]): AppliedLoras {
  const names = new Set([...model.namedModules()].map(([n]) => n));
  return applyLoras(model, loadLoraSpecs(specs, names));
}

/** A base checkpoint as host tensors plus each tensor's stored dtype (so a merge writes the same dtypes back). */
export function readBaseCheckpoint(file: string): { state: Map<string, HostTensor>; dtypes: Map<string, string> } {
  if (!fs.existsSync(file)) throw new UsageError(`${file}: no such base checkpoint`);
  const header = readSafetensorsHeader(file);
  return { state: loadSafetensors(file), dtypes: new Map(Object.entries(header.tensors).map(([k, t]) => [k, t.dtype])) };
}

export async function writeCheckpoint(file: string, state: ReadonlyMap<string, HostTensor>, dtypes: ReadonlyMap<string, string>, metadata?: Record<string, string>): Promise<void> {
  const entries = new Map<string, TensorEntry>();
  for (const [k, t] of state) {
    const dtype = dtypes.get(k);
    const keep = dtype === 'F16' || dtype === 'BF16' || dtype === 'F32' || dtype === 'I32';
    entries.set(k, { shape: [...t.shape], data: t.data, ...(keep ? { dtype: dtype as TensorEntry['dtype'] } : {}) });
  }
  await saveSafetensors(file, entries, metadata);
}

/** Which official DiT trunk a LoRA's module names and shapes fit: depth from block indices, width from the inputs. */
export function guessDitBase(lora: LoraWeights): string {
  let depth = 0;
  let hidden: number | undefined;
  for (const [name, m] of lora.modules) {
    const b = /^blocks\.(\d+)\./.exec(name);
    if (b) depth = Math.max(depth, Number(b[1]) + 1);
    if (/attn\.(qkv|proj)$/.test(name)) hidden = m.down.shape[1];
  }
  if (hidden === undefined) return depth ? `a DiT with at least ${depth} blocks` : 'unknown (no block modules)';
  const variants = Object.entries(ditConfigs)
    .filter(([, c]) => c.hiddenSize === hidden && c.depth >= depth)
    .map(([n]) => n);
  const trunks = [...new Set(variants.map((v) => v.replace(/\/\d+$/, '/*')))];
  return `DiT, hidden ${hidden}, ≥ ${depth} blocks${trunks.length ? ` (${trunks.join(', ')})` : ''}`;
}

export interface LoraModuleSummary {
  module: string;
  rank: number;
  alpha: number;
  scale: number;
  dora: boolean;
  down: number[];
  up: number[];
}

export function summarizeModules(lora: LoraWeights): LoraModuleSummary[] {
  return [...lora.modules]
    .sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))
    .map(([module, m]) => ({
      module,
      rank: loraRank(m),
      alpha: m.alpha,
      scale: m.alpha / loraRank(m),
      dora: m.magnitude !== undefined,
      down: [...m.down.shape],
      up: [...m.up.shape],
    }));
}

/** The distinct module kinds adapted, `attn.qkv`, `mlp.fc1`, … (block index dropped). */
export function loraTargets(lora: LoraWeights): string[] {
  return [...new Set([...lora.modules.keys()].map((n) => n.replace(/^blocks\.\d+\./, '')))].sort();
}
