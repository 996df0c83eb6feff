/**
 * The training-step ratios to PyTorch, interleaved: the NSP stage steps (batch 16) and the DiT-S/2
 * LoRA step on the native backend, one step of ours then one of PyTorch's (a bench/torch_ref.py
 * --serve process at the same thread count), several rounds, medians. The machine is shared, so
 * only a ratio taken this way means anything; each row notes the load average it ran under.
 * With bf16 (the default where the CPU has AVX-512-BF16 or AMX) each round also runs our step with
 * `precision: bf16` and PyTorch's under torch.autocast('cpu', dtype=torch.bfloat16) (a second
 * server), so fp32 and bf16 ratios, and each side's bf16 ÷ fp32, come from the same rounds.
 * Run: `npx tsx bench/steps.ts [--threads 1,2] [--rounds 7] [--precision fp32,bf16] [--torch-python PATH] [--json]`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { loadNativeAddon, setNativeThreads } from '../src/backend/native/addon.js';
import { bf16Hardware } from '../src/backend/native/bf16.js';
import { installComputePrecision, resetComputePrecision, type ComputeMode } from '../src/train/compute_precision.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';
import { NSP_BENCH_BATCH, NSP_BENCH_CONFIG, nspStep, torchNspConfig } from './kernels.js';
import { ditLoraStep } from './dit_lora.js';
import { ditPretrainStep } from './dit_pretrain.js';
import { formatTable, type BenchRow } from './row.js';
import { findTorchPython, type TorchPython } from './torch_python.js';

export interface StepBenchOptions {
  threads?: number[];
  rounds?: number;
  torch?: TorchPython;
  /** fp32 always runs; bf16 adds the mixed-precision rows (default: where the CPU has bf16 instructions). */
  precisions?: StepPrecision[];
  log?: (line: string) => void;
}

export type StepPrecision = 'fp32' | 'bf16';

/** A long-lived torch_ref.py --serve process answering "run step X n times" requests. */
class TorchServer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  header!: { torch: string; threads: number; cpu: string; rows: string[] };

  constructor(python: string, threads: number, autocast: 'none' | 'bf16' = 'none') {
    const script = fileURLToPath(new URL('./torch_ref.py', import.meta.url));
    const args = [script, '--serve', '--threads', String(threads), '--autocast', autocast, '--nsp-config', JSON.stringify(torchNspConfig())];
    this.proc = spawn(python, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    this.proc.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    this.proc.on('exit', (code) => {
      if (code) process.stderr.write(`torch_ref.py --serve exited with ${code}: ${err}\n`);
    });
    this.lines = createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }

  private async next(): Promise<string> {
    const r = await this.lines.next();
    if (r.done) throw new Error('bench/torch_ref.py --serve stopped answering');
    return r.value;
  }

  async start(): Promise<void> {
    this.header = JSON.parse(await this.next()) as TorchServer['header'];
  }

  async run(row: string, n: number): Promise<number[]> {
    this.proc.stdin.write(`${JSON.stringify({ row, n })}\n`);
    return (JSON.parse(await this.next()) as { ms: number[] }).ms;
  }

  close(): void {
    this.proc.stdin.end();
    this.proc.kill();
  }
}

function parsePrecision(p: string): StepPrecision {
  if (p === 'fp32' || p === 'bf16') return p;
  console.error(`--precision: expected fp32 and/or bf16 (comma-separated), got '${p}'`);
  process.exit(2);
}

const median = (t: number[]) => [...t].sort((a, b) => a - b)[t.length >> 1]!;

/**
 * A pause before each timed step, ours and theirs alike: after a step an OpenMP team spins before it
 * sleeps (libgomp's default in PyTorch's wheel: 300 000 iterations, milliseconds), and a step timed
 * right after the other side's would share a core with that spin.
 */
const QUIET_MS = 25;
/** How long each of our steps runs untimed first, per thread count and precision. */
const WARMUP_MS = 1500;
const quiet = () => new Promise<void>((r) => setTimeout(r, QUIET_MS));

/** Ours: {row name (as torch_ref.py names it): step}, built once per thread count. */
function ourSteps(): { steps: Map<string, () => void>; dispose: () => void } {
  const steps = new Map<string, () => void>();
  const disposers: (() => void)[] = [];
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  NSP_BENCH_CONFIG.sizes.forEach((s, k) => {
    const { step, dispose } = nspStep(gen, k, new Rng(7));
    steps.set(`nsp train step stage ${k} (${s}x${s}, batch ${NSP_BENCH_BATCH})`, step);
    disposers.push(dispose);
  });
  const dit = ditLoraStep();
  steps.set(dit.name, dit.step);
  const pretrain = ditPretrainStep();
  steps.set(pretrain.name, pretrain.step);
  disposers.push(dit.dispose, pretrain.dispose, () => gen.dispose?.());
  return { steps, dispose: () => disposers.forEach((d) => d()) };
}

/** Our step under `precision` (bf16: the oneDNN bf16 kernels where the CPU has them, else the emulation). */
function timeOurs(step: () => void, precision: StepPrecision): { ms: number; mode: ComputeMode } {
  const mode = installComputePrecision(precision).mode;
  try {
    const t0 = performance.now();
    step();
    return { ms: performance.now() - t0, mode };
  } finally {
    resetComputePrecision();
  }
}

