import { tf } from '../backend/tf.js';
import { setComputeCast } from '../nn/compute_cast.js';
import { loadNativeAddon } from '../backend/native/addon.js';
import { NATIVE_BACKEND } from '../backend/native/backend.js';
import { bf16Hardware, nativeBf16Active, setNativeBf16 } from '../backend/native/bf16.js';
import { castTo, type Precision } from './precision.js';

/**
 * How a run's `precision` is carried out on the backend in use:
 * - 'bf16-onednn': matmul and convolution (forward and both gradients) on oneDNN's bf16 kernels
 *   with fp32 accumulation, as torch.autocast('cpu', dtype=torch.bfloat16); everything else fp32.
 * - 'bf16-emulated' / 'fp16-emulated': Linear/Conv2d operands rounded to the format exactly
 *   (train/precision.ts), products in fp32 — same numbers a real run would see, no speed gained.
 */
export type ComputeMode = 'fp32' | 'bf16-onednn' | 'bf16-emulated' | 'fp16-emulated';

/** What the choice depends on, gathered by installComputePrecision (a parameter so tests can vary it). */
export interface ComputeFacts {
  backend: string;
  /** The CPU's bf16 instructions as oneDNN sees them (null: none, or the native addon is not loaded). */
  bf16Hardware: string | null;
  /** SCALEFORGE_BF16=emulate: keep the emulation even where real bf16 kernels exist (for comparisons). */
  forceEmulation: boolean;
}

export interface ComputeChoice {
  mode: ComputeMode;
  /** One line for the run log. */
  line: string;
}

export function chooseComputeMode(precision: Precision, facts: ComputeFacts): ComputeChoice {
  if (precision === 'fp32') return { mode: 'fp32', line: 'precision fp32' };
  const emulated = (why: string): ComputeChoice => ({
    mode: precision === 'bf16' ? 'bf16-emulated' : 'fp16-emulated',
    line: `precision ${precision}: emulated (Linear/Conv2d operands rounded to ${precision}, fp32 products; no speed-up) — ${why}`,
  });
  if (precision === 'fp16') return emulated('no fp16 compute kernels on CPU backends');
  if (facts.backend !== NATIVE_BACKEND) return emulated(`backend '${facts.backend}' has no bf16 kernels (the native backend has)`);
  if (!facts.bf16Hardware) return emulated('this CPU has no AVX-512-BF16 or AMX');
  if (facts.forceEmulation) return emulated('SCALEFORGE_BF16=emulate');
  return {
    mode: 'bf16-onednn',
    line: `precision bf16: matmul and convolution in bf16 on oneDNN (${facts.bf16Hardware}), fp32 accumulation, fp32 master weights`,
  };
}

function currentFacts(env: NodeJS.ProcessEnv): ComputeFacts {
  const backend = tf.getBackend();
  const info = backend === NATIVE_BACKEND ? loadNativeAddon().info : undefined;
  return {
    backend,
    bf16Hardware: info ? bf16Hardware(info.dnnlCpuIsa) : null,
    forceEmulation: env.SCALEFORGE_BF16 === 'emulate',
  };
}

/** Puts `precision` into effect for the Linear/Conv2d products that follow; undo with resetComputePrecision. */
export function installComputePrecision(precision: Precision, env: NodeJS.ProcessEnv = process.env): ComputeChoice {
  const choice = chooseComputeMode(precision, currentFacts(env));
  resetComputePrecision();
  if (choice.mode === 'bf16-onednn') setNativeBf16(loadNativeAddon().addon!, true);
  else if (precision !== 'fp32') setComputeCast((x) => castTo(precision, x));
  return choice;
}

/** Back to fp32 products (both the emulation's cast and the native bf16 kernels off). */
export function resetComputePrecision(): void {
  setComputeCast(null);
  if (nativeBf16Active()) setNativeBf16(loadNativeAddon().addon!, false);
}
