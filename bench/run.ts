/**
 * `npm run bench [-- --json] [--only kernels,torch,steps,fusion,threads,curate,eval,dedup] [--quick]
 * [--backends native,wasm,cpu] [--torch-python PATH]`: every benchmark suite, printed as one table
 * per suite (or one JSON record with the machine and PyTorch it ran against). The plain-JS `cpu`
 * backend is measured only when named in --backends (its NSP step takes minutes). Speed is
 * measured here, never asserted in unit tests.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { formatTable, type BenchRow } from './row.js';
import { findTorchPython, type TorchPythonResult } from './torch_python.js';

interface Context {
  quick: boolean;
  backends: string[];
  torch: TorchPythonResult;
  log: (l: string) => void;
}

interface Suite {
  describe: string;
  /** Only run when named in --only. */
  optIn?: boolean;
  run(ctx: Context): Promise<BenchRow[]>;
}

const TORCH_SCRIPT = fileURLToPath(new URL('./torch_ref.py', import.meta.url));

/** PyTorch's kernel figures for the same shapes, at the thread count the native backend uses. */
async function torchRows(ctx: Context): Promise<BenchRow[]> {
  const found = ctx.torch.found;
  if (!found) return [{ name: 'pytorch unavailable', value: NaN, unit: '', note: `no Python imports torch: ${ctx.torch.tried.join('; ')}` }];
  const threads = Math.min(2, os.availableParallelism());
  const out = execFileSync(found.python, [TORCH_SCRIPT, '--part', 'kernels', '--threads', String(threads), '--repeats', ctx.quick ? '2' : '5'], {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  const parsed = JSON.parse(out) as { torch: string; rows: BenchRow[] };
  return parsed.rows.map((r) => ({ ...r, note: r.note ?? `PyTorch ${parsed.torch}, ${threads} threads` }));
}

/**
 * Each tfjs backend's figure against PyTorch's for the same row (names match after the backend
 * word): step time as a ratio (≤ 1 is at least as fast as PyTorch), throughput as % of PyTorch's.
 */
export function ratiosToTorch(kernelRows: BenchRow[], torch: BenchRow[]): BenchRow[] {
  const torchByKey = new Map(torch.filter((r) => r.name.startsWith('torch ')).map((r) => [r.name.slice('torch '.length), r]));
  const out: BenchRow[] = [];
  for (const r of kernelRows) {
    const space = r.name.indexOf(' ');
    const backend = r.name.slice(0, space);
    const ref = torchByKey.get(r.name.slice(space + 1));
    if (!ref || !Number.isFinite(r.value) || !Number.isFinite(ref.value) || ref.unit !== r.unit) continue;
    if (r.unit === 'ms') out.push({ name: `${r.name} ÷ torch`, value: r.value / ref.value, unit: '×', note: `${backend} ${r.value.toFixed(1)} ms, torch ${ref.value.toFixed(1)} ms` });
    else out.push({ name: `${r.name} vs torch`, value: (100 * r.value) / ref.value, unit: '%', note: `${r.value.toFixed(1)} vs ${ref.value.toFixed(1)} ${r.unit}` });
  }
  return out;
}

const suites: Record<string, Suite> = {
  kernels: {
    describe: 'matmul / conv GFLOP/s and elementwise GB/s per tfjs backend; NSP/DiT step ms for the non-native ones',
    run: async (ctx) => {
      const { runKernelBench } = await import('./kernels.js');
      const rows: BenchRow[] = [];
      for (const backend of ctx.backends) {
        // The native backend's steps are timed interleaved with PyTorch's in the `steps` suite.
        rows.push(...(await runKernelBench({ backends: [backend], repeats: ctx.quick ? 2 : 5, trainingSteps: backend !== 'native', log: ctx.log })));
      }
      return rows;
    },
  },
  torch: { describe: 'the same kernel shapes in PyTorch (bench/torch_ref.py), for the ratios', run: (ctx) => torchRows(ctx) },
  steps: {
    describe: 'training steps, native vs PyTorch interleaved at 1 and 2 threads (medians); on a bf16 CPU also precision: bf16 vs torch.autocast bf16',
    run: async (ctx) => {
      if (!ctx.torch.found) return [{ name: 'pytorch unavailable', value: NaN, unit: '', note: ctx.torch.tried.join('; ') }];
      return (await import('./steps.js')).runStepBench({ rounds: ctx.quick ? 3 : 7, torch: ctx.torch.found, log: ctx.log });
    },
  },
  fusion: {
    describe: 'each training step with the layer fusions on ÷ off, interleaved, with kernel calls per step',
    optIn: true,
    run: async (ctx) => (await import('./fusion.js')).runFusionBench({ rounds: ctx.quick ? 3 : 7, log: ctx.log }),
  },
  threads: {
    describe: 'native step time beside a busy-loop process ÷ alone, per OpenMP wait policy',
    optIn: true,
    run: async (ctx) => (await import('./threads.js')).runThreadBench({ repeats: ctx.quick ? 3 : 5, log: ctx.log }),
  },
  curate: {
    describe: 'curation throughput: decode + hash + resize on all cores',
    run: async (ctx) => (await import('./curate.js')).runCurateBench(ctx.quick ? { images: 16 } : {}),
  },
  eval: {
    describe: "FID linear algebra at d = 2048 (LAPACK, JS fallback, SciPy's sqrtm) and FID-Inception images/s per backend vs PyTorch",
    run: async (ctx) => (await import('./eval.js')).runEvalBench({ ...(ctx.quick ? { jsDim: 512, images: 2 } : {}), log: ctx.log }),
  },
  dedup: {
    describe: 'near-duplicate search (multi-index hashing) for 10^5 and 10^6 random hashes',
    run: async (ctx) => (await import('./dedup.js')).runDedupBench({ sizes: ctx.quick ? [100_000] : [100_000, 1_000_000], log: ctx.log }),
  },
};

function option(argv: string[], flag: string): string | undefined {
  const at = argv.indexOf(flag);
  if (at >= 0) return argv[at + 1];
  return argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const quick = argv.includes('--quick');
  const only = option(argv, '--only');
  const names = only !== undefined ? only.split(',') : Object.keys(suites).filter((n) => !suites[n]!.optIn);
  for (const n of names) {
    if (!suites[n]) {
      process.stderr.write(`unknown suite '${n}'; suites: ${Object.keys(suites).join(', ')}\n`);
      process.exit(2);
    }
  }
  const backends = (option(argv, '--backends') ?? 'native,wasm').split(',').filter(Boolean);
  const log = json ? () => {} : (l: string) => process.stderr.write(`  ${l}\n`);
  const torch = names.some((n) => n === 'torch' || n === 'steps') ? findTorchPython(argv) : { tried: ['not needed by the chosen suites'] };
  const machine = {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    loadAverage: os.loadavg()[0],
    date: new Date().toISOString(),
  };
  const pytorch = torch.found ? `PyTorch ${torch.found.version} (${torch.found.python}, from ${torch.found.source})` : 'PyTorch: none found';
  if (!json) process.stdout.write(`cpu ${machine.cpu} × ${machine.cores}, load ${machine.loadAverage!.toFixed(1)}; ${pytorch}\n`);
  const results: Record<string, BenchRow[]> = {};
  const started = performance.now();
  for (const n of names) {
    if (!json) process.stderr.write(`\n== ${n}: ${suites[n]!.describe}\n`);
    results[n] = await suites[n]!.run({ quick, backends, torch, log });
    if (!json) process.stdout.write(`\n${n}\n${formatTable(results[n]!)}\n`);
  }
  if (results.kernels && results.torch) {
    results.ratios = [...ratiosToTorch(results.kernels, results.torch), ...(results.steps ?? [])];
    if (!json) process.stdout.write(`\nratios to ${pytorch} (same shapes, same machine, this run; cpu ${machine.cpu})\n${formatTable(results.ratios)}\n`);
  }
  const minutes = (performance.now() - started) / 60_000;
  if (json) {
    process.stdout.write(`${JSON.stringify({ machine, pytorch: torch.found ?? null, quick, backends, minutes, suites: results }, null, 2)}\n`);
  } else {
    process.stdout.write(`\nbench took ${minutes.toFixed(1)} min\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main(process.argv.slice(2));
