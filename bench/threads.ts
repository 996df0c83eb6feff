/**
 * Does the native backend keep its speed when another process shares the machine? Runs the same
 * measurements (a 512² matmul, NSP training steps of stages 0 and 1) in a fresh process per OpenMP
 * wait policy (libgomp reads it at load), once alone and once beside a synthetic competitor (a
 * busy-loop child process per competing core), and prints shared ÷ alone for each policy.
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
  { name: 'default (short spin)', env: {} },
  { name: "libgomp's default spin", env: { GOMP_SPINCOUNT: '300000' } },
  { name: 'OMP_WAIT_POLICY=passive', env: { OMP_WAIT_POLICY: 'passive' } },
  { name: '1 thread', env: { SCALEFORGE_THREADS: '1' } },
];

type Measures = Record<string, number>;

/** In the child: median ms of each measurement on the native backend. */
async function measure(repeats: number): Promise<Measures> {
  const { tf } = await import('../src/backend/tf.js');
  const { initBackend } = await import('../src/backend/select.js');
  const { nativeThreadChoice } = await import('../src/backend/native/addon.js');
  const { NextScaleGenerator } = await import('../src/models/nsp/model.js');
  const { NSP_BENCH_CONFIG, nspStep } = await import('./kernels.js');
  const { Rng } = await import('../src/util/rng.js');
  await initBackend('native');
  const median = (fn: () => void) => {
    fn();
    const t: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      fn();
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[t.length >> 1]!;
  };
  const out: Measures = { threads: nativeThreadChoice()?.threads ?? NaN };
  const rng = new Rng(1);
  const a = tf.tensor2d(rng.fillNormal(new Float32Array(512 * 512)), [512, 512]);
  out['matmul 512 (ms)'] = median(() => tf.matMul(a, a).dispose());
  a.dispose();
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  for (const k of [0, 1]) {
    const { step, dispose } = nspStep(gen, k, new Rng(7));
    out[`nsp step stage ${k} (ms)`] = median(step);
    dispose();
  }
  return out;
}

function runChild(policy: Policy, repeats: number): Measures {
  const env = { ...process.env };
  for (const k of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'SCALEFORGE_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS']) delete env[k];
  for (const [k, v] of Object.entries(policy.env)) if (v !== undefined) env[k] = v;
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', String(repeats)], { env, encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench/threads.ts child (${policy.name}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Measures;
}

function startCompetitors(n: number): ChildProcess[] {
  return Array.from({ length: n }, () => spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
}

export async function runThreadBench(opts: { repeats?: number; competitors?: number; log?: (l: string) => void } = {}): Promise<BenchRow[]> {
  const repeats = opts.repeats ?? 7;
  const competitors = opts.competitors ?? 1;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  for (const policy of POLICIES) {
    const load0 = os.loadavg()[0]!;
    const alone = runChild(policy, repeats);
    const kids = startCompetitors(competitors);
    let shared: Measures;
    try {
      shared = runChild(policy, repeats);
    } finally {
      for (const k of kids) k.kill('SIGKILL');
    }
    for (const key of Object.keys(alone)) {
      if (key === 'threads') continue;
      const row: BenchRow = {
        name: `${policy.name}: ${key.replace(' (ms)', '')} shared ÷ alone`,
        value: shared[key]! / alone[key]!,
        unit: '×',
        note: `${alone.threads} threads; alone ${alone[key]!.toFixed(1)} ms, beside ${competitors} busy loop(s) ${shared[key]!.toFixed(1)} ms; load ${load0.toFixed(1)}`,
      };
      rows.push(row);
      log(`${row.name.padEnd(60)} ${row.value.toFixed(2)}×  (${row.note})`);
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    process.stdout.write(`${JSON.stringify(await measure(Number(args[1] ?? 7)))}\n`);
    process.exit(0);
  }
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  const rows = await runThreadBench({ repeats: pick('--repeats'), competitors: pick('--competitors'), log: args.includes('--json') ? undefined : (l) => console.error(l) });
  console.log(args.includes('--json') ? JSON.stringify(rows, null, 2) : formatTable(rows));
}
