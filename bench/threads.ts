/**
 * Does the native backend keep its speed when another process shares the machine? Runs the same
 * measurements (a 512² matmul, NSP training steps of stages 0 and 1) in a fresh process per OpenMP
 * wait policy (libgomp reads it at load): alone, then beside a synthetic competitor (a busy-loop
 * child process per competing core), then alone again, interleaved per measurement so that the
 * machine's own load drifts alike for both; prints shared ÷ alone for each policy, and the floor under
 * it: the default policy's speed on the cores the competitors leave ÷ on all of them.
 * Run: `npx tsx bench/threads.ts [--json] [--repeats 7] [--competitors 1]`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './row.js';
import { formatTable } from './row.js';

interface Policy {
  name: string;
  env: Record<string, string | undefined>;
}

/** The toolkit's default first; the others are the alternatives it was chosen against. */
export const POLICIES: Policy[] = [
  { name: 'default', env: {} },
  { name: 'fixed team (no governor)', env: { SCALEFORGE_ADAPTIVE_THREADS: '0' } },
  { name: "libgomp's default spin", env: { GOMP_SPINCOUNT: '300000' } },
  { name: 'GOMP_SPINCOUNT=1000', env: { GOMP_SPINCOUNT: '1000' } },
  { name: 'OMP_WAIT_POLICY=passive', env: { OMP_WAIT_POLICY: 'passive' } },
  { name: '1 thread', env: { SCALEFORGE_THREADS: '1' } },
];

type Measures = Record<string, { alone: number; shared: number }>;

function startCompetitors(n: number): ChildProcess[] {
  // A busy loop that still ends when the measuring process dies without killing it (a crash):
  // every ~2^22 iterations it checks whether its parent is gone.
  const loop = `const p = ${process.pid}; for (let i = 1; ; i++) if ((i & 0x3fffff) === 0 && process.ppid !== p) process.exit(0);`;
  return Array.from({ length: n }, () => spawn(process.execPath, ['-e', loop], { stdio: 'ignore' }));
}

/** In the child: median ms of each measurement on the native backend, alone and shared, interleaved. */
type ChildResult = { threads: number; wait: string; m: Measures; floor: Record<string, number>; floorThreads: number };

async function measure(repeats: number, competitors: number, withFloor: boolean): Promise<ChildResult> {
  const { tf } = await import('../src/backend/tf.js');
  const { initBackend } = await import('../src/backend/select.js');
  const { adaptNativeThreads, nativeThreadChoice, setNativeThreads } = await import('../src/backend/native/addon.js');
  const { NextScaleGenerator } = await import('../src/models/nsp/model.js');
  const { NSP_BENCH_CONFIG, nspStep } = await import('./kernels.js');
  const { Rng } = await import('../src/util/rng.js');
  await initBackend('native');
  const median = (t: number[]) => [...t].sort((a, b) => a - b)[t.length >> 1]!;
  const time = (fn: () => void) => {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  };
  /**
   * Alternates blocks of runs alone and beside the competitors. Before each timed run the step runs
   * untimed for 1 s with the thread governor ticking between runs, as the trainer does between
   * steps, so both sides are timed in the thread count the governor settles on.
   */
  const both = async (fnRaw: () => void) => {
    const fn = () => {
      adaptNativeThreads();
      fnRaw();
    };
    const settle = () => {
      const end = performance.now() + 1000;
      do fn();
      while (performance.now() < end);
    };
    const alone: number[] = [];
    const shared: number[] = [];
    for (let r = 0; r < repeats; r++) {
      settle();
      alone.push(time(fn));
      const kids = startCompetitors(competitors);
      await new Promise((res) => setTimeout(res, 30));
      try {
        settle();
        shared.push(time(fn));
      } finally {
        for (const k of kids) k.kill('SIGKILL');
      }
    }
    return { alone: median(alone), shared: median(shared) };
  };
  const m: Measures = {};
  const rng = new Rng(1);
  const a = tf.tensor2d(rng.fillNormal(new Float32Array(512 * 512)), [512, 512]);
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  const steps = [0, 1].map((k) => nspStep(gen, k, new Rng(7)));
  const work: [string, () => void][] = [['matmul 512', () => tf.matMul(a, a).dispose()], ...steps.map((s, k): [string, () => void] => [`nsp step stage ${k}`, s.step])];
  for (const [key, fn] of work) m[key] = await both(fn);
  const c = nativeThreadChoice();
  const cores = os.availableParallelism();
  const free = Math.max(1, cores - competitors);
  const result: ChildResult = { threads: c?.threads ?? NaN, wait: c?.wait ?? '', m, floor: {}, floorThreads: free };
  if (withFloor) {
    // Cores taken by the competitors leave at best the speed of the cores that are left, so shared ÷
    // alone cannot go below alone on the free cores ÷ alone on all of them (interleaved). After the
    // others: fixing the thread count switches the governor off for this process.
    for (const [key, fn] of work) {
      const one: number[] = [];
      const all: number[] = [];
      for (let r = 0; r < repeats; r++) {
        setNativeThreads(free, 'bench floor');
        fn();
        one.push(time(fn));
        setNativeThreads(cores, 'bench floor');
        fn();
        all.push(time(fn));
      }
      result.floor[key] = median(one) / median(all);
    }
  }
  a.dispose();
  for (const s of steps) s.dispose();
  return result;
}

function runChild(policy: Policy, repeats: number, competitors: number, withFloor: boolean): ChildResult {
  const env = { ...process.env };
  for (const k of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'SCALEFORGE_THREADS', 'SCALEFORGE_ADAPTIVE_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS']) delete env[k];
  for (const [k, v] of Object.entries(policy.env)) if (v !== undefined) env[k] = v;
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', String(repeats), String(competitors), withFloor ? 'floor' : ''], {
    env,
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`bench/threads.ts child (${policy.name}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

export async function runThreadBench(opts: { repeats?: number; competitors?: number; log?: (l: string) => void } = {}): Promise<BenchRow[]> {
  const repeats = opts.repeats ?? 7;
  const competitors = opts.competitors ?? 1;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  const add = (row: BenchRow) => {
    rows.push(row);
    log(`${row.name.padEnd(56)} ${row.value.toFixed(2)}×  (${row.note})`);
  };
  for (const policy of POLICIES) {
    const load = os.loadavg()[0]!;
    const r = runChild(policy, repeats, competitors, policy === POLICIES[0]);
    for (const [key, v] of Object.entries(r.m)) {
      add({
        name: `${policy.name}: ${key} shared ÷ alone`,
        value: v.shared / v.alone,
        unit: '×',
        note: `${r.threads} threads, ${r.wait}; alone ${v.alone.toFixed(1)} ms, beside ${competitors} busy loop(s) ${v.shared.toFixed(1)} ms; load ${load.toFixed(1)}`,
      });
    }
    for (const [key, v] of Object.entries(r.floor)) {
      add({
        name: `floor: ${key} alone on ${r.floorThreads} thread(s) ÷ on ${os.availableParallelism()}`,
        value: v,
        unit: '×',
        note: `the least shared ÷ alone can be with the competitors' cores taken; load ${load.toFixed(1)}`,
      });
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    process.stdout.write(`${JSON.stringify(await measure(Number(args[1] ?? 7), Number(args[2] ?? 1), args[3] === 'floor'))}\n`);
    process.exit(0);
  }
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  const rows = await runThreadBench({ repeats: pick('--repeats'), competitors: pick('--competitors'), log: args.includes('--json') ? undefined : (l) => console.error(l) });
  console.log(args.includes('--json') ? JSON.stringify(rows, null, 2) : formatTable(rows));
}
