import { tf } from '../backend/tf.js';
import { Conv2d } from '../nn/conv.js';
import { Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import { Rng } from '../util/rng.js';
import { LoraConv2d } from './lora_conv.js';
import { LoraLinear, type LoraLayerOptions } from './lora_linear.js';
import type { LoraModuleWeights, LoraWeights } from './weights.js';

/** The usual DiT targets: attention in/out projections and both MLP layers of every block. */
export const DIT_LORA_TARGETS: readonly string[] = ['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'];

/**
 * Optional extra DiT targets by name: adaLN modulation of every block (and the final layer), the
 * cross-attention projections of text-conditioned variants, the patch-embedding convolution.
 */
export const DIT_LORA_EXTRA_TARGETS: Readonly<Record<string, readonly string[]>> = {
  adaln: ['adaLN_modulation.1'],
  cross_attn: ['cross_attn.to_q', 'cross_attn.to_k', 'cross_attn.to_v', 'cross_attn.to_out.0'],
  patch_embed: ['x_embedder.proj'],
};

export type LoraTarget = string | RegExp;

export interface LoraConfig extends Omit<LoraLayerOptions, 'rng'> {
  /**
   * Which layers get an adapter, PEFT's target_modules: a string matches a module whose dotted name
   * equals it or ends with `.` + it; a RegExp must match the whole name. Linear and Conv2d layers only.
   */
  targets: readonly LoraTarget[];
  /** Modules never adapted even when a target matches (PEFT exclude_modules). */
  exclude?: readonly LoraTarget[];
  /** Rank per module, PEFT rank_pattern: key = regex matched against the end of the module name at a `.` boundary. */
  rankPattern?: Readonly<Record<string, number>>;
  /** alpha per module, PEFT alpha_pattern (same matching). */
  alphaPattern?: Readonly<Record<string, number>>;
  /**
   * Extra base parameters (full dotted parameter names, same matching as targets, e.g. `adaLN_modulation.1.bias`)
   * left trainable next to the adapters; they are reported by `extraParameters()`.
   */
  trainable?: readonly LoraTarget[];
  /** Seed material for the A matrices (each layer draws from its own stream, keyed by its name). */
  rng?: Rng;
}

export function matchesLoraTarget(name: string, targets: readonly LoraTarget[]): boolean {
  return targets.some((t) =>
    typeof t === 'string' ? name === t || name.endsWith(`.${t}`) : new RegExp(`^(?:${t.source})$`, t.flags.replace(/[gy]/g, '')).test(name),
  );
}

/** The first pattern key matching `name` PEFT's way (`(.*\.)?(key)$`), or undefined. */
export function patternValue<T>(name: string, patterns: Readonly<Record<string, T>> | undefined): T | undefined {
  if (!patterns) return undefined;
  for (const [key, value] of Object.entries(patterns)) if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(name)) return value;
  return undefined;
}

export type LoraLayer = LoraLinear | LoraConv2d;

/**
 * A model with LoRA adapters injected: the base weights are frozen (PEFT's default), so the model's
 * `trainableParameters()` are exactly the adapters' A and B (and DoRA magnitudes).
 */
export class LoraModel {
  /** Values of the extra trainable parameters at injection, so saving writes trained − base. */
  private extraStart = new Map<string, Float32Array>();

  constructor(
    readonly model: Module,
    /** Adapters by the name of the layer they sit on, e.g. `blocks.0.attn.qkv`. */
    readonly adapters: ReadonlyMap<string, LoraLayer>,
    private readonly wasTrainable: ReadonlyMap<tf.Variable, boolean>,
    readonly config: LoraConfig,
  ) {}

