/**
 * Which oneDNN kernels (and ISA) a `precision: bf16` NSP training step really runs: runs one step of
 * each stage (batch 16, bench/kernels.ts) in bf16 in a child process with DNNL_VERBOSE=1 and tallies
 * the `exec` lines by primitive, implementation and data types.
 * Run: `npx tsx scripts/bf16_dnnl_verbose.ts [--precision bf16|fp32]`; extra env (e.g.
 * DNNL_MAX_CPU_ISA) is passed through.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const precision = args.includes('--precision') ? args[args.indexOf('--precision') + 1]! : 'bf16';

if (process.env.SCALEFORGE_VERBOSE_CHILD) {
  const { initBackend } = await import('../src/backend/select.js');
  const { NextScaleGenerator } = await import('../src/models/nsp/model.js');
  const { NSP_BENCH_CONFIG, nspStep } = await import('./../bench/kernels.js');
  const { installComputePrecision, resetComputePrecision } = await import('../src/train/compute_precision.js');
  const { Rng } = await import('../src/util/rng.js');
  await initBackend('native');
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  NSP_BENCH_CONFIG.sizes.forEach((_, k) => {
    const { step, dispose } = nspStep(gen, k, new Rng(7));
    process.stderr.write(`${installComputePrecision(precision === 'bf16' ? 'bf16' : 'fp32').line}\n`);
    step();
    resetComputePrecision();
    dispose();
  });
} else {
  const script = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, ...args], {
    env: { ...process.env, SCALEFORGE_VERBOSE_CHILD: '1', DNNL_VERBOSE: '1' },
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  if (r.status !== 0) {
    process.stderr.write(r.stderr);
    process.exit(r.status ?? 1);
  }
  process.stderr.write(r.stderr);
  const info = r.stdout.split('\n').filter((l) => /verbose,info,(oneDNN|cpu,isa|cpu,runtime)/.test(l));
  const tally = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const f = line.split(',');
    if (f[1] !== 'exec') continue;
    // onednn_verbose,exec,cpu,<primitive>,<impl>,<prop>,<memory descriptors>,...
    const types = [...f[6]!.matchAll(/(src|wei|dst|bia|diff_src|diff_wei|diff_dst)_(\w+?):/g)].map((m) => `${m[1]}:${m[2]}`).join(' ');
    const key = `${f[3]} | ${f[4]} | ${f[5]} | ${types}`;
    tally.set(key, (tally.get(key) ?? 0) + 1);
  }
  console.log(info.join('\n'));
  console.log([...tally].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${String(n).padStart(5)}  ${k}`).join('\n'));
}
