import { tf } from '../backend/tf.js';
import { Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import { Rng } from '../util/rng.js';
import { LoraLinear, type LoraLayerOptions } from './lora_linear.js';

/** The usual DiT targets: attention in/out projections and both MLP layers of every block. */
export const DIT_LORA_TARGETS: readonly string[] = ['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'];

export interface LoraConfig extends Omit<LoraLayerOptions, 'rng'> {
  /**
   * Which Linear layers get an adapter, PEFT's target_modules: a string matches a module whose
   * dotted name equals it or ends with `.` + it; a RegExp must match the whole name.
   */
  targets: readonly (string | RegExp)[];
  /** Seed material for the A matrices (each layer draws from its own stream, keyed by its name). */
  rng?: Rng;
}

export function matchesLoraTarget(name: string, targets: readonly (string | RegExp)[]): boolean {
  return targets.some((t) =>
    typeof t === 'string' ? name === t || name.endsWith(`.${t}`) : new RegExp(`^(?:${t.source})$`, t.flags.replace(/[gy]/g, '')).test(name),
  );
}

/**
 * A model with LoRA adapters injected: the base weights are frozen (PEFT's default), so the model's
 * `trainableParameters()` are exactly the adapters' A and B.
 */
export class LoraModel {
  constructor(
    readonly model: Module,
    /** Adapters by the name of the Linear they sit on, e.g. `blocks.0.attn.qkv`. */
    readonly adapters: ReadonlyMap<string, LoraLinear>,
    private readonly wasTrainable: ReadonlyMap<tf.Variable, boolean>,
  ) {}

  /** A and B by their state-dict names (`blocks.0.attn.qkv.lora_A.weight`, …). */
  parameters(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [name, a] of this.adapters) {
      out.set(`${name}.lora_A.weight`, a.loraA.weight);
      out.set(`${name}.lora_B.weight`, a.loraB.weight);
    }
    return out;
  }

  get merged(): boolean {
    return [...this.adapters.values()].some((a) => a.merged);
  }

  merge(): void {
    for (const a of this.adapters.values()) a.merge();
  }

  unmerge(): void {
    for (const a of this.adapters.values()) a.unmerge();
  }

  /** Switch every branch off (base model output) or back on, weights untouched. */
  setEnabled(enabled: boolean): void {
    for (const a of this.adapters.values()) a.enabled = enabled;
  }

  /**
   * Remove the adapters and give the base weights their trainable flags back. With merge: true the
   * update is folded in first (PEFT's merge_and_unload); otherwise the base model is as before.
   */
  unload(opts: { merge?: boolean } = {}): Module {
    for (const a of this.adapters.values()) {
      if (opts.merge) a.merge();
      else a.unmerge();
      a.remove();
    }
    for (const [v, trainable] of this.wasTrainable) v.trainable = trainable;
    return this.model;
  }
}

/** Put a LoRA adapter on every Linear of `model` whose name matches `config.targets`; freezes the rest. */
export function injectLora(model: Module, config: LoraConfig): LoraModel {
  const found = [...model.namedModules()].filter(([name]) => name !== '' && matchesLoraTarget(name, config.targets));
  if (found.length === 0) throw new Error(`LoRA: no module matches targets ${config.targets.map(String).join(', ')}`);
  const notLinear = found.filter(([, m]) => !(m instanceof Linear)).map(([n, m]) => `${n} (${m.constructor.name})`);
  if (notLinear.length) throw new Error(`LoRA: only Linear layers can be adapted; targets matched ${notLinear.join(', ')}`);
  const wasTrainable = new Map([...model.namedParameters()].map(([, v]) => [v, v.trainable] as const));
  model.freeze();
  const rng = config.rng ?? new Rng(0);
  const adapters = new Map<string, LoraLinear>();
  for (const [name, m] of found) adapters.set(name, new LoraLinear(m as Linear, { ...config, rng: rng.fork(`lora:${name}`) }));
  return new LoraModel(model, adapters, wasTrainable);
}
