/**
 * The training-step ratios to PyTorch, interleaved: the NSP stage steps (batch 16) and the DiT-S/2
 * LoRA step on the native backend, one step of ours then one of PyTorch's (a bench/torch_ref.py
 * --serve process at the same thread count), several rounds, medians. The machine is shared, so
 * only a ratio taken this way means anything; each row notes the load average it ran under.
 * Run: `npx tsx bench/steps.ts [--threads 1,2] [--rounds 7] [--torch-python PATH] [--json]`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { setNativeThreads } from '../src/backend/native/addon.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';
import { NSP_BENCH_BATCH, NSP_BENCH_CONFIG, nspStep } from './kernels.js';
import { ditLoraStep } from './dit_lora.js';
import { ditPretrainStep } from './dit_pretrain.js';
import { formatTable, type BenchRow } from './row.js';
import { findTorchPython, type TorchPython } from './torch_python.js';

export interface StepBenchOptions {
  threads?: number[];
  rounds?: number;
  torch?: TorchPython;
  log?: (line: string) => void;
}

/** A long-lived torch_ref.py --serve process answering "run step X n times" requests. */
class TorchServer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  header!: { torch: string; threads: number; cpu: string; rows: string[] };

  constructor(python: string, threads: number) {
    const script = fileURLToPath(new URL('./torch_ref.py', import.meta.url));
    this.proc = spawn(python, [script, '--serve', '--threads', String(threads)], { stdio: ['pipe', 'pipe', 'pipe'] });
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

const median = (t: number[]) => [...t].sort((a, b) => a - b)[t.length >> 1]!;

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

export async function runStepBench(opts: StepBenchOptions = {}): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  const rounds = opts.rounds ?? 7;
  const threadCounts = opts.threads ?? [1, Math.min(2, os.availableParallelism())].filter((t, i, a) => a.indexOf(t) === i);
  const torch = opts.torch ?? findTorchPython().found;
  if (!torch) return [{ name: 'pytorch unavailable', value: NaN, unit: '', note: findTorchPython().tried.join('; ') }];
  await initBackend('native');
  const rows: BenchRow[] = [];
  // Kernel calls per step (what fusion brings down), counted once per step under tf.profile.
  const kernelsPerStep = new Map<string, number>();
  for (const threads of threadCounts) {
    setNativeThreads(threads, `bench/steps.ts --threads ${threads}`);
    const server = new TorchServer(torch.python, threads);
    try {
      await server.start();
      const { steps, dispose } = ourSteps();
      for (const [name, step] of steps) {
        if (!server.header.rows.includes(name)) continue;
        const load = os.loadavg()[0]!;
        step();
        await server.run(name, 1);
        const ours: number[] = [];
        const theirs: number[] = [];
        const ratios: number[] = [];
        for (let r = 0; r < rounds; r++) {
          const t0 = performance.now();
          step();
          ours.push(performance.now() - t0);
          theirs.push((await server.run(name, 1))[0]!);
          ratios.push(ours.at(-1)! / theirs.at(-1)!);
        }
        if (!kernelsPerStep.has(name)) kernelsPerStep.set(name, (await tf.profile(step)).kernels.length);
        const row: BenchRow = {
          name: `native ${name} @${threads}t ÷ torch`,
          value: median(ratios),
          unit: '×',
          note: `median of ${rounds} interleaved: native ${median(ours).toFixed(1)} ms, torch ${server.header.torch} ${median(theirs).toFixed(1)} ms; load ${load.toFixed(1)}; ${kernelsPerStep.get(name)} kernels/step`,
        };
        rows.push(row);
        log(`${row.name.padEnd(64)} ${row.value.toFixed(2)}×  (${row.note})`);
      }
      dispose();
    } finally {
      server.close();
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
    torch: found.found,
    log: json ? undefined : (l) => console.error(l),
  });
  console.log(json ? JSON.stringify({ torch: found.found, cpu: os.cpus()[0]?.model, rows }, null, 2) : formatTable(rows));
}