  /** A, B (and the DoRA magnitude) by their PEFT state-dict names (`blocks.0.attn.qkv.lora_A.weight`, …). */
  parameters(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [name, a] of this.adapters) {
      out.set(`${name}.lora_A.weight`, a.loraA.weight);
      out.set(`${name}.lora_B.weight`, a.loraB.weight);
      if (a.magnitude) out.set(`${name}.lora_magnitude_vector`, a.magnitude.weight);
    }
    return out;
  }

  /** Host copies of the adapters with alpha in kohya's sense (scale · r), ready for any file format. */
  toWeights(metadata: Record<string, string> = {}): LoraWeights {
    const modules = new Map<string, LoraModuleWeights>();
    for (const [name, a] of this.adapters) {
      const host = (t: tf.Tensor) => ({ shape: [...t.shape], data: Float32Array.from(t.dataSync()) });
      modules.set(name, {
        down: host(a.loraA.weight),
        up: host(a.loraB.weight),
        alpha: a.scaling * a.r,
        ...(a.magnitude ? { magnitude: host(a.magnitude.weight) } : {}),
      });
    }
    const diffs = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, v] of this.extraParameters()) {
      const start = this.extraStart.get(name);
      if (!start) continue;
      const now = v.dataSync();
      diffs.set(name, { shape: [...v.shape], data: Float32Array.from(now, (x, i) => x - start[i]!) });
    }
    return { modules, metadata: { ...metadata }, ...(diffs.size ? { diffs } : {}) };
  }

  /** Remember the extra parameters' current values as the base their saved differences are taken from. */
  snapshotExtras(): void {
    this.extraStart = new Map([...this.extraParameters()].map(([k, v]) => [k, Float32Array.from(v.dataSync())]));
  }

  /** Base parameters chosen to train along (config.trainable), by name. */
  extraParameters(): Map<string, tf.Variable> {
    const wanted = this.config.trainable ?? [];
    return new Map([...this.model.namedParameters()].filter(([name]) => !name.includes('lora_') && wanted.length > 0 && matchesLoraTarget(name, wanted)));
  }

  /** Everything the optimizer updates: the adapters, then the chosen extra parameters. */
  trainableParameters(): Map<string, tf.Variable> {
    return new Map([...this.parameters(), ...this.extraParameters()]);
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
   * `fn` run on the base model alone, every branch back on afterwards (when its promise settles, for
   * an async fn), even if it throws (PEFT's `with model.disable_adapter():`).
   */
  withAdaptersDisabled<T>(fn: () => T): T {
    this.setEnabled(false);
    let result: T;
    try {
      result = fn();
    } catch (e) {
      this.setEnabled(true);
      throw e;
    }
    if (result instanceof Promise) return result.finally(() => this.setEnabled(true)) as T;
    this.setEnabled(true);
    return result;
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

/**
 * Put a LoRA adapter on every Linear/Conv2d of `model` whose name matches `config.targets` (and no
 * `exclude`); freezes the rest. Rank and alpha per module come from rankPattern/alphaPattern, else r/alpha.
 */
export function injectLora(model: Module, config: LoraConfig): LoraModel {
  const exclude = config.exclude ?? [];
  const found = [...model.namedModules()].filter(
    ([name]) => name !== '' && matchesLoraTarget(name, config.targets) && !matchesLoraTarget(name, exclude),
  );
  if (found.length === 0) throw new Error(`LoRA: no module matches targets ${config.targets.map(String).join(', ')}`);
  const unsupported = found.filter(([, m]) => !(m instanceof Linear || m instanceof Conv2d)).map(([n, m]) => `${n} (${m.constructor.name})`);
  if (unsupported.length) throw new Error(`LoRA: only Linear and Conv2d layers can be adapted; targets matched ${unsupported.join(', ')}`);
  const wasTrainable = new Map([...model.namedParameters()].map(([, v]) => [v, v.trainable] as const));
  model.freeze();
  const rng = config.rng ?? new Rng(0);
  const adapters = new Map<string, LoraLayer>();
  for (const [name, m] of found) {
    const r = patternValue(name, config.rankPattern) ?? config.r;
    const alpha = patternValue(name, config.alphaPattern) ?? config.alpha ?? r;
    const opts: LoraLayerOptions = { ...config, r, alpha, rng: rng.fork(`lora:${name}`) };
    adapters.set(name, m instanceof Linear ? new LoraLinear(m, opts) : new LoraConv2d(m as Conv2d, opts));
  }
  const lm = new LoraModel(model, adapters, wasTrainable, config);
  if (config.trainable?.length) {
    const extra = lm.extraParameters();
    if (extra.size === 0) throw new Error(`LoRA: trainable patterns ${config.trainable.map(String).join(', ')} match no base parameter`);
    for (const v of extra.values()) v.trainable = true;
    lm.snapshotExtras();
  }
  return lm;
}
