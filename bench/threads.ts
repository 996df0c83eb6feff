/**
 * Does the native backend keep its speed when another process shares the machine? Runs the same
 * measurements (a 512² matmul, NSP training steps of stages 0 and 1) in a fresh process per OpenMP
 * wait policy (libgomp reads it at load): alone, then beside a synthetic competitor (a busy-loop
 * child process per competing core), then alone again, interleaved per measurement so that the
 * machine's own load drifts alike for both; prints shared ÷ alone for each policy.
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
async function measure(repeats: number, competitors: number): Promise<{ threads: number; wait: string; m: Measures }> {
  const { tf } = await import('../src/backend/tf.js');
  const { initBackend } = await import('../src/backend/select.js');
  const { adaptNativeThreads, nativeThreadChoice } = await import('../src/backend/native/addon.js');
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
   * untimed for 300 ms with the thread governor ticking between runs, as the trainer does between
   * steps, so both sides are timed in the thread count the governor settles on.
   */
  const both = async (fnRaw: () => void) => {
    const fn = () => {
      adaptNativeThreads();
      fnRaw();
    };
    const settle = () => {
      const end = performance.now() + 300;
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
  m['matmul 512'] = await both(() => tf.matMul(a, a).dispose());
  a.dispose();
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  for (const k of [0, 1]) {
    const { step, dispose } = nspStep(gen, k, new Rng(7));
    m[`nsp step stage ${k}`] = await both(step);
    dispose();
  }
  const c = nativeThreadChoice();
  return { threads: c?.threads ?? NaN, wait: c?.wait ?? '', m };
}

function runChild(policy: Policy, repeats: number, competitors: number): { threads: number; wait: string; m: Measures } {
  const env = { ...process.env };
  for (const k of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'SCALEFORGE_THREADS', 'SCALEFORGE_ADAPTIVE_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS']) delete env[k];
  for (const [k, v] of Object.entries(policy.env)) if (v !== undefined) env[k] = v;
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', String(repeats), String(competitors)], {
    env,
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`bench/threads.ts child (${policy.name}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { threads: number; wait: string; m: Measures };
}

export async function runThreadBench(opts: { repeats?: number; competitors?: number; log?: (l: string) => void } = {}): Promise<BenchRow[]> {
  const repeats = opts.repeats ?? 7;
  const competitors = opts.competitors ?? 1;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  for (const policy of POLICIES) {
    const load = os.loadavg()[0]!;
    const r = runChild(policy, repeats, competitors);
    for (const [key, v] of Object.entries(r.m)) {
      const row: BenchRow = {
        name: `${policy.name}: ${key} shared ÷ alone`,
        value: v.shared / v.alone,
        unit: '×',
        note: `${r.threads} threads, ${r.wait}; alone ${v.alone.toFixed(1)} ms, beside ${competitors} busy loop(s) ${v.shared.toFixed(1)} ms; load ${load.toFixed(1)}`,
      };
      rows.push(row);
      log(`${row.name.padEnd(56)} ${row.value.toFixed(2)}×  (${row.note})`);
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    process.stdout.write(`${JSON.stringify(await measure(Number(args[1] ?? 7), Number(args[2] ?? 1)))}\n`);
    process.exit(0);
  }
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  const rows = await runThreadBench({ repeats: pick('--repeats'), competitors: pick('--competitors'), log: args.includes('--json') ? undefined : (l) => console.error(l) });
  console.log(args.includes('--json') ? JSON.stringify(rows, null, 2) : formatTable(rows));
}
