import type { HostTensor } from '../../src/nn/module.js';
import { type LoraModuleWeights, type LoraWeights, loraDelta } from '../../src/lora/index.js';
import { Rng } from '../../src/util/rng.js';

export function randomHost(shape: number[], rng: Rng, std = 0.5): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: rng.fillNormal(new Float32Array(n), 0, std) };
}

/** A LoRA with non-zero A and B for the given modules: name → [out, in, r, alpha]. */
export function randomLora(spec: Record<string, [number, number, number, number]>, seed = 1): LoraWeights {
  const rng = new Rng(seed);
  const modules = new Map<string, LoraModuleWeights>();
  for (const [name, [out, inF, r, alpha]] of Object.entries(spec)) {
    modules.set(name, { down: randomHost([r, inF], rng), up: randomHost([out, r], rng), alpha });
  }
  return { modules, metadata: {} };
}

/** The DiT-tiny/2 fixture's main targets (hidden 32, MLP 128), two blocks. */
export function tinyDitLoraSpec(r = 4, alpha = 2): Record<string, [number, number, number, number]> {
  const spec: Record<string, [number, number, number, number]> = {};
  for (const b of [0, 1]) {
    spec[`blocks.${b}.attn.qkv`] = [96, 32, r, alpha];
    spec[`blocks.${b}.attn.proj`] = [32, 32, r, alpha];
    spec[`blocks.${b}.mlp.fc1`] = [128, 32, r, alpha];
    spec[`blocks.${b}.mlp.fc2`] = [32, 128, r, alpha];
  }
  return spec;
}

export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst / (scale || 1);
}

/** Effective update of every module, for comparing LoRAs across formats. */
export function deltas(lora: LoraWeights): Map<string, Float64Array> {
  return new Map([...lora.modules].map(([n, m]) => [n, loraDelta(m)]));
}
