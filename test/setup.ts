import { tf } from '../src/backend/tf.js';
import { installKernelPatches } from '../src/backend/kernel_patches.js';

// Unit tests run on the reference `cpu` backend unless a test picks another one itself; with the
// same kernel corrections production gets (tfjs's cpu ResizeBilinearGrad is wrong otherwise).
installKernelPatches('cpu');
await tf.setBackend(process.env.SCALEFORGE_TEST_BACKEND ?? 'cpu');
