import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { othersRunnable, runnableFromLoadavg, stateFromStat, ThreadGovernor } from '../src/backend/native/thread_governor.js';

describe('contention-aware thread count', () => {
  it('reads the run-queue count and a task state from /proc text, names with spaces and parentheses included', () => {
    expect(runnableFromLoadavg('0.52 0.58 0.59 3/211 4242\n')).toBe(3);
    expect(runnableFromLoadavg('garbage')).toBeUndefined();
    expect(stateFromStat('4243 (node (worker) 2) R 4242 4242 0 0')).toBe('R');
    expect(stateFromStat('4244 (node) S 1 2 3')).toBe('S');
    expect(stateFromStat('no parenthesis')).toBeUndefined();
  });

  it("sees this process's own running threads in /proc/self/task (what othersRunnable subtracts)", async () => {
    if (othersRunnable() === undefined) return; // no /proc here
    const ownRunning = () =>
      readdirSync('/proc/self/task').filter((tid) => {
        try {
          return stateFromStat(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')) === 'R';
        } catch {
          return false;
        }
      }).length;
    const { Worker } = await import('node:worker_threads');
    const w = new Worker('const end = Date.now() + 400; while (Date.now() < end) {}', { eval: true });
    await new Promise((r) => setTimeout(r, 100));
    // The reading (main) thread and the spinning worker are both in state R.
    expect(ownRunning()).toBeGreaterThanOrEqual(2);
    await w.terminate();
  });

  function scripted(samples: number[], maxThreads = 2) {
    const applied: [number, string][] = [];
    let t = 0;
    let i = 0;
    const g = new ThreadGovernor({ maxThreads, sample: () => samples[i++], apply: (n, why) => applied.push([n, why]), now: () => (t += 100) });
    return { g, applied, run: (n: number) => Array.from({ length: n }, () => (g.tick(), g.threads)) };
  }

  it('drops to the free cores after two contended samples and comes back after three free ones', () => {
    const { run, applied } = scripted([0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]);
    // one contended sample between free ones changes nothing; two in a row do; three free bring it back
    expect(run(13)).toEqual([2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
    expect(applied.map(([n]) => n)).toEqual([1, 2]);
    expect(applied[0]![1]).toMatch(/1 core\(s\) busy with other processes/);
  });

  it('never goes below one thread, and follows partial contention on a bigger machine', () => {
    expect(scripted([5, 5, 5]).run(3)).toEqual([2, 1, 1]);
    expect(scripted([2, 2, 2, 2, 0, 0, 0], 8).run(7)).toEqual([8, 6, 6, 6, 6, 6, 8]);
  });

  it('samples at most every minIntervalMs and ignores missing readings', () => {
    let calls = 0;
    const g = new ThreadGovernor({ maxThreads: 2, sample: () => (calls++, undefined), apply: () => undefined, now: () => 0 });
    g.tick();
    g.tick();
    expect(calls).toBe(1);
    expect(g.threads).toBe(2);
    // With the real clock and /proc, as the trainer ticks it.
    const live = new ThreadGovernor({ maxThreads: 2, sample: othersRunnable, apply: () => undefined });
    for (let i = 0; i < 3; i++) live.tick();
    expect([1, 2]).toContain(live.threads);
  });
});
