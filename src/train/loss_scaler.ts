import { tf } from '../backend/tf.js';
import { gradsAreFinite, type Grads } from './grad.js';

/**
 * Dynamic loss scaling with torch.amp.GradScaler's rules and defaults: the loss is multiplied by
 * `scale` before backprop so small fp16 gradients do not flush to zero; gradients are multiplied by
 * 1/scale afterwards. If any gradient is Inf/NaN the optimizer step is skipped and the scale is
 * multiplied by backoffFactor; after growthInterval consecutive finite steps it is multiplied by
 * growthFactor.
 */
export interface LossScalerOptions {
  initScale?: number;
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval?: number;
  /** Disabled (bf16/fp32): scale stays at 1; update still reports non-finite steps as to be skipped. */
  enabled?: boolean;
}

/** The same keys as torch GradScaler.state_dict(), so the numbers read the same in both worlds. */
export interface LossScalerState {
  scale: number;
  growth_factor: number;
  backoff_factor: number;
  growth_interval: number;
  _growth_tracker: number;
}

export class DynamicLossScaler {
  readonly enabled: boolean;
  private scaleValue: number;
  private growthFactor: number;
  private backoffFactor: number;
  private growthInterval: number;
  private growthTracker = 0;

  constructor(opts: LossScalerOptions = {}) {
    this.enabled = opts.enabled ?? true;
    this.scaleValue = this.enabled ? (opts.initScale ?? 2 ** 16) : 1;
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    if (!(this.scaleValue > 0)) throw new RangeError(`loss scaler initScale must be > 0, got ${this.scaleValue}`);
    if (!(this.growthFactor > 1)) throw new RangeError(`loss scaler growthFactor must be > 1, got ${this.growthFactor}`);
    if (!(this.backoffFactor > 0 && this.backoffFactor < 1)) throw new RangeError(`loss scaler backoffFactor must lie in (0, 1), got ${this.backoffFactor}`);
    if (!Number.isInteger(this.growthInterval) || this.growthInterval < 1) {
      throw new RangeError(`loss scaler growthInterval must be a positive integer, got ${this.growthInterval}`);
    }
  }

  get scale(): number {
    return this.scaleValue;
  }

  /** Consecutive finite steps since the last growth or backoff. */
  get growthTrackerValue(): number {
    return this.growthTracker;
  }

  /** loss · scale (a new tensor; use inside the function being differentiated). */
  scaleLoss(loss: tf.Tensor): tf.Tensor {
    return this.enabled ? loss.mul(this.scaleValue) : loss;
  }

  /**
   * Gradients multiplied by 1/scale (new tensors the caller owns; the inputs are left alone) and
   * whether all of them are finite. Clip after this, as with GradScaler.unscale_.
   */
  unscale(grads: Grads): { grads: Grads; finite: boolean } {
    // GradScaler takes the reciprocal in float64 and then rounds it to float32.
    const inv = Math.fround(1 / this.scaleValue);
    const out: Grads = new Map();
    for (const [k, g] of grads) out.set(k, this.enabled ? tf.tidy(() => g.mul(inv)) : g.clone());
    return { grads: out, finite: gradsAreFinite(out) };
  }

  /** Record the outcome of a step; returns true when the optimizer step must be skipped. */
  update(finite: boolean): boolean {
    if (!this.enabled) return !finite;
    if (!finite) {
      this.scaleValue *= this.backoffFactor;
      this.growthTracker = 0;
      return true;
    }
    const successful = this.growthTracker + 1;
    if (successful === this.growthInterval) {
      const grown = this.scaleValue * this.growthFactor;
      // torch keeps the old scale if growing would overflow float32.
      if (Number.isFinite(Math.fround(grown))) this.scaleValue = grown;
      this.growthTracker = 0;
    } else {
      this.growthTracker = successful;
    }
    return false;
  }

  stateDict(): LossScalerState {
    return {
      scale: this.scaleValue,
      growth_factor: this.growthFactor,
      backoff_factor: this.backoffFactor,
      growth_interval: this.growthInterval,
      _growth_tracker: this.growthTracker,
    };
  }

  loadStateDict(state: LossScalerState): void {
    for (const key of ['scale', 'growth_factor', 'backoff_factor', 'growth_interval', '_growth_tracker'] as const) {
      if (typeof state[key] !== 'number' || !Number.isFinite(state[key])) {
        throw new Error(`loss scaler state '${key}' must be a finite number, got ${JSON.stringify(state[key])}`);
      }
    }
    this.scaleValue = state.scale;
    this.growthFactor = state.growth_factor;
    this.backoffFactor = state.backoff_factor;
    this.growthInterval = state.growth_interval;
    this.growthTracker = state._growth_tracker;
  }
}
