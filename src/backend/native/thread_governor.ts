import { readFileSync } from 'node:fs';

/**
 * A thread count that follows contention. OpenMP teams wait at every barrier for their slowest
 * thread: when another process holds one of two cores, a 2-thread team waits a scheduler time slice
 * for its descheduled member at every kernel, and a training step takes 2–4× its idle time
 * (bench/threads.ts), slower than one thread would be. Between steps the governor measures how many
 * cores other processes used since its last sample, at most every 200 ms (the machine's busy CPU
 * time in /proc/stat minus this process's own in /proc/self/stat, over the elapsed total), and
 * gives the team the cores left over: down as soon as a sample sees others using a core (rounded:
 * half a core or more), back up after two samples in a row see the cores free. Only for the
 * automatic thread count: SCALEFORGE_THREADS / OMP_NUM_THREADS / OPENBLAS_NUM_THREADS fix it,
 * SCALEFORGE_ADAPTIVE_THREADS=0 turns it off.
 *
 * CPU time over an interval, not the run-queue count of /proc/loadavg at an instant: that count
 * caught kernel workers and our own OpenMP workers on their way to sleep (which the kernel still
 * counted as running but /proc/self/task, read a moment later, did not), and on an idle machine
 * saw "another process" in 1 sample of 5, twice in a row often enough to halve the team.
 */

/** CPU tick counters of /proc/stat: busy (all but idle and iowait; steal counts as busy, the
 * hypervisor had the core) and total, summed over CPUs, and how many CPUs. */
export interface MachineTicks {
  busy: number;
  total: number;
  cpus: number;
}

export function machineTicksFromStat(text: string): MachineTicks | undefined {
  const lines = text.split('\n');
  const all = /^cpu\s+(.*)$/.exec(lines[0] ?? '');
  if (!all) return undefined;
  // user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
  const f = all[1]!.trim().split(/\s+/).map(Number).slice(0, 8);
  if (f.length < 5 || f.some((v) => !Number.isFinite(v))) return undefined;
  const total = f.reduce((a, b) => a + b, 0);
  const cpus = lines.filter((l) => /^cpu\d+\s/.test(l)).length;
  return { busy: total - f[3]! - f[4]!, total, cpus: Math.max(1, cpus) };
}

/** utime + stime of a /proc/<pid>/stat line, in the same ticks (fields 14 and 15; the name may hold spaces and parentheses). */
export function processTicksFromStat(text: string): number | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") " come field 3 (state) onwards: utime and stime are fields 14 and 15.
  const f = text.slice(close + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/**
 * Cores other processes used since the previous call (undefined on the first call, or where
 * /proc cannot say). `read` is readFileSync's text by default; tests script it.
 */
export function otherCoresSampler(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): () => number | undefined {
  let previous: { machine: MachineTicks; own: number } | undefined;
  return () => {
    try {
      const machine = machineTicksFromStat(read('/proc/stat'));
      const own = processTicksFromStat(read('/proc/self/stat'));
      if (!machine || own === undefined) return undefined;
      const before = previous;
      previous = { machine, own };
      if (!before) return undefined;
      const total = machine.total - before.machine.total;
      if (total <= 0) return undefined;
      const others = machine.busy - before.machine.busy - (own - before.own);
      return Math.max(0, (others / total) * machine.cpus);
    } catch {
      return undefined;
    }
  };
}

export interface ThreadGovernorOptions {
  /** The team size when nothing else runs (the automatic choice). */
  maxThreads: number;
  /** Cores used by other processes since the last sample (otherCoresSampler in use; a scripted sequence in tests). */
  sample: () => number | undefined;
  /** Applies a new thread count. */
  apply: (threads: number, reason: string) => void;
  /**
   * Shortest time between two samples, ms (default 200). /proc counts CPU time in ticks of 10 ms,
   * so a sample over 200 ms of 2 cores is good to ±0.1 core; a step is 10–300 ms.
   */
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
    if (now - this.last < (this.o.minIntervalMs ?? 200)) return;
    this.last = now;
    const others = this.o.sample();
    if (others === undefined) return;
    const fit = Math.max(1, this.o.maxThreads - Math.round(others));
    this.recent.push(fit);
    if (this.recent.length > 2) this.recent.shift();
    let target = this.current;
    // Down at once: a sample already averages a window of CPU time, and a team that is one core
    // short runs 3–5× slower until it shrinks. Up only after two free windows.
    if (fit < this.current) target = fit;
    else if (this.recent.length === 2 && this.recent.every((t) => t > this.current)) target = Math.min(...this.recent);
    if (target !== this.current) {
      this.current = target;
      this.o.apply(target, target < this.o.maxThreads ? `${this.o.maxThreads - target} core(s) busy with other processes` : 'the cores are free again');
    }
  }
}
