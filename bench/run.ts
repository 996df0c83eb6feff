/**
 * `npm run bench [-- --json] [--only kernels,torch,curate,eval,dedup] [--quick]`: every benchmark suite,
 * printed as one table per suite (or one JSON record with the machine it ran on). Speed is measured
 * here, never asserted in unit tests.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { formatTable, type BenchRow } from './row.js';

interface Suite {
  describe: string;
  run(quick: boolean, log: (l: string) => void): Promise<BenchRow[]>;
}

const TORCH_PYTHON = '/usr/bin/python3';

/** PyTorch's figures for the same shapes and NSP architecture, when Debian's python3-torch is installed. */
async function torchRows(quick: boolean): Promise<BenchRow[]> {
  const probe = spawnSync(TORCH_PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.status !== 0) return [{ name: 'pytorch unavailable', value: NaN, unit: '', note: `${TORCH_PYTHON} cannot import torch (apt-get install python3-torch)` }];
  const out = execFileSync(TORCH_PYTHON, ['bench/torch_ref.py', '--threads', String(Math.min(2, os.cpus().length)), '--repeats', quick ? '2' : '5'], {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  const parsed = JSON.parse(out) as { torch: string; rows: BenchRow[] };
  return parsed.rows.map((r) => ({ ...r, note: r.note ?? `PyTorch ${parsed.torch}` }));
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
    describe: 'matmul / conv GFLOP/s and NSP training-step ms per tfjs backend',
    run: async (quick, log) =>
      (await import('./kernels.js')).runKernelBench({ backends: quick ? ['wasm', 'native'] : ['native', 'wasm', 'cpu'], repeats: quick ? 2 : 5, log }),
  },
  torch: { describe: 'the same shapes in PyTorch (bench/torch_ref.py), for the ratios', run: (quick) => torchRows(quick) },
  curate: {
    describe: 'curation throughput: decode + hash + resize on all cores',
    run: async (quick) => (await import('./curate.js')).runCurateBench(quick ? { images: 16 } : {}),
  },
  eval: {
    describe: "FID linear algebra at d = 2048 (LAPACK, JS fallback, SciPy's sqrtm) and FID-Inception images/s per backend vs PyTorch",
    run: async (quick, log) => (await import('./eval.js')).runEvalBench({ ...(quick ? { jsDim: 512, images: 2 } : {}), log }),
  },
  dedup: {
    describe: 'near-duplicate search (multi-index hashing) for 10^5 and 10^6 random hashes',
    run: async (quick, log) => (await import('./dedup.js')).runDedupBench({ sizes: quick ? [100_000] : [100_000, 1_000_000], log }),
  },
};

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const quick = argv.includes('--quick');
  const onlyAt = argv.indexOf('--only');
  const names = onlyAt >= 0 ? (argv[onlyAt + 1] ?? '').split(',') : Object.keys(suites);
  for (const n of names) {
    if (!suites[n]) {
      process.stderr.write(`unknown suite '${n}'; suites: ${Object.keys(suites).join(', ')}\n`);
      process.exit(2);
    }
  }
  const log = json ? () => {} : (l: string) => process.stderr.write(`  ${l}\n`);
  const results: Record<string, BenchRow[]> = {};
  for (const n of names) {
    if (!json) process.stderr.write(`\n== ${n}: ${suites[n]!.describe}\n`);
    results[n] = await suites[n]!.run(quick, log);
    if (!json) process.stdout.write(`\n${n}\n${formatTable(results[n]!)}\n`);
  }
  if (results.kernels && results.torch) {
    results.ratios = ratiosToTorch(results.kernels, results.torch);
    if (!json) process.stdout.write(`\nratios to PyTorch (same shapes, same machine, this run)\n${formatTable(results.ratios)}\n`);
  }
  if (json) {
    const machine = { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1), node: process.version, date: new Date().toISOString() };
    process.stdout.write(`${JSON.stringify({ machine, quick, suites: results }, null, 2)}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main(process.argv.slice(2));
