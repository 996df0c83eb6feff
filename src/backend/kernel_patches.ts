import { installResizeBilinearGradFix } from './resize_bilinear_grad.js';
import { installWasmTrainingKernels } from './wasm/training_kernels.js';

/**
 * Brings a JS backend's kernel set up to what training this toolkit needs: missing gradient
 * kernels on wasm, corrected ResizeBilinearGrad on both. Call after the backend's package has
 * been imported (a later import would re-register its stock kernels over these). Idempotent.
 */
export function installKernelPatches(backendName: 'cpu' | 'wasm'): void {
  if (backendName === 'wasm') installWasmTrainingKernels();
  installResizeBilinearGradFix(backendName);
}
