import { tf } from './tf.js';
import { resizeBilinearGradCpuConfig, resizeBilinearGradWasmConfig } from './resize_bilinear_grad.js';
import { installWasmTrainingKernels } from './wasm/training_kernels.js';
import { installWasmBatchMatMul } from './wasm/batch_matmul.js';
import { conv2dBackpropInputConfig } from './wasm/conv2d_backprop_input.js';
import { splitVCpuConfig, splitVWasmConfig } from './split_v.js';
import { gatherScatterCpuConfigs } from './gather_scatter.js';

/**
 * Stock kernels we override: wrong (ResizeBilinearGrad), far slower than the forward pass (wasm dx),
 * or copying element by element (SplitV, the gradient of every concat; GatherV2 and its gradient,
 * UnsortedSegmentSum, in gather_scatter.ts).
 */
const replacements: Record<'cpu' | 'wasm', tf.KernelConfig[]> = {
  cpu: [resizeBilinearGradCpuConfig, splitVCpuConfig],
  wasm: [resizeBilinearGradWasmConfig, conv2dBackpropInputConfig, splitVWasmConfig],
};

function replaceKernel(config: tf.KernelConfig): void {
  const current = tf.getKernel(config.kernelName, config.backendName);
  if (current === config) return;
  // Registering over an existing kernel logs "already registered"; unregistering first keeps logs clean.
  if (current) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

/**
 * Brings a JS backend's kernel set up to what training this toolkit needs: missing gradient
 * kernels on wasm, a corrected ResizeBilinearGrad on both, a faster wasm Conv2DBackpropInput.
 * Call after the backend's package has been imported (a later import would re-register its stock
 * kernels over these). Idempotent.
 */
export function installKernelPatches(backendName: 'cpu' | 'wasm'): void {
  if (backendName === 'wasm') {
    installWasmTrainingKernels();
    installWasmBatchMatMul();
  }
  for (const config of replacements[backendName]) replaceKernel(config);
  if (backendName === 'cpu') for (const config of gatherScatterCpuConfigs('cpu')) replaceKernel(config);
}
