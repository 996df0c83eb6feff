import { tf } from '../backend/tf.js';
import type { HostTensor, Module } from '../nn/module.js';

/**
 * How the decay ramps up over the first updates, so early shadows are not dominated by the random init:
 * - 'none': constant `decay`;
 * - 'num_updates': min(decay, (1 + n) / (10 + n)), TensorFlow ExponentialMovingAverage's num_updates rule
 *   (also diffusers EMAModel's default);
 * - { power, invGamma }: 1 − (1 + n / invGamma)^−power, diffusers' use_ema_warmup (power 2/3 or 3/4).
 * Here n is the number of updates made before the current one.
 */
export type EmaWarmup = 'none' | 'num_updates' | { power: number; invGamma?: number };

export interface EmaOptions {
  decay?: number;
  warmup?: EmaWarmup;
}

/**
 * Exponential moving average of a module's trainable parameters, kept by parameter name:
 * shadow ← shadow − (1 − d)·(shadow − param). Frozen parameters are not tracked (they do not change).
 */
export class EMA {
  readonly decay: number;
  readonly warmup: EmaWarmup;
  private readonly shadows = new Map<string, tf.Tensor>();
  private updates = 0;

  constructor(private readonly module: Module, opts: EmaOptions = {}) {
    this.decay = opts.decay ?? 0.9999;
    this.warmup = opts.warmup ?? 'none';
    if (!(this.decay >= 0 && this.decay <= 1)) throw new RangeError(`EMA decay must lie in [0, 1], got ${this.decay}`);
    for (const [name, p] of module.trainableParameters()) this.shadows.set(name, tf.keep(p.clone()));
  }

  get numUpdates(): number {
    return this.updates;
  }

  /** The decay the next update will use. */
  currentDecay(): number {
    const n = this.updates;
    const w = this.warmup;
    if (w === 'none') return this.decay;
    if (w === 'num_updates') return Math.min(this.decay, (1 + n) / (10 + n));
    const d = 1 - (1 + n / (w.invGamma ?? 1)) ** -w.power;
    return Math.min(this.decay, Math.max(0, d));
  }

  /** Blend the module's current parameters into the shadows. */
  update(): void {
    const oneMinus = 1 - this.currentDecay();
    const params = this.module.trainableParameters();
    for (const [name, shadow] of this.shadows) {
      const p = params.get(name);
      if (!p) throw new Error(`EMA tracks '${name}' but the module no longer has it as a trainable parameter`);
      const next = tf.tidy(() => shadow.sub(shadow.sub(p).mul(oneMinus)));
      this.shadows.set(name, next);
      shadow.dispose();
    }
    this.updates++;
  }

  /** Write the shadows into `target` (the tracked module by default), e.g. before export. */
  copyTo(target: Module = this.module): void {
    const params = new Map(target.namedParameters());
    for (const [name, shadow] of this.shadows) {
      const p = params.get(name);
      if (!p) throw new Error(`EMA copyTo: target module has no parameter '${name}'`);
      p.assign(shadow);
    }
  }

  /**
   * Exchange shadows and live weights in the tracked module; call again to undo. Used to sample with
   * EMA weights in the middle of training without a second model in memory.
   */
  swap(): void {
    const params = this.module.trainableParameters();
    for (const [name, shadow] of this.shadows) {
      const p = params.get(name)!;
      const live = tf.keep(p.clone());
      p.assign(shadow);
      shadow.dispose();
      this.shadows.set(name, live);
    }
  }

  /** Run `fn` with EMA weights in the module, restoring the live ones afterwards even if it throws. */
  async withShadowWeights<T>(fn: () => T | Promise<T>): Promise<T> {
    this.swap();
    try {
      return await fn();
    } finally {
      this.swap();
    }
  }

  /** Shadow weights by parameter name (host copies); the update count travels separately (numUpdates). */
  stateDict(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [name, s] of this.shadows) out.set(name, { shape: [...s.shape], data: (s.dataSync() as Float32Array).slice() });
    return out;
  }

  loadStateDict(state: Map<string, HostTensor | tf.Tensor>, numUpdates: number): void {
    const missing = [...this.shadows.keys()].filter((k) => !state.has(k));
    const unexpected = [...state.keys()].filter((k) => !this.shadows.has(k));
    if (missing.length || unexpected.length) {
      throw new Error(`EMA state does not match the module: missing [${missing.join(', ')}], unexpected [${unexpected.join(', ')}]`);
    }
    for (const [name, s] of this.shadows) {
      const v = state.get(name)!;
      if (v.shape.length !== s.shape.length || v.shape.some((d, i) => d !== s.shape[i])) {
        throw new Error(`EMA state '${name}' has shape [${v.shape}], expected [${s.shape}]`);
      }
    }
    if (!Number.isInteger(numUpdates) || numUpdates < 0) throw new RangeError(`EMA numUpdates must be an integer ≥ 0, got ${numUpdates}`);
    for (const [name, s] of this.shadows) {
      const v = state.get(name)!;
      const t = v instanceof tf.Tensor ? v.clone() : tf.tensor(Float32Array.from(v.data), v.shape, 'float32');
      this.shadows.set(name, tf.keep(t));
      s.dispose();
    }
    this.updates = numUpdates;
  }

  dispose(): void {
    for (const s of this.shadows.values()) s.dispose();
    this.shadows.clear();
  }
}
