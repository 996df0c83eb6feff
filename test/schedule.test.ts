import { describe, expect, it } from 'vitest';
import { makeSchedule, phasedSchedule } from '../src/train/schedule.js';

describe('makeSchedule (HF get_*_schedule_with_warmup step convention)', () => {
  it('cosine with warmup: 0 at step 0, linear ramp, half-cosine to zero', () => {
    const lr = makeSchedule({ kind: 'cosine', baseLr: 1e-3, warmupSteps: 10, totalSteps: 110 });
    expect(lr(0)).toBe(0);
    expect(lr(5)).toBeCloseTo(5e-4, 15);
    expect(lr(10)).toBeCloseTo(1e-3, 15);
    // progress 1/4: ½(1 + cos π/4) = ½ + √2/4 ≈ 0.853553
    expect(lr(35)).toBeCloseTo(0.8535533905932737e-3, 15);
    expect(lr(60)).toBeCloseTo(5e-4, 15);
    expect(lr(110)).toBeCloseTo(0, 15);
    // clamped past the end instead of rising again
    expect(lr(160)).toBeCloseTo(0, 15);
  });

  it('cosine to a floor: min + (base − min)·½(1 + cos πp)', () => {
    const lr = makeSchedule({ kind: 'cosine', baseLr: 1e-3, warmupSteps: 10, totalSteps: 110, minLr: 1e-4 });
    expect(lr(60)).toBeCloseTo(5.5e-4, 15);
    expect(lr(110)).toBeCloseTo(1e-4, 15);
    expect(lr(10_000)).toBeCloseTo(1e-4, 15);
    expect(lr(3)).toBeCloseTo(3e-4, 15); // warmup ramps from 0, not from minLr, as in HF
  });

  it('linear with warmup matches (total − step)/(total − warmup)', () => {
    const lr = makeSchedule({ kind: 'linear', baseLr: 2, warmupSteps: 4, totalSteps: 12 });
    expect([0, 2, 4, 8, 11, 12, 20].map(lr)).toEqual([0, 1, 2, 1, 0.25, 0, 0]);
  });

  it('constant with warmup', () => {
    const lr = makeSchedule({ kind: 'constant', baseLr: 0.3, warmupSteps: 3 });
    const expected = [0, 0.1, 0.2, 0.3, 0.3];
    [0, 1, 2, 3, 100].forEach((step, i) => expect(lr(step)).toBeCloseTo(expected[i]!, 15));
    const flat = makeSchedule({ kind: 'constant', baseLr: 0.3 });
    expect(flat(0)).toBe(0.3);
  });

  it('rejects bad configurations with the offending field named', () => {
    expect(() => makeSchedule({ kind: 'cosine', baseLr: 1 })).toThrow(/totalSteps/);
    expect(() => makeSchedule({ kind: 'linear', baseLr: 1, warmupSteps: 10, totalSteps: 5 })).toThrow(/totalSteps ≥ warmupSteps/);
    expect(() => makeSchedule({ kind: 'cosine', baseLr: 1, totalSteps: 5, minLr: 2 })).toThrow(/minLr/);
    expect(() => makeSchedule({ kind: 'step' as never, baseLr: 1 })).toThrow(/unknown schedule kind 'step'/);
    expect(() => makeSchedule({ kind: 'constant', baseLr: 1 })(-1)).toThrow(/step/);
  });
});

describe('phasedSchedule', () => {
  it('restarts warmup at each phase and reports the local step', () => {
    const at = phasedSchedule([
      { steps: 5, schedule: makeSchedule({ kind: 'constant', baseLr: 1, warmupSteps: 2 }) },
      { steps: 4, schedule: makeSchedule({ kind: 'linear', baseLr: 0.8, warmupSteps: 2, totalSteps: 4 }) },
    ]);
    expect(at(1)).toEqual({ phase: 0, localStep: 1, lr: 0.5 });
    expect(at(4)).toEqual({ phase: 0, localStep: 4, lr: 1 });
    expect(at(5)).toEqual({ phase: 1, localStep: 0, lr: 0 });
    expect(at(6)).toEqual({ phase: 1, localStep: 1, lr: 0.4 });
    expect(at(8)).toEqual({ phase: 1, localStep: 3, lr: 0.4 });
    expect(at(12)).toEqual({ phase: 1, localStep: 7, lr: 0 });
  });
});