export async function runStepBench(opts: StepBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  const rounds = opts.rounds ?? 7;
  const threadCounts = opts.threads ?? [1, Math.min(2, os.availableParallelism())].filter((t, i, a) => a.indexOf(t) === i);
  const torch = opts.torch ?? findTorchPython().found;
  if (!torch) return [{ name: 'pytorch unavailable', value: NaN, unit: '', note: findTorchPython().tried.join('; ') }];
  await initBackend('native');
  const info = loadNativeAddon().info;
  const precisions = opts.precisions ?? (info && bf16Hardware(info.dnnlCpuIsa) ? ['fp32', 'bf16'] : ['fp32']);
  const withBf16 = precisions.includes('bf16');
  const rows: BenchRow[] = [];
  const emit = (row: BenchRow) => {
    rows.push(row);
    log(`${row.name.padEnd(64)} ${row.value.toFixed(2)}×  (${row.note})`);
  };
  // Kernel calls per step (what fusion brings down), counted once per step under tf.profile.
  const kernelsPerStep = new Map<string, number>();
  for (const threads of threadCounts) {
    setNativeThreads(threads, `bench/steps.ts --threads ${threads}`);
    const servers: Record<StepPrecision, TorchServer | undefined> = {
      fp32: new TorchServer(torch.python, threads),
      bf16: withBf16 ? new TorchServer(torch.python, threads, 'bf16') : undefined,
    };
    const active = (['fp32', 'bf16'] as const).filter((p) => servers[p]);
    try {
      for (const p of active) await servers[p]!.start();
      const { steps, dispose } = ourSteps();
      for (const [name, step] of steps) {
        if (!servers.fp32!.header.rows.includes(name)) continue;
        const load = os.loadavg()[0]!;
        const ours = { fp32: [] as number[], bf16: [] as number[] };
        const theirs = { fp32: [] as number[], bf16: [] as number[] };
        const ratios = { fp32: [] as number[], bf16: [] as number[] };
        let bf16Mode: ComputeMode = 'bf16-emulated';
        // Warm-up: V8 compiles a step's JavaScript (tfjs's engine, our kernels' glue) over its first
        // ~20 calls, which take 1.5–4× the steady time (measured at NSP stage 0); a training run
        // spends nearly all of its steps past that, so both sides are timed warm.
        for (const p of active) {
          const end = performance.now() + WARMUP_MS;
          for (let n = 0; n < 3 || performance.now() < end; n++) timeOurs(step, p);
          await servers[p]!.run(name, 3);
        }
        if (!kernelsPerStep.has(name)) kernelsPerStep.set(name, (await tf.profile(step)).kernels.length);
        for (let r = 0; r < rounds; r++) {
          for (const p of active) {
            await quiet();
            const o = timeOurs(step, p);
            if (p === 'bf16') bf16Mode = o.mode;
            ours[p].push(o.ms);
            await quiet();
            theirs[p].push((await servers[p]!.run(name, 1))[0]!);
            ratios[p].push(o.ms / theirs[p].at(-1)!);
          }
        }
        const torchVersion = servers.fp32!.header.torch;
        emit({
          name: `native ${name} @${threads}t ÷ torch`,
          value: median(ratios.fp32),
          unit: '×',
          note: `median of ${rounds} interleaved: native ${median(ours.fp32).toFixed(1)} ms, torch ${torchVersion} ${median(theirs.fp32).toFixed(1)} ms; load ${load.toFixed(1)}; ${kernelsPerStep.get(name)} kernels/step`,
        });
        if (!withBf16) continue;
        emit({
          name: `native bf16 ${name} @${threads}t ÷ torch autocast bf16`,
          value: median(ratios.bf16),
          unit: '×',
          note: `${bf16Mode}; median of ${rounds} interleaved: native ${median(ours.bf16).toFixed(1)} ms, torch autocast ${median(theirs.bf16).toFixed(1)} ms; load ${load.toFixed(1)}`,
        });
        const perRound = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]!));
        emit({
          name: `native bf16 ÷ native fp32 ${name} @${threads}t`,
          value: perRound(ours.bf16, ours.fp32),
          unit: '×',
          note: `${bf16Mode}; < 1: bf16 is faster; same rounds as above`,
        });
        emit({
          name: `torch autocast bf16 ÷ torch fp32 ${name} @${threads}t`,
          value: perRound(theirs.bf16, theirs.fp32),
          unit: '×',
          note: `torch ${torchVersion}; same rounds as above`,
        });
      }
      dispose();
    } finally {
      for (const p of active) servers[p]!.close();
    }
  }
  tf.disposeVariables();
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const found = findTorchPython(args);
  if (!found.found) {
    console.error(`no Python with torch: ${found.tried.join('; ')}`);
    process.exit(2);
  }
  const json = args.includes('--json');
  if (!json) console.error(`PyTorch ${found.found.version} (${found.found.python}, from ${found.found.source}); cpu ${os.cpus()[0]?.model ?? '?'} × ${os.cpus().length}`);
  const rows = await runStepBench({
    threads: pick('--threads')?.split(',').map(Number),
    rounds: pick('--rounds') ? Number(pick('--rounds')) : undefined,
    precisions: pick('--precision')?.split(',').map(parsePrecision),
    torch: found.found,
    log: json ? undefined : (l) => console.error(l),
  });
  console.log(json ? JSON.stringify({ torch: found.found, cpu: os.cpus()[0]?.model, rows }, null, 2) : formatTable(rows));
}
