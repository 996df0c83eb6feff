/**
 * Learning-rate schedules as plain functions of the optimizer step.
 *
 * Step convention (that of Hugging Face `get_*_schedule_with_warmup` driving torch LambdaLR):
 * `step` is the 0-based index of the optimizer step about to be taken, so
 *   warmup:  lr(step) = base · step / max(1, warmup)            for step < warmup (step 0 gets lr 0)
 *   cosine:  lr(step) = min + (base − min) · ½(1 + cos(π·p))     p = (step − warmup) / max(1, total − warmup)
 *   linear:  lr(step) = min + (base − min) · (1 − p)
 *   constant: base after warmup.
 * With min = 0 these are exactly HF's get_cosine_schedule_with_warmup (num_cycles = 0.5) and
 * get_linear_schedule_with_warmup; the min-lr form matches get_cosine_with_min_lr_schedule_with_warmup.
 * One deliberate difference: p is clamped to 1, so past `totalSteps` the lr stays at `minLr`
 * (HF's cosine would climb back up).
 */

export type Schedule = (step: number) => number;

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleConfig {
  kind: ScheduleKind;
  baseLr: number;
  warmupSteps?: number;
  /** Required for linear and cosine: the step at which the decay reaches minLr. */
  totalSteps?: number;
  minLr?: number;
}

export function makeSchedule(cfg: ScheduleConfig): Schedule {
  const warmup = cfg.warmupSteps ?? 0;
  const minLr = cfg.minLr ?? 0;
  const base = cfg.baseLr;
  if (!(base >= 0) || !Number.isFinite(base)) throw new RangeError(`schedule baseLr must be a finite number ≥ 0, got ${base}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new RangeError(`schedule warmupSteps must be an integer ≥ 0, got ${warmup}`);
  if (!(minLr >= 0) || minLr > base) throw new RangeError(`schedule minLr must lie in [0, baseLr=${base}], got ${minLr}`);
  let decay: (progress: number) => number;
  switch (cfg.kind) {
    case 'constant':
      decay = () => 1;
      break;
    case 'linear':
      decay = (p) => 1 - p;
      break;
    case 'cosine':
      decay = (p) => 0.5 * (1 + Math.cos(Math.PI * p));
      break;
    default:
      throw new RangeError(`unknown schedule kind '${String((cfg as { kind: unknown }).kind)}' (expected constant, linear or cosine)`);
  }
  const total = cfg.totalSteps;
  if (cfg.kind !== 'constant' && (total === undefined || !Number.isInteger(total) || total < warmup)) {
    throw new RangeError(`a ${cfg.kind} schedule needs an integer totalSteps ≥ warmupSteps (${warmup}), got ${total}`);
  }
  const span = Math.max(1, (total ?? warmup) - warmup);
  return (step: number) => {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`schedule step must be an integer ≥ 0, got ${step}`);
    // base · (step / warmup), in that order, as LambdaLR multiplies base_lr by the lambda
    if (step < warmup) return base * (step / Math.max(1, warmup));
    if (cfg.kind === 'constant') return base;
    const p = Math.min(1, (step - warmup) / span);
    return minLr + (base - minLr) * decay(p);
  };
}

export interface Phase {
  /** Number of optimizer steps in this phase. */
  steps: number;
  schedule: Schedule;
}

export interface PhasePosition {
  phase: number;
  /** Step within the phase, the argument its schedule receives. */
  localStep: number;
  lr: number;
}

/**
 * Consecutive phases that each restart their own schedule (warmup included) at local step 0, as in
 * progressive training where every new resolution stage re-warms the LR. Steps beyond the last
 * phase stay in the last phase.
 */
export function phasedSchedule(phases: Phase[]): (globalStep: number) => PhasePosition {
  if (phases.length === 0) throw new RangeError('phasedSchedule needs at least one phase');
  for (const [i, p] of phases.entries()) {
    if (!Number.isInteger(p.steps) || p.steps <= 0) throw new RangeError(`phase ${i} steps must be a positive integer, got ${p.steps}`);
  }
  return (globalStep: number) => {
    if (!Number.isInteger(globalStep) || globalStep < 0) throw new RangeError(`schedule step must be an integer ≥ 0, got ${globalStep}`);
    let start = 0;
    for (let i = 0; i < phases.length; i++) {
      const p = phases[i]!;
      if (globalStep < start + p.steps || i === phases.length - 1) {
        const localStep = globalStep - start;
        return { phase: i, localStep, lr: p.schedule(localStep) };
      }
      start += p.steps;
    }
    throw new Error('unreachable');
  };
}
