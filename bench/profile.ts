/**
 * Where a training step's time goes, per tfjs kernel: runs one step of each NSP stage (and with
 * --dit the DiT pretraining and DiT-S/2 LoRA steps) under tf.profile and prints the kernels by
 * total time (count, ms, share) and the kernel calls per step. This is the profile behind the
 * bench's step rows. Run: `npx tsx bench/profile.ts [--backend native] [--stage 2] [--dit | --dit-only] [--precision bf16] [--top 25] [--json]`.
 */
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';
import { NSP_BENCH_BATCH, NSP_BENCH_CONFIG, nspStep } from './kernels.js';
import { ditLoraStep } from './dit_lora.js';
import { ditPretrainStep } from './dit_pretrain.js';
import { installComputePrecision } from '../src/train/compute_precision.js';

export interface KernelProfileRow {
  kernel: string;
  count: number;
  ms: number;
}

export interface StepProfile {
  name: string;
  wallMs: number;
  kernelMs: number;
  /** Kernel calls in one step (forward, backward, optimizer; a custom-gradient op counts as its scope plus its kernel), the number fusion brings down. */
  kernels: number;
  /** Of those, kernels that move no data (Reshape, Identity, ExpandDims, Squeeze): pure tfjs bookkeeping. */
  bookkeepingKernels: number;
  rows: KernelProfileRow[];
}

/** Kernels that only relabel a tensor's shape or identity: each costs the engine's ~25 µs and does no work. */
const NO_WORK_KERNELS = new Set(['Reshape', 'Identity', 'ExpandDims', 'Squeeze']);

/** Profiles one call of `step` (after a warm-up call). */
export async function profileStep(name: string, step: () => void): Promise<StepProfile> {
  step();
  const t0 = performance.now();
  const info = await tf.profile(step);
  const wallMs = performance.now() - t0;
  const byKernel = new Map<string, KernelProfileRow>();
  for (const kinfo of info.kernels) {
    const row = byKernel.get(kinfo.name) ?? { kernel: kinfo.name, count: 0, ms: 0 };
    row.count++;
    row.ms += Number(await kinfo.kernelTimeMs);
    byKernel.set(kinfo.name, row);
  }
  const rows = [...byKernel.values()].sort((a, b) => b.ms - a.ms);
  const kernels = rows.reduce((a, r) => a + r.count, 0);
  const bookkeepingKernels = rows.filter((r) => NO_WORK_KERNELS.has(r.kernel)).reduce((a, r) => a + r.count, 0);
  return { name, wallMs, kernelMs: rows.reduce((a, r) => a + r.ms, 0), kernels, bookkeepingKernels, rows };
}

/** Profiles one optimizer step (forward, backward, AdamW) of NSP stage `k` after a warm-up step. */
export async function profileNspStage(k: number): Promise<StepProfile> {
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  const { step, dispose } = nspStep(gen, k, new Rng(7));
  const s = NSP_BENCH_CONFIG.sizes[k]!;
  const profile = await profileStep(`NSP stage ${k} (${s}x${s}, batch ${NSP_BENCH_BATCH})`, step);
  dispose();
  gen.dispose?.();
  return profile;
}

/** The DiT pretraining and DiT-S/2 LoRA steps of the bench, profiled the same way. */
export async function profileDitSteps(): Promise<StepProfile[]> {
  const out: StepProfile[] = [];
  for (const make of [ditPretrainStep, () => ditLoraStep()]) {
    const { name, step, dispose } = make();
    out.push(await profileStep(name, step));
    dispose();
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const backend = pick('--backend') ?? 'native';
  const top = Number(pick('--top') ?? 20);
  await initBackend(backend);
  const precision = pick('--precision') ?? 'fp32';
  if (precision !== 'fp32' && precision !== 'bf16') throw new Error(`--precision: expected fp32 or bf16, got '${precision}'`);
  if (precision === 'bf16') console.log(`precision bf16: ${installComputePrecision('bf16').mode}`);
  const stages = args.includes('--dit-only') ? [] : pick('--stage') !== undefined ? [Number(pick('--stage'))] : NSP_BENCH_CONFIG.sizes.map((_, k) => k);
  const out: StepProfile[] = [];
  for (const k of stages) out.push(await profileNspStage(k));
  if (args.includes('--dit') || args.includes('--dit-only')) out.push(...(await profileDitSteps()));
  if (args.includes('--json')) {
    console.log(JSON.stringify({ backend, steps: out }, null, 2));
  } else {
    for (const p of out) {
      console.log(`\n${backend} ${p.name}: wall ${p.wallMs.toFixed(1)} ms (profiled), kernels ${p.kernelMs.toFixed(1)} ms, ${p.kernels} kernel calls per step (${p.bookkeepingKernels} of them reshape/identity)`);
      for (const r of p.rows.slice(0, top)) {
        console.log(`  ${r.kernel.padEnd(28)} ${String(r.count).padStart(5)}× ${r.ms.toFixed(1).padStart(8)} ms ${((100 * r.ms) / p.kernelMs).toFixed(1).padStart(5)} %`);
      }
    }
  }
}
