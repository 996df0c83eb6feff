/**
 * What the layer fusions buy, per training step of the bench: each step timed with the fused
 * kernels of this file's list on and off, interleaved (one of each per round, medians), with the
 * kernel calls per step of both. "Off" composes the same functions from tfjs ops, i.e. the code
 * path before the fusions. Run: `npx tsx bench/fusion.ts [--threads 2] [--rounds 7] [--json]`.
 */
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { setNativeThreads } from '../src/backend/native/addon.js';
import { disableFusedKernels, FUSED_KERNELS } from '../src/backend/fused.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';
import { NSP_BENCH_BATCH, NSP_BENCH_CONFIG, nspStep } from './kernels.js';
import { ditLoraStep } from './dit_lora.js';
import { ditPretrainStep } from './dit_pretrain.js';
import { formatTable, type BenchRow } from './row.js';

/** The fusions of the layer level (conv over a list, norm + modulation, linear, gated residual). */
export const LAYER_FUSIONS = [
  FUSED_KERNELS.convList,
  FUSED_KERNELS.normModulate,
  FUSED_KERNELS.linear,
  FUSED_KERNELS.gatedResidual,
] as const;

const median = (t: number[]) => [...t].sort((a, b) => a - b)[t.length >> 1]!;

async function kernelCount(step: () => void): Promise<number> {
  return (await tf.profile(step)).kernels.length;
}

export async function runFusionBench(opts: { threads?: number; rounds?: number; log?: (l: string) => void } = {}): Promise<BenchRow[]> {
  const rounds = opts.rounds ?? 7;
  const log = opts.log ?? (() => {});
  await initBackend('native');
  if (opts.threads) setNativeThreads(opts.threads, `bench/fusion.ts --threads ${opts.threads}`);
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  const steps: { name: string; make: () => { step: () => void; dispose: () => void } }[] = [
    ...NSP_BENCH_CONFIG.sizes.map((s, k) => ({ name: `nsp train step stage ${k} (${s}x${s}, batch ${NSP_BENCH_BATCH})`, make: () => nspStep(gen, k, new Rng(7)) })),
    { name: 'dit pretrain step', make: ditPretrainStep },
    { name: 'dit-s/2 lora step', make: () => ditLoraStep() },
  ];
  const rows: BenchRow[] = [];
  for (const { name, make } of steps) {
    const { step, dispose } = make();
    const load = os.loadavg()[0]!;
    const on = () => disableFusedKernels([]);
    const off = () => disableFusedKernels(LAYER_FUSIONS);
    off();
    step();
    const kernelsOff = await kernelCount(step);
    on();
    step();
    const kernelsOn = await kernelCount(step);
    const ratios: number[] = [];
    const msOn: number[] = [];
    const msOff: number[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const [set, out] of [[on, msOn], [off, msOff]] as const) {
        set();
        const t0 = performance.now();
        step();
        out.push(performance.now() - t0);
      }
      ratios.push(msOn.at(-1)! / msOff.at(-1)!);
    }
    on();
    dispose();
    const row: BenchRow = {
      name: `native ${name}: fused ÷ unfused`,
      value: median(ratios),
      unit: '×',
      note: `kernels/step ${kernelsOff} → ${kernelsOn}; median of ${rounds} interleaved: ${median(msOff).toFixed(1)} → ${median(msOn).toFixed(1)} ms; load ${load.toFixed(1)}`,
    };
    rows.push(row);
    log(`${row.name.padEnd(64)} ${row.value.toFixed(2)}×  (${row.note})`);
  }
  gen.dispose?.();
  tf.disposeVariables();
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const json = args.includes('--json');
  const rows = await runFusionBench({
    threads: pick('--threads') ? Number(pick('--threads')) : undefined,
    rounds: pick('--rounds') ? Number(pick('--rounds')) : undefined,
    log: json ? undefined : (l) => console.error(l),
  });
  console.log(json ? JSON.stringify({ cpu: os.cpus()[0]?.model, rows }, null, 2) : formatTable(rows));
}
