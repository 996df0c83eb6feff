import { readdirSync, readFileSync } from 'node:fs';

/**
 * A thread count that follows contention. OpenMP teams wait at every barrier for their slowest
 * thread: when another process holds one of two cores, a 2-thread team waits a scheduler time slice
 * for its descheduled member at every kernel, and a training step takes 2.3× its idle time
 * (bench/threads.ts), slower than one thread would be. Between steps the governor counts the
 * runnable tasks on the machine that are not this process's (the kernel's run-queue count in
 * /proc/loadavg minus this process's threads in state R) and gives the team the cores left over:
 * down after two samples in a row see others running, back up after three see the cores free (a
 * compile that comes and goes should not flip it every step). Only for the automatic thread count:
 * SCALEFORGE_THREADS / OMP_NUM_THREADS / OPENBLAS_NUM_THREADS fix it, SCALEFORGE_ADAPTIVE_THREADS=0
 * turns it off.
 */

/** The run-queue count of /proc/loadavg ("0.52 0.58 0.59 3/211 4242": 3). */
export function runnableFromLoadavg(text: string): number | undefined {
  const m = /^\S+\s+\S+\s+\S+\s+(\d+)\/\d+/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** The state letter of a /proc/<pid>/task/<tid>/stat line (after the parenthesised name, which may hold spaces). */
export function stateFromStat(text: string): string | undefined {
  const close = text.lastIndexOf(')');
  return close < 0 ? undefined : text.charAt(close + 2) || undefined;
}

/** Runnable tasks on the machine that are not threads of this process; undefined where /proc cannot say. */
export function othersRunnable(): number | undefined {
  try {
    const all = runnableFromLoadavg(readFileSync('/proc/loadavg', 'utf8'));
    if (all === undefined) return undefined;
    let own = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        if (stateFromStat(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')) === 'R') own++;
      } catch {
        // The thread ended between the listing and the read.
      }
    }
    return Math.max(0, all - own);
  } catch {
    return undefined;
  }
}

export interface ThreadGovernorOptions {
  /** The team size when nothing else runs (the automatic choice). */
  maxThreads: number;
  /** Current other runnable tasks (othersRunnable in use; a scripted sequence in tests). */
  sample: () => number | undefined;
  /** Applies a new thread count. */
  apply: (threads: number, reason: string) => void;
  /** Shortest time between two samples, ms (a step is 10–300 ms; reading /proc costs ~0.1 ms). */
  minIntervalMs?: number;
  now?: () => number;
}

export class ThreadGovernor {
  private readonly recent: number[] = [];
  private last = -Infinity;
  private current: number;

  constructor(private readonly o: ThreadGovernorOptions) {
    this.current = o.maxThreads;
  }

  get threads(): number {
    return this.current;
  }

  /** Called between steps: samples (at most every minIntervalMs) and resizes the team when contention changed. */
  tick(): void {
    const now = this.o.now ? this.o.now() : performance.now();
    if (now - this.last < (this.o.minIntervalMs ?? 50)) return;
    this.last = now;
    const others = this.o.sample();
    if (others === undefined) return;
    this.recent.push(Math.max(1, this.o.maxThreads - others));
    if (this.recent.length > 3) this.recent.shift();
    const fit = this.recent;
    const lastTwo = fit.slice(-2);
    let target = this.current;
    if (lastTwo.length === 2 && lastTwo.every((t) => t < this.current)) target = Math.max(...lastTwo);
    else if (fit.length === 3 && fit.every((t) => t > this.current)) target = Math.min(...fit);
    if (target !== this.current) {
      this.current = target;
      this.o.apply(target, target < this.o.maxThreads ? `${this.o.maxThreads - target} core(s) busy with other processes` : 'the cores are free again');
    }
  }
}
