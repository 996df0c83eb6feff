import type { NativeAddon, NativeInfo } from './addon.js';

/**
 * Real bf16 compute on the native backend (native/src/bf16.cc). While it is on, every matmul and
 * convolution kernel of the backend — forward, backward data and backward weights alike, since
 * tfjs computes gradients with the same kernels — converts its fp32 operands to bf16, multiplies
 * them on oneDNN's bf16 kernels with fp32 accumulation and writes fp32, which is what
 * torch.autocast('cpu', dtype=torch.bfloat16) does for these ops. Tensors, master weights,
 * optimizer state and every other op stay fp32.
 */

/** dnnl_cpu_isa_t values (oneDNN 2.6 dnnl_types.h): AVX-512 with BF16, and with AMX. */
export const DNNL_ISA_AVX512_BF16 = 0xe7;
export const DNNL_ISA_AMX = 0x3e7;

/** The bf16 instructions oneDNN dispatches to on this CPU, or null when it has none. */
export function bf16Hardware(dnnlIsa: number): 'AMX-BF16' | 'AVX-512-BF16' | null {
  if ((dnnlIsa & DNNL_ISA_AMX) === DNNL_ISA_AMX) return 'AMX-BF16';
  if ((dnnlIsa & DNNL_ISA_AVX512_BF16) === DNNL_ISA_AVX512_BF16) return 'AVX-512-BF16';
  return null;
}

let active = false;

/** Whether the backend's matmul/conv kernels currently run in bf16. */
export function nativeBf16Active(): boolean {
  return active;
}

/** Turns the bf16 kernels on or off (process-wide: the addon keeps one flag). */
export function setNativeBf16(addon: NativeAddon, on: boolean): void {
  addon.setBf16Compute(on);
  active = on;
}

/** One line for `scaleforge env`: what `precision: bf16` runs on with this CPU. */
export function describeBf16(info: Pick<NativeInfo, 'dnnlCpuIsa' | 'dnnlAmx'>): string {
  const hw = bf16Hardware(info.dnnlCpuIsa);
  const amx = info.dnnlAmx && info.dnnlAmx !== 'no AMX on this CPU' ? ` (${info.dnnlAmx})` : '';
  return hw
    ? `bf16 compute: oneDNN bf16 kernels on ${hw}${amx} for matmul and convolution, fp32 accumulation and master weights`
    : `bf16 compute: emulated (operands rounded to bf16, fp32 products); the CPU has no bf16 instructions${amx}`;
}
