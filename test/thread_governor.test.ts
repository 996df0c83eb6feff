import { existsSync } from 'node:fs';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { machineTicksFromStat, otherCoresSampler, processTicksFromStat, ThreadGovernor } from '../src/backend/native/thread_governor.js';

describe('contention-aware thread count', () => {
  it('reads busy/total CPU ticks from /proc/stat and a process\'s CPU ticks from its stat line, names with spaces and parentheses included', () => {
    const stat = 'cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\ncpu1 50 3 25 400 10 2 1 5 0 0\nintr 1 2\n';
    // busy = everything but idle (800) and iowait (20); steal (10) counts as busy.
    expect(machineTicksFromStat(stat)).toEqual({ busy: 170, total: 990, cpus: 2 });
    expect(machineTicksFromStat('garbage')).toBeUndefined();
    const line = '4243 (node (worker) 2) R 4242 4242 0 0 -1 4194560 100 0 0 0 731 42 0 0 20 0 9 0 1234 1000 200';
    expect(processTicksFromStat(line)).toBe(731 + 42);
    expect(processTicksFromStat('no parenthesis')).toBeUndefined();
  });

  it("counts other processes' CPU time over the interval, never this process's own", () => {
    // Two cores, 100 ticks each per interval. Interval 1: the machine was busy 150 ticks, 100 of them ours.
    const texts = [
      ['cpu  0 0 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n', 'p (x) R 1 1 1 1 1 1 0 0 0 0 0 0'],
      ['cpu  150 0 0 50 0 0 0 0\ncpu0 0\ncpu1 0\n', 'p (x) R 1 1 1 1 1 1 0 0 0 0 80 20'],
      // Interval 2: busy 200 of 200, ours 60: others 140 ticks of 200 = 1.4 cores.
      ['cpu  350 0 0 50 0 0 0 0\ncpu0 0\ncpu1 0\n', 'p (x) R 1 1 1 1 1 1 0 0 0 0 130 30'],
    ];
    let i = 0;
    const sample = otherCoresSampler((path) => texts[Math.floor(i++ / 2)]![path === '/proc/stat' ? 0 : 1]!);
    expect(sample()).toBeUndefined(); // the first call only sets the baseline
    expect(sample()).toBeCloseTo(0.5, 12);
    expect(sample()).toBeCloseTo(1.4, 12);
    expect(otherCoresSampler(() => 'not proc')()).toBeUndefined();
  });

  it('sees a busy child process as about one more core used by others', async () => {
    if (!existsSync('/proc/stat')) return; // not Linux
    const live = otherCoresSampler();
    live();
    const spin = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end);
    };
    spin(300);
    // Other test files run beside this one: the busy child must add about one core to whatever they use.
    const base = live();
    expect(base).toBeDefined();
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 100));
      live();
      await new Promise((r) => setTimeout(r, 400));
      expect(live()!).toBeGreaterThan(Math.min(base!, 1) + 0.4);
    } finally {
      child.kill('SIGKILL');
    }
    expect(base!).toBeLessThan(os.availableParallelism() + 0.2);
  });

  function scripted(samples: number[], maxThreads = 2) {
    const applied: [number, string][] = [];
    let t = 0;
    let i = 0;
    const g = new ThreadGovernor({ maxThreads, sample: () => samples[i++], apply: (n, why) => applied.push([n, why]), now: () => (t += 300) });
    return { g, applied, run: (n: number) => Array.from({ length: n }, () => (g.tick(), g.threads)) };
  }

  it('drops to the free cores at the first contended sample and comes back after two free ones', () => {
    // Fractions of a core round: 0.4 is free, 0.6 is a core taken.
    const { run, applied } = scripted([0, 0.4, 0.6, 1, 0, 1, 0, 0, 0.2, 1.2]);
    expect(run(10)).toEqual([2, 2, 1, 1, 1, 1, 1, 2, 2, 1]);
    expect(applied.map(([n]) => n)).toEqual([1, 2, 1]);
    expect(applied[0]![1]).toMatch(/1 core\(s\) busy with other processes/);
    expect(applied[1]![1]).toMatch(/free again/);
  });

  it('never goes below one thread, and follows partial contention on a bigger machine', () => {
    expect(scripted([5, 5, 5]).run(3)).toEqual([1, 1, 1]);
    expect(scripted([2, 2, 2, 0, 0, 0], 8).run(6)).toEqual([6, 6, 6, 6, 8, 8]);
  });

  it('samples at most every minIntervalMs and ignores missing readings', () => {
    let calls = 0;
    const g = new ThreadGovernor({ maxThreads: 2, sample: () => (calls++, undefined), apply: () => undefined, now: () => 0 });
    g.tick();
    g.tick();
    expect(calls).toBe(1);
    expect(g.threads).toBe(2);
    // With the real clock and /proc, as the trainer ticks it.
    const live = new ThreadGovernor({ maxThreads: 2, sample: otherCoresSampler(), apply: () => undefined });
    for (let i = 0; i < 3; i++) live.tick();
    expect([1, 2]).toContain(live.threads);
  });
});
