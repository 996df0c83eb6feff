import { tf } from '../tf.js';
import { loadNativeAddon, type NativeAddon } from './addon.js';
import { batchMatMulConfig, fusedMatMulConfig } from './matmul.js';
import { elementwiseConfigs } from './elementwise.js';
import { reduceConfigs } from './reduce.js';
import { normConfigs } from './norm.js';
import { attentionConfigs } from './attention.js';
import { fusedLayerConfigs } from './fused_layers.js';
import { adamConfig } from './optim.js';
import { activationConfigs } from './activation.js';
import { unaryConfigs } from './unary.js';
import { selectConfig } from './select.js';
import { conv2DBackpropFilterConfig, conv2DBackpropInputConfig, conv2DConfig, fusedConv2DConfig } from './conv.js';
import { layoutConfigs } from './layout.js';
import { poolResizeConfigs } from './pool_resize.js';
import { gatherScatterCpuConfigs } from '../gather_scatter.js';
import { attachPool, nativeBuffers, type PooledBackend } from './buffer_pool.js';

/** tfjs backend name; no underscore (tfjs's getKernelsForBackend splits registry keys on '_'). */
export const NATIVE_BACKEND = 'native';

function nativeKernels(addon: NativeAddon): tf.KernelConfig[] {
  return [
    batchMatMulConfig(addon, NATIVE_BACKEND),
    fusedMatMulConfig(addon, NATIVE_BACKEND),
    conv2DConfig(addon, NATIVE_BACKEND),
    fusedConv2DConfig(addon, NATIVE_BACKEND),
    conv2DBackpropInputConfig(addon, NATIVE_BACKEND),
    conv2DBackpropFilterConfig(addon, NATIVE_BACKEND),
    ...elementwiseConfigs(addon, NATIVE_BACKEND),
    ...reduceConfigs(addon, NATIVE_BACKEND),
    ...normConfigs(addon, NATIVE_BACKEND),
    ...attentionConfigs(addon, NATIVE_BACKEND),
    ...fusedLayerConfigs(addon, NATIVE_BACKEND),
    adamConfig(addon, NATIVE_BACKEND),
    ...activationConfigs(addon, NATIVE_BACKEND),
    ...layoutConfigs(addon, NATIVE_BACKEND),
    ...poolResizeConfigs(addon, NATIVE_BACKEND),
    ...unaryConfigs(addon, NATIVE_BACKEND),
    selectConfig(addon, NATIVE_BACKEND),
    ...gatherScatterCpuConfigs(NATIVE_BACKEND),
  ];
}

/**
 * Registers the `native` tfjs backend: the cpu backend's tensor storage and kernels, with the hot
 * kernels replaced by oneDNN/OpenBLAS ones working on the same Float32Arrays. Returns false when
 * the addon is unavailable. Idempotent. Priority 0 so that it is only used when asked for.
 */
export function registerNativeBackend(): boolean {
  const load = loadNativeAddon();
  if (!load.addon) return false;
  if (tf.engine().registryFactory[NATIVE_BACKEND]) return true;
  const cpu = tf.findBackend('cpu');
  if (!cpu) throw new Error("tfjs 'cpu' backend is not registered; the native backend builds on it");
  const CpuBackend = cpu.constructor as new () => tf.KernelBackend;
  tf.registerBackend(
    NATIVE_BACKEND,
    () => {
      const backend = new CpuBackend();
      attachPool(backend as unknown as PooledBackend, nativeBuffers);
      return backend;
    },
    0,
  );
  tf.copyRegisteredKernels('cpu', NATIVE_BACKEND);
  for (const config of nativeKernels(load.addon)) {
    if (tf.getKernel(config.kernelName, NATIVE_BACKEND)) tf.unregisterKernel(config.kernelName, NATIVE_BACKEND);
    tf.registerKernel(config);
  }
  return true;
}
