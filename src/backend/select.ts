import { tf } from './tf.js';
import { UsageError } from '../util/errors.js';
import { installKernelPatches } from './kernel_patches.js';
import { describeNative, loadNativeAddon } from './native/addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from './native/backend.js';
import { gemmPolicy } from './native/matmul.js';

/** What a probe found out about one backend without switching to it. */
export interface BackendStatus {
  name: string;
  available: boolean;
  /** Why it is unavailable (or why initialising it failed). */
  reason?: string;
  /** What was found when available: package, version, build flags. */
  detail?: string;
}

export interface BackendCandidate {
  name: string;
  probe(): Promise<{ available: boolean; reason?: string; detail?: string }>;
  /** Makes this the active tfjs backend; throws when that fails. */
  init(): Promise<void>;
}

const TFJS_NODE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

interface LoadedPackage {
  name: string;
  version?: string;
}

function isModuleNotFound(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND';
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message.split('\n')[0]! : String(e);
}

// A specifier held in a variable keeps TypeScript from resolving optional packages at compile time.
async function importOptional(specifier: string): Promise<Record<string, unknown>> {
  return (await import(specifier)) as Record<string, unknown>;
}

let tfjsNodeLoad: Promise<{ loaded?: LoadedPackage; failures: string[] }> | undefined;

/** Imports the first tfjs-node build that loads (GPU first); importing it registers 'tensorflow'. */
function loadTfjsNode(): Promise<{ loaded?: LoadedPackage; failures: string[] }> {
  tfjsNodeLoad ??= (async () => {
    const failures: string[] = [];
    for (const name of TFJS_NODE_PACKAGES) {
      try {
        const mod = await importOptional(name);
        const version = (mod.version as { 'tfjs-node'?: string } | undefined)?.['tfjs-node'];
        return { loaded: { name, version }, failures };
      } catch (e) {
        failures.push(isModuleNotFound(e) ? `${name} not installed` : `${name} failed to load: ${messageOf(e)}`);
      }
    }
    return { failures };
  })();
  return tfjsNodeLoad;
}

let wasmLoad: Promise<Record<string, unknown>> | undefined;

export function loadWasmPackage(): Promise<Record<string, unknown>> {
  wasmLoad ??= importOptional('@tensorflow/tfjs-backend-wasm');
  return wasmLoad;
}

async function setBackendOrThrow(name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok || tf.getBackend() !== name) throw new Error(`tf.setBackend('${name}') failed`);
}

const tensorflowCandidate: BackendCandidate = {
  name: 'tensorflow',
  async probe() {
    const { loaded, failures } = await loadTfjsNode();
    if (!loaded) return { available: false, reason: failures.join('; ') };
    return { available: true, detail: `${loaded.name}${loaded.version ? ` ${loaded.version}` : ''}` };
  },
  async init() {
    const { loaded, failures } = await loadTfjsNode();
    if (!loaded) throw new Error(failures.join('; '));
    await setBackendOrThrow('tensorflow');
  },
};

/** The N-API oneDNN/OpenBLAS backend (native/, src/backend/native/); optional at install time. */
const nativeCandidate: BackendCandidate = {
  name: 'native',
  async probe() {
    const load = loadNativeAddon();
    if (!load.addon) return { available: false, reason: load.reason };
    return { available: true, detail: `${describeNative(load.info)}; GEMM: ${gemmPolicy(load.info.openblasCore, load.info.dnnlCpuIsa).reason}` };
  },
  async init() {
    if (!registerNativeBackend()) throw new Error(loadNativeAddon().reason ?? 'native addon unavailable');
    await setBackendOrThrow(NATIVE_BACKEND);
  },
};

