import { z } from 'zod';
import { tf } from '../backend/tf.js';
import { Adam, AdamW, isNoDecayParam, Optimizer, ParamGroupRule, SGD } from './optim.js';
import { makeSchedule, Schedule } from './schedule.js';

/**
 * The optimizer and schedule sections every training recipe kind shares, and how they become live
 * objects. `lr` is passed in because kinds differ in it (one value, or one per stage); callers add
 * `.prefault({})` so the section may be left out.
 */
export function optimizerSchema<L extends z.ZodType>(lr: L) {
  return z
    .strictObject({
      type: z.enum(['adamw', 'adam', 'sgd']).default('adamw'),
      lr,
      betas: z.tuple([z.number(), z.number()]).default([0.9, 0.99]),
      weight_decay: z.number().min(0).default(0.01),
      momentum: z.number().min(0).default(0.9),
      eps: z.number().positive().default(1e-8),
    });
}

export function scheduleSchema(defaultWarmup: number) {
  return z
    .strictObject({
      type: z.enum(['constant', 'linear', 'cosine']).default('cosine'),
      warmup_steps: z.number().int().min(0).default(defaultWarmup),
      min_lr_ratio: z.number().min(0).max(1).default(0.1),
    })
    .prefault({});
}

export interface OptimizerSettings {
  type: 'adamw' | 'adam' | 'sgd';
  betas: [number, number];
  weight_decay: number;
  momentum: number;
  eps: number;
}

export interface ScheduleSettings {
  type: 'constant' | 'linear' | 'cosine';
  warmup_steps: number;
  min_lr_ratio: number;
}

/** Biases, norm scales and embeddings never decay; `extra` rules come first (first match wins). */
export function makeOptimizer(o: OptimizerSettings, params: Map<string, tf.Variable>, extra: ParamGroupRule[] = []): Optimizer {
  const groups = [...extra, { match: isNoDecayParam, weightDecay: 0 }];
  if (o.type === 'adamw') return new AdamW(params, { betas: o.betas, eps: o.eps, weightDecay: o.weight_decay, groups });
  if (o.type === 'adam') return new Adam(params, { betas: o.betas, eps: o.eps, weightDecay: o.weight_decay, groups });
  return new SGD(params, { momentum: o.momentum, weightDecay: o.weight_decay, groups });
}

/** The lr for each step of a phase of `steps` optimizer steps peaking at `lr` (warm-up clipped to fit). */
export function phaseSchedule(s: ScheduleSettings, lr: number, steps: number): Schedule {
  return makeSchedule({ kind: s.type, baseLr: lr, warmupSteps: Math.min(s.warmup_steps, Math.max(0, steps - 1)), totalSteps: steps, minLr: lr * s.min_lr_ratio });
}

/**
 * Gradient clipping by global norm: the max norm, 0 = off. Kept in every recipe kind so a config
 * can switch clipping off (`grad_clip: 0`), which an optional key with a default could never do.
 */
export function gradClipSchema(defaultMaxNorm: number) {
  return z.number().min(0).default(defaultMaxNorm).describe('max global gradient norm; 0 turns clipping off');
}

/**
 * "One value or one per stage", the one rule every per-stage key follows: a single value (or a
 * one-item list) applies to every stage; otherwise the list must have exactly one entry per stage.
 * Lengths are checked against the stage count by `checkPerStage` in the recipe schema, so a wrong
 * length is a config error with file:line before anything is built.
 */
export function perStageSchema<T extends z.ZodType<number>>(item: T) {
  return z.union([item, z.array(item).min(1)]);
}

export type PerStage = number | number[];

/** The value stage `stage` uses (the list was checked to have one entry or one per stage). */
export function perStageValue(v: PerStage, stage: number): number {
  if (typeof v === 'number') return v;
  const x = v.length === 1 ? v[0] : v[stage];
  if (x === undefined) throw new RangeError(`per-stage list of ${v.length} values has no entry for stage ${stage}`);
  return x;
}

/**
 * Adds a located issue to a schema refinement when a per-stage list at `path` has neither one
 * entry nor `stages` entries. `what` names the stage count's source for the message.
 */
export function checkPerStage(ctx: z.RefinementCtx, path: (string | number)[], v: PerStage | undefined, stages: number, what: string): void {
  if (v === undefined || typeof v === 'number' || v.length === 1 || v.length === stages) return;
  ctx.addIssue({
    code: 'custom',
    path,
    message: `expected one value or one per stage (${stages}, the length of ${what}), got a list of ${v.length}`,
  });
}

/**
 * The `log:` keys every trainer's session reads (how often to log, sample and checkpoint, how many
 * checkpoints to keep), with a job's own defaults; a job adds its extra keys to the returned shape.
 */
export function logShape(d: { sample_every: number; checkpoint_every: number; keep_last: number }) {
  const positive = z.number().int().positive();
  return {
    every: positive.default(10),
    sample_every: positive.default(d.sample_every),
    checkpoint_every: positive.default(d.checkpoint_every),
    keep_last: positive.default(d.keep_last),
  };
}
