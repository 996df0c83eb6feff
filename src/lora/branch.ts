import type { tf } from '../backend/tf.js';
import { Dropout } from '../nn/dropout.js';
import type { Module } from '../nn/module.js';
import type { Rng } from '../util/rng.js';

/** The children an adapter hangs on the layer it adapts, under PEFT's names. */
export interface LoraParts {
  loraA: Module;
  loraB: Module;
  dropout: Dropout | null;
  magnitude: Module | null;
}

export function checkRank(r: number): void {
  if (!(Number.isInteger(r) && r > 0)) throw new RangeError(`LoRA rank must be a positive integer, got ${r}`);
}

/** PEFT's lora_dropout on the branch input; null when p is 0. */
export function branchDropout(p: number | undefined, rng: Rng): Dropout | null {
  return (p ?? 0) > 0 ? new Dropout(p!, { rng: rng.fork('lora-dropout') }) : null;
}

export function attachLoraParts(base: Module, parts: LoraParts): void {
  base.attachModule('lora_A', parts.loraA);
  base.attachModule('lora_B', parts.loraB);
  if (parts.dropout) base.attachModule('lora_dropout', parts.dropout);
  if (parts.magnitude) base.attachModule('lora_magnitude_vector', parts.magnitude);
  parts.dropout?.train(base.training);
}

/** Detach and free the adapter's children. */
export function detachLoraParts(base: Module, parts: LoraParts): void {
  for (const name of ['lora_A', 'lora_B', 'lora_dropout', 'lora_magnitude_vector']) base.detachModule(name);
  parts.loraA.dispose();
  parts.loraB.dispose();
  parts.magnitude?.dispose();
}

/**
 * The branch's scale applied to its rank-r activations (B(s·A x) = s·B(A x): B has no bias), where it
 * costs r/out of the output-wide multiply; skipped at scale 1.
 */
export function scaleBy<T extends tf.Tensor>(h: T, scale: number): T {
  return scale === 1 ? h : (h.mul(scale) as T);
}
