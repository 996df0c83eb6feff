import { describe, expect, it } from 'vitest';
import { Progress, formatDuration, formatRate, formatValue } from '../src/util/progress.js';

class FakeStream {
  out = '';
  constructor(
    readonly isTTY: boolean,
    readonly columns = 200,
  ) {}
  write(s: string): boolean {
    this.out += s;
    return true;
  }
  /** What a terminal would show on its current line: everything after the last carriage return. */
  get screenLine(): string {
    const last = this.out.slice(this.out.lastIndexOf('\r') + 1);
    return last.replace('\x1b[K', '');
  }
}

function setup(isTTY: boolean, extra: Partial<ConstructorParameters<typeof Progress>[0]> = {}, columns = 200) {
  let t = 0;
  const stream = new FakeStream(isTTY, columns);
  const clock = {
    set: (ms: number) => (t = ms),
  };
  const p = new Progress({ total: 10, stream, now: () => t, redrawMs: 0, barWidth: 10, ...extra });
  return { p, stream, clock };
}

describe('formatting helpers', () => {
  it('formats durations, rates and values', () => {
    expect(formatDuration(118)).toBe('1:58');
    expect(formatDuration(59.6)).toBe('1:00');
    expect(formatDuration(3 * 3600 + 7 * 60 + 5)).toBe('3:07:05');
    expect(formatDuration(NaN)).toBe('--:--');
    expect(formatRate(3.21)).toBe('3.2 it/s');
    expect(formatRate(250)).toBe('250 it/s');
    expect(formatRate(1 / 4.5)).toBe('4.5 s/it');
    expect(formatValue(0.123)).toBe('0.123');
    expect(formatValue(0.123456)).toBe('0.1235');
    expect(formatValue(0.0000512)).toBe('5.12e-5');
    expect(formatValue(7)).toBe('7');
    expect(formatValue('stage 2')).toBe('stage 2');
  });
});

describe('rate and ETA', () => {
  it('uses an EMA of step time, weighting a k-step update like k single steps', () => {
    const { p, clock } = setup(false, { emaAlpha: 0.1 });
    clock.set(1000);
    p.update(1); // first sample: 1.0 s/step
    expect(p.rate).toBeCloseTo(1, 12);
    clock.set(1500);
    p.update(2); // 0.5 s: ema = 0.1*0.5 + 0.9*1.0 = 0.95
    expect(p.rate).toBeCloseTo(1 / 0.95, 12);
    clock.set(2500);
    p.update(4); // two steps of 0.5 s: weight 1 - 0.9^2 = 0.19 -> 0.19*0.5 + 0.81*0.95 = 0.8645
    expect(p.rate).toBeCloseTo(1 / 0.8645, 12);
    expect(p.etaSec).toBeCloseTo(6 * 0.8645, 12);
  });

  it('does not count the skipped steps of a resumed run', () => {
    const { p, clock } = setup(false, { total: 100, startStep: 90 });
    clock.set(2000);
    p.update(91); // 2 s for one step, not 2 s for 91
    expect(p.rate).toBeCloseTo(0.5, 12);
    expect(p.etaSec).toBeCloseTo(9 * 2, 12);
  });
});

describe('terminal output', () => {
  it('redraws one line in place with bar, counts, fields, rate and ETA', () => {
    const { p, stream, clock } = setup(true, { total: 500, barWidth: 10 });
    clock.set(250);
    p.update(1, { loss: 0.5 });
    clock.set(37_500);
    p.update(120, { loss: 0.123 });
    expect(stream.out).not.toContain('\n');
    // 24% of a 10-wide bar is 2 cells; the EMA after the 119-step update (0.313 s/step) sets rate and ETA.
    const ema = (1 - 0.9 ** 119) * ((37_500 - 250) / 119) + 0.9 ** 119 * 250;
    const expected = `[##........] 120/500 24% | loss 0.123 | ${formatRate(1000 / ema)} | ETA ${formatDuration((380 * ema) / 1000)}`;
    expect(stream.screenLine).toBe(expected);
    expect(formatRate(1000 / ema)).toBe('3.2 it/s');
    expect(formatDuration((380 * ema) / 1000)).toBe('1:59');
  });

  it('drops fields, then rate, then ETA to fit the terminal, and ends with a full summary line', () => {
    const { p, stream, clock } = setup(true, { total: 4, label: 'train' }, 60);
    clock.set(1000);
    p.update(2, { loss: 1.5, lr: 0.0001 }); // 500 ms per step
    expect(stream.screenLine).toBe('train [#####.....] 2/4 50% | loss 1.5 | 2.0 it/s | ETA 0:01');
    p.log('checkpoint saved');
    expect(stream.out).toContain('\r\x1b[Kcheckpoint saved\n');
    clock.set(8000);
    p.finish();
    // average over the whole run: 2 steps in 8 s
    expect(stream.out.split('\r').pop()).toBe('train done 2/4 in 0:08 (4.0 s/it) | loss 1.5 | lr 1.00e-4\x1b[K\n');

    const narrow = setup(true, { total: 4, label: 'train' }, 30);
    narrow.clock.set(1000);
    narrow.p.update(2, { loss: 1.5 });
    expect(narrow.stream.screenLine).toBe('train [#####.....] 2/4 50%');
  });
});

describe('plain output (not a terminal)', () => {
  it('never draws a bar and prints at most one line per minimum gap', () => {
    const { p, stream, clock } = setup(false, { total: 1000, intervalSec: 10, percentStep: 10, minGapSec: 5 });
    // 1000 steps at 20 ms each = 20 s: milestones every 2 s, but lines need 5 s between them.
    for (let s = 1; s <= 1000; s++) {
      clock.set(s * 20);
      p.update(s, { loss: 1 / s });
    }
    p.finish();
    const lines = stream.out.trimEnd().split('\n');
    expect(stream.out).not.toContain('\r');
    expect(stream.out).not.toContain('[#');
    // Milestones at 10%,20%.. arrive every 2 s; a line is allowed 5 s after the previous: at 6 s (30%), 12 s (60%),
    // 18 s (90%), then the final summary.
    expect(lines.map((l) => l.split(' | ')[0])).toEqual(['300/1000 30%', '600/1000 60%', '900/1000 90%', 'done 1000/1000 in 0:20 (50.0 it/s)']);
    expect(lines[0]).toBe(`300/1000 30% | loss ${formatValue(1 / 300)} | 50.0 it/s | ETA 0:14 | elapsed 0:06`);
  });

  it('prints every interval on a slow job even between milestones', () => {
    const { p, stream, clock } = setup(false, { total: 1000, intervalSec: 10, percentStep: 50, minGapSec: 5 });
    for (let s = 1; s <= 30; s++) {
      clock.set(s * 1000);
      p.update(s);
    }
    const lines = stream.out.trimEnd().split('\n');
    expect(lines.map((l) => l.split(' | ')[0])).toEqual(['10/1000 1%', '20/1000 2%', '30/1000 3%']);
    expect(lines[2]).toBe('30/1000 3% | 1.0 it/s | ETA 16:10 | elapsed 0:30');
  });
});
