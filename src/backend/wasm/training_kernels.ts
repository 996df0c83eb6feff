import { tf } from '../tf.js';
import { conv2dBackpropFilterConfig } from './conv2d_backprop_filter.js';
import { unsortedSegmentSumConfig } from './unsorted_segment_sum.js';

/** Kernels tfjs-backend-wasm 4.22 lacks and that training this toolkit's layers needs. */
export const wasmTrainingKernels: readonly tf.KernelConfig[] = [conv2dBackpropFilterConfig, unsortedSegmentSumConfig];

/**
 * Registers the missing wasm kernels; idempotent. Only a kernel wasm does not already provide is
 * registered, so a future tfjs release that ships its own C++ version keeps it.
 */
export function installWasmTrainingKernels(): string[] {
  const installed: string[] = [];
  for (const config of wasmTrainingKernels) {
    if (tf.getKernel(config.kernelName, 'wasm') !== undefined) continue;
    tf.registerKernel(config);
    installed.push(config.kernelName);
  }
  return installed;
}
