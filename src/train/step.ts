import { tf } from '../backend/tf.js';
import type { EMA } from './ema.js';
import { clipByGlobalNorm, disposeGrads, GradAccumulator, globalNorm, gradsByParamName, type Grads } from './grad.js';
import type { DynamicLossScaler } from './loss_scaler.js';
import type { Optimizer } from './optim.js';

/**
 * One optimizer step, the same for every trainer:
 *   for each micro-batch: loss → (× loss scale) → grads, summed
 *   → mean over micro-batches → unscale (skip the step on inf/NaN) → clip by global norm
 *   → optimizer step → EMA update.
 * A job only says how one micro-batch's loss is computed; everything numeric around it lives here
 * once, so accumulation, fp16 loss scaling and clipping behave identically in every job.
 */

/** What one micro-batch's loss function returns: the scalar to minimise, and optional parts to log. */
export type MicroLoss = tf.Scalar | { total: tf.Scalar; parts: Record<string, tf.Scalar> };

export interface MicroBatch {
  /** Runs inside tf.variableGrads (intermediates are freed): the micro-batch's mean loss, unscaled. */
  loss(): MicroLoss;
  /** Called once the gradients exist: free the micro-batch's inputs here. */
  done?(): void;
}

export interface StepFunctionOptions {
  /** The parameters this step trains, by name (the names optimizer and EMA state use). */
  params: Map<string, tf.Variable>;
  optimizer: Optimizer;
  ema?: EMA | null;
  /** Micro-batches per optimizer step; their gradients are averaged. */
  gradAccum?: number;
  /** Max global gradient norm; 0 = no clipping. */
  clip?: number;
  /** fp16 training: scales the loss, unscales the gradients, skips non-finite steps. */
  lossScaler?: DynamicLossScaler | null;
}

export interface StepResult {
  /** Mean loss over the micro-batches (unscaled). */
  loss: number;
  /** Mean of each logged loss part over the micro-batches. */
  parts: Record<string, number>;
  /** Global gradient norm before clipping; NaN for a skipped step. */
  gradNorm: number;
  /** True when the loss scaler found inf/NaN gradients and the update was skipped. */
  skipped: boolean;
  /** The loss scale after this step (fp16 only). */
  lossScale?: number;
}

export class StepFunction {
  private readonly varList: tf.Variable[];
  private readonly byVarName: Map<string, string>;
  readonly gradAccum: number;
  readonly clip: number;

  constructor(private readonly opts: StepFunctionOptions) {
    this.varList = [...opts.params.values()];
    this.byVarName = new Map([...opts.params].map(([name, v]) => [v.name, name]));
    this.gradAccum = opts.gradAccum ?? 1;
    this.clip = opts.clip ?? 0;
    if (!Number.isInteger(this.gradAccum) || this.gradAccum < 1) throw new RangeError(`gradAccum must be an integer ≥ 1, got ${this.gradAccum}`);
    if (!(this.clip >= 0)) throw new RangeError(`clip must be ≥ 0 (0 = off), got ${this.clip}`);
  }

  /** One optimizer step at learning rate `lr`; `micro(i)` prepares micro-batch i (in order). */
  async run(lr: number, micro: (i: number) => MicroBatch | Promise<MicroBatch>): Promise<StepResult> {
    const scaler = this.opts.lossScaler ?? null;
    const accum = this.gradAccum > 1 ? new GradAccumulator() : null;
    let single: Grads | null = null;
    let lossSum = 0;
    const partSums: Record<string, number> = {};
    for (let i = 0; i < this.gradAccum; i++) {
      const mb = await micro(i);
      const parts: [string, tf.Scalar][] = [];
      const scale = scaler ? scaler.scale : 1;
      const { value, grads } = tf.variableGrads(() => {
        const out = mb.loss();
        let total: tf.Scalar;
        if (out instanceof tf.Tensor) total = out;
        else {
          total = out.total;
          for (const [name, t] of Object.entries(out.parts)) parts.push([name, tf.keep(t)]);
        }
        return scaler ? (scaler.scaleLoss(total) as tf.Scalar) : total;
      }, this.varList);
      mb.done?.();
      lossSum += (await value.data())[0]! / scale;
      value.dispose();
      for (const [name, t] of parts) partSums[name] = (partSums[name] ?? 0) + (await t.data())[0]!;
      tf.dispose(parts.map(([, t]) => t));
      const named = gradsByParamName(grads, this.byVarName);
      if (accum) {
        accum.add(named);
        disposeGrads(named);
      } else single = named;
    }
    let grads = accum ? accum.takeMean() : single!;
    accum?.dispose();
    let skipped = false;
    if (scaler) {
      const un = scaler.unscale(grads);
      disposeGrads(grads);
      grads = un.grads;
      skipped = scaler.update(un.finite);
    }
    let gradNorm: number;
    if (skipped) gradNorm = NaN;
    else if (this.clip > 0) {
      const clipped = clipByGlobalNorm(grads, this.clip);
      if (clipped.grads !== grads) disposeGrads(grads);
      grads = clipped.grads;
      gradNorm = clipped.norm;
    } else gradNorm = globalNorm(grads);
    if (!skipped) {
      this.opts.optimizer.step(grads, lr);
      this.opts.ema?.update();
    }
    disposeGrads(grads);
    const parts: Record<string, number> = {};
    for (const [name, s] of Object.entries(partSums)) parts[name] = s / this.gradAccum;
    return { loss: lossSum / this.gradAccum, parts, gradNorm, skipped, ...(scaler ? { lossScale: scaler.scale } : {}) };
  }
}