const wasmCandidate: BackendCandidate = {
  name: 'wasm',
  async probe() {
    if (typeof (globalThis as { WebAssembly?: unknown }).WebAssembly !== 'object') return { available: false, reason: 'this runtime has no WebAssembly' };
    try {
      const mod = await loadWasmPackage();
      const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      return {
        available: true,
        detail: `@tensorflow/tfjs-backend-wasm ${String(mod.version_wasm)}, ${simd ? 'SIMD' : 'no SIMD'}`,
      };
    } catch (e) {
      return {
        available: false,
        reason: isModuleNotFound(e)
          ? '@tensorflow/tfjs-backend-wasm not installed'
          : `@tensorflow/tfjs-backend-wasm failed to load: ${messageOf(e)}`,
      };
    }
  },
  async init() {
    await loadWasmPackage();
    const before = {
      uncaughtException: process.listeners('uncaughtException'),
      unhandledRejection: process.listeners('unhandledRejection'),
    };
    await setBackendOrThrow('wasm');
    removeListenersAddedSince(before);
    installKernelPatches('wasm');
  },
};

const cpuCandidate: BackendCandidate = {
  name: 'cpu',
  async probe() {
    return { available: true, detail: 'pure-JS reference kernels (slow)' };
  },
  async init() {
    installKernelPatches('cpu');
    await setBackendOrThrow('cpu');
  },
};

/**
 * Candidates in the order `auto` tries them: libtensorflow where installed, then the oneDNN/OpenBLAS
 * addon (several times faster than wasm on a training step, see the README's bench table), then
 * wasm (single-threaded in Node), then the pure-JS reference kernels.
 */
export const backendCandidates: readonly BackendCandidate[] = [tensorflowCandidate, nativeCandidate, wasmCandidate, cpuCandidate];

/**
 * The emscripten loader of tfjs-backend-wasm installs process handlers that rethrow every
 * uncaught error and unhandled rejection from inside its own bundle, so Node reports them at a
 * line of the wasm glue code instead of where they came from. Node's defaults do better.
 */
function removeListenersAddedSince(before: Record<'uncaughtException' | 'unhandledRejection', Function[]>): void {
  const emitter = process as NodeJS.EventEmitter;
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    for (const listener of emitter.listeners(event)) {
      if (!before[event].includes(listener)) (process as NodeJS.EventEmitter).removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
}

export async function listBackends(): Promise<BackendStatus[]> {
  const statuses: BackendStatus[] = [];
  for (const c of backendCandidates) {
    try {
      statuses.push({ name: c.name, ...(await c.probe()) });
    } catch (e) {
      statuses.push({ name: c.name, available: false, reason: `probe failed: ${messageOf(e)}` });
    }
  }
  return statuses;
}

/** The backend `auto` would pick from probe results (the first available one in order). */
export function autoChoice(statuses: readonly BackendStatus[]): string | undefined {
  return statuses.find((s) => s.available)?.name;
}

export const BACKEND_NAMES = ['auto', ...backendCandidates.map((c) => c.name)];

/**
 * Activates a tfjs backend: `requested` (from --backend), else env SCALEFORGE_BACKEND, else
 * `auto` (first that initialises in the order tensorflow → native → wasm → cpu). Choosing wasm
 * also registers the training kernels it lacks. A named backend that is unavailable is a UsageError.
 */
export async function initBackend(requested?: string): Promise<{ name: string; statuses: BackendStatus[] }> {
  const fromEnv = process.env.SCALEFORGE_BACKEND;
  const source = requested !== undefined ? '--backend' : 'SCALEFORGE_BACKEND';
  const wanted = (requested ?? (fromEnv === '' ? undefined : fromEnv) ?? 'auto').trim().toLowerCase();
  if (!BACKEND_NAMES.includes(wanted)) {
    throw new UsageError(`${source}: unknown backend '${wanted}'; expected one of ${BACKEND_NAMES.join(', ')}`);
  }
  const statuses = await listBackends();
  const candidates = wanted === 'auto' ? backendCandidates : backendCandidates.filter((c) => c.name === wanted);
  for (const candidate of candidates) {
    const status = statuses.find((s) => s.name === candidate.name)!;
    if (!status.available) {
      if (wanted !== 'auto') throw new UsageError(`${source}: backend '${wanted}' is not available: ${status.reason}`);
      continue;
    }
    try {
      await candidate.init();
      return { name: candidate.name, statuses };
    } catch (e) {
      status.available = false;
      status.reason = `initialisation failed: ${messageOf(e)}`;
      if (wanted !== 'auto') throw new UsageError(`${source}: backend '${wanted}' is not available: ${status.reason}`);
    }
  }
  throw new Error(`no tfjs backend could be initialised: ${statuses.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}
