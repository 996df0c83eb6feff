import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { describeBf16 } from './bf16.js';
import { otherCoresSampler, ThreadGovernor } from './thread_governor.js';
import type { FusedLayerAddon } from './fused_layers.js';

/** The N-API addon's functions (native/src/addon.cc). All work synchronously on the given arrays. */
export interface NativeAddon extends FusedLayerAddon {
  info(): NativeInfo;
  setThreads(n: number): void;
  /** Whether, inside a native call, SIGCHLD is blocked on every OpenMP thread (native/src/signal_shield.h). */
  asyncSignalsBlocked(): boolean;
  /** Row-major C[m,n] = op(A)·op(B) written at c[cOffset..]; library 0 = oneDNN, 1 = OpenBLAS. */
  sgemm(
    library: 0 | 1,
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    a: Float32Array,
    aOffset: number,
    b: Float32Array,
    bOffset: number,
    c: Float32Array,
    cOffset: number,
  ): void;
  /** oneDNN matmul over broadcastable batch dims (same rank); returns the implementation name. */
  matmul(
    aDims: Int32Array,
    bDims: Int32Array,
    transA: boolean,
    transB: boolean,
    /** Either operand may be its bf16 bits (toBf16) while the bf16 kernels are on. */
    a: Float32Array | Uint16Array,
    b: Float32Array | Uint16Array,
    bias: Float32Array | null,
    c: Float32Array,
    activation: number,
    alpha: number,
    /** c = scale·op(a)·op(b) (+ bias); with accumulate, c += that (c's values are read). */
    scale: number,
    accumulate: boolean,
  ): string;
  /** dst = src rounded to bf16 (round to nearest even), the conversion the bf16 kernels make. */
  toBf16(src: Float32Array, dst: Uint16Array): void;
  /** oneDNN convolution pass (0 forward, 1 backward data, 2 backward weights); returns the implementation name. */
  conv(kind: 0 | 1 | 2, params: Int32Array, alpha: number, in1: Float32Array, in2: Float32Array, bias: Float32Array | null, out: Float32Array): string;
  /** While on, matmul and conv take bf16 operands with fp32 accumulation and output (native/src/bf16.h). */
  setBf16Compute(on: boolean): void;
  /**
   * out = a ∘ b with numpy broadcasting; shapes padded to out's rank. Ops 0–7 (add, sub, mul, div,
   * maximum, minimum, squared difference, pow) write floats; comparisons 8–13 (>, >=, <, <=, ==, !=) bool bytes.
   */
  binary(op: number, a: Float32Array, aShape: Int32Array, b: Float32Array, bShape: Int32Array, out: Float32Array | Uint8Array, outShape: Int32Array): void;
  /** y = op(x) elementwise (codes in native/src/unary.h); p0/p1 are the op's attributes (alpha, clip bounds). */
  unary(op: number, x: Float32Array, y: Float32Array, p0: number, p1: number): void;
  /** out = condition ? t : e; the condition has one byte per element, or one per row of t's first axis. */
  select(condition: Uint8Array, t: Float32Array, e: Float32Array, out: Float32Array): void;
  /** Softmax of each length-`cols` row. */
  softmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void;
  /** out = x[begin : begin + size] of a dense x. */
  slice(x: Float32Array, shape: Int32Array, begin: Int32Array, size: Int32Array, out: Float32Array): void;
  /** Group normalisation of x [n, s, c] (dims = [n, s, c, groups]): y, and per-(n, group) mean and 1/std. */
  groupNorm(x: Float32Array, dims: Int32Array, eps: number, y: Float32Array, mean: Float32Array, rstd: Float32Array): void;
  /** dx of groupNorm's y given dy and the forward's mean and rstd. */
  groupNormGrad(dy: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, dims: Int32Array, dx: Float32Array): void;
  /** One Adam/AdamW step (moments null on the first step); hyper = [lr, beta1, beta2, eps, weightDecay, step, decoupled 0/1]. */
  adam(
    p: Float32Array,
    g: Float32Array,
    m0: Float32Array | null,
    v0: Float32Array | null,
    pOut: Float32Array,
    mOut: Float32Array,
    vOut: Float32Array,
    hyper: number[],
  ): void;
  /** y = f(x) for f = 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 QuickGELU. */
  activation(kind: 0 | 1 | 2 | 3, x: Float32Array, y: Float32Array): void;
  /** dx = dy · f'(x). */
  activationGrad(kind: 0 | 1 | 2 | 3, dy: Float32Array, x: Float32Array, dx: Float32Array): void;
  /** out = op (0 sum, 1 mean, 2 max, 3 min, 4 prod) over the dims where reducedMask is non-zero; accumulates in double. */
  reduce(op: 0 | 1 | 2 | 3 | 4, x: Float32Array, shape: Int32Array, reducedMask: Int32Array, out: Float32Array): void;
  /** out = x transposed: out's dim i is x's dim perm[i]. */
  transpose(x: Float32Array, shape: Int32Array, perm: Int32Array, out: Float32Array): void;
  /** Row o of out is row o of each input in turn; input k's rows hold runs[k] values. */
  concat(inputs: Float32Array[], runs: Int32Array, outer: number, out: Float32Array): void;
  /** The inverse of concat: each row of x cut into one run per output. */
  splitV(x: Float32Array, runs: Int32Array, outer: number, outputs: Float32Array[]): void;
  /** out = x repeated reps[i] times along each dim. */
  tile(x: Float32Array, shape: Int32Array, reps: Int32Array, out: Float32Array): void;
  /** out = x with `value` padding before/after each dim (x non-empty). */
  pad(x: Float32Array, shape: Int32Array, before: Int32Array, after: Int32Array, value: number, out: Float32Array): void;
  /** NHWC average pooling (0 forward x→y, 1 backward dy→dx); params: batch inH inW C outH outW fH fW sH sW padTop padLeft. */
  pool(kind: 0 | 1, params: Int32Array, input: Float32Array, out: Float32Array): void;
  /** NHWC resize (0 bilinear, 1 its backward, 2 nearest, 3 its backward); params: batch inH inW C outH outW. */
  resize(kind: 0 | 1 | 2 | 3, params: Int32Array, alignCorners: boolean, halfPixelCenters: boolean, input: Float32Array, out: Float32Array): void;
  /** LAPACK dsyevd on a symmetric n×n (column-major upper triangle): ascending eigenvalues into w; with vectors, a becomes them (columns). */
  dsyevd(vectors: boolean, n: number, a: Float64Array, w: Float64Array): void;
  /** BLAS dgemm, row-major: c[m×n] = alpha·op(a)·op(b) + beta·c. */
  dgemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: Float64Array, b: Float64Array, beta: number, c: Float64Array): void;
  /** BLAS dsyrk, row-major: upper triangle of c[n×n] = alpha·aᵀa + beta·c for a [k×n]. */
  dsyrk(n: number, k: number, alpha: number, a: Float64Array, beta: number, c: Float64Array): void;
  /** LAPACK dpotrf in place (row-major lower triangle = L of a = L·Lᵀ); returns info (> 0: not positive definite). */
  dpotrf(n: number, a: Float64Array): number;
  /** BLAS dtrmm, row-major: b[m×n] = alpha·op(a)·b (left) or alpha·b·op(a) (right), a triangular. */
  dtrmm(right: boolean, lower: boolean, transA: boolean, m: number, n: number, alpha: number, a: Float64Array, b: Float64Array): void;
  /** dx = x > 0 ? dy : dy·alpha, alpha rounded to float32 (the gradient of tf.leakyRelu). */
  leakyReluGrad(dy: Float32Array, x: Float32Array, alpha: number, dx: Float32Array): void;
  /** Attention on token-major q [B, Nq, H, d], k/v [B, Nk, Hkv, d] (dims = [B, Nq, Nk, H, Hkv, d]): o, and the probabilities [B, H, Nq, Nk]. */
  attention(dims: Int32Array, scale: number, causal: boolean, q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, p: Float32Array): void;
  /** dq, dk, dv of attention from dO and the forward's probabilities. */
  attentionGrad(
    dims: Int32Array,
    scale: number,
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    p: Float32Array,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
  ): void;
}

export interface NativeInfo {
  dnnlVersion: string;
  dnnlCpuIsa: number;
  /** Whether oneDNN was allowed to use Intel AMX (off by default in oneDNN 2.6), in words. */
  dnnlAmx: string;
  openblasCore: string;
  openblasConfig: string;
  ompThreads: number;
  openblasThreads: number;
}

export type NativeLoad = { addon: NativeAddon; info: NativeInfo; reason?: undefined } | { addon?: undefined; info?: undefined; reason: string };

const APT_PACKAGES = 'libdnnl-dev libopenblas-dev g++ make python3';
export const NATIVE_INSTALL_HINT = `apt-get install -y ${APT_PACKAGES}, then \`npm run build:native\``;

const nativeDir = fileURLToPath(new URL('../../../native/', import.meta.url));
const addonPath = `${nativeDir}build/Release/scaleforge_native.node`;

/** What the install-time build recorded, when it failed (native/install.mjs). */
function buildFailure(): string | undefined {
  const statusFile = `${nativeDir}build/install-status.json`;
  if (!existsSync(statusFile)) return undefined;
  try {
    const status = JSON.parse(readFileSync(statusFile, 'utf8')) as { ok?: boolean; reason?: string };
    return status.ok ? undefined : status.reason;
  } catch {
    return undefined;
  }
}

let loaded: NativeLoad | undefined;

/** How many threads the libraries use and why; `scaleforge env` prints it. */
export interface ThreadChoice {
  threads: number;
  reason: string;
  /** The OpenMP wait policy in force (what libgomp read from the environment at load). */
  wait: string;
  /** Chosen from the machine rather than given by the user: only then does it follow contention. */
  automatic?: boolean;
}

/** CPUs the cgroup lets this process use (cgroup v2 cpu.max), when it sets a quota. */
export function cgroupCpuLimit(cpuMax: string | undefined): number | undefined {
  if (!cpuMax) return undefined;
  const [quota, period] = cpuMax.trim().split(/\s+/);
  if (!quota || quota === 'max' || !period) return undefined;
  const cpus = Number(quota) / Number(period);
  return Number.isFinite(cpus) && cpus > 0 ? Math.max(1, Math.floor(cpus)) : undefined;
}

function readCgroupCpuMax(): string | undefined {
  try {
    return readFileSync('/sys/fs/cgroup/cpu.max', 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Threads for oneDNN (OpenMP) and OpenBLAS: SCALEFORGE_THREADS, else what the user gave the
 * libraries (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, read at load), else every core this process may
 * run on (scheduler affinity, capped by a cgroup CPU quota). Not reduced by the load average: it
 * is a minute-long average that counts whatever ran just before (a previous benchmark, a compile),
 * which once made an idle machine train on one of its two cores. Sharing is handled by the wait
 * policy instead (see waitPolicy).
 */
export function chooseThreads(env: NodeJS.ProcessEnv, availableCores: number, cgroupCpus: number | undefined): Omit<ThreadChoice, 'wait'> {
  const explicit = (name: string) => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number.parseInt(v, 10);
    return Number.isFinite(n) && n >= 1 ? n : undefined;
  };
  const own = explicit('SCALEFORGE_THREADS');
  if (own !== undefined) return { threads: own, reason: `SCALEFORGE_THREADS=${own}` };
  const omp = explicit('OMP_NUM_THREADS');
  if (omp !== undefined) return { threads: omp, reason: `OMP_NUM_THREADS=${omp}` };
  const blas = explicit('OPENBLAS_NUM_THREADS');
  if (blas !== undefined) return { threads: blas, reason: `OPENBLAS_NUM_THREADS=${blas}` };
  if (cgroupCpus !== undefined && cgroupCpus < availableCores) {
    return { threads: cgroupCpus, reason: `the cgroup CPU quota (${cgroupCpus} of ${availableCores} cores)`, automatic: true };
  }
  return { threads: availableCores, reason: `every core this process may run on (${availableCores}; fewer while other processes hold cores)`, automatic: true };
}

/**
 * libgomp's default is to spin ~300 000 iterations at every barrier before sleeping. When another
 * process holds one of the cores, a spinning thread keeps the core its descheduled teammate needs,
 * and every kernel then waits a scheduler time slice for that teammate. A short spin (a few µs,
 * still longer than the JS work between two kernels of a step) keeps the idle speed and lets the
 * core go when it is contended (bench/threads.ts measures both). Must be set before libgomp loads;
 * a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
 */
export const DEFAULT_SPINCOUNT = '10000';

export function waitPolicy(env: NodeJS.ProcessEnv): string {
  if (env.OMP_WAIT_POLICY) return `OMP_WAIT_POLICY=${env.OMP_WAIT_POLICY} (user)`;
  if (env.GOMP_SPINCOUNT) return `GOMP_SPINCOUNT=${env.GOMP_SPINCOUNT} (user)`;
  env.GOMP_SPINCOUNT = DEFAULT_SPINCOUNT;
  return `GOMP_SPINCOUNT=${DEFAULT_SPINCOUNT} (short spin, then sleep)`;
}

let threadChoice: ThreadChoice | undefined;

/** The thread count and wait policy the addon was loaded with (undefined before it loads). */
export function nativeThreadChoice(): ThreadChoice | undefined {
  return threadChoice;
}

function applyThreads(load: Extract<NativeLoad, { addon: NativeAddon }>, n: number, reason: string): void {
  load.addon.setThreads(n);
  threadChoice = { threads: n, reason, wait: threadChoice?.wait ?? '' };
  load.info.ompThreads = n;
  load.info.openblasThreads = n;
}

/** Changes the libraries' thread count at run time and fixes it (bench/steps.ts measures 1 and 2 threads). */
export function setNativeThreads(n: number, reason: string): void {
  const load = loadNativeAddon();
  if (!load.addon) throw new Error(load.reason);
  governor = undefined;
  applyThreads(load, n, reason);
}

let governor: ThreadGovernor | undefined;

/**
 * Between training steps: lets the thread count follow contention (thread_governor.ts) when it was
 * chosen automatically; a no-op when the addon is not loaded or the count was given.
 */
export function adaptNativeThreads(): void {
  governor?.tick();
}

/**
 * Loads the addon once, with the thread count of chooseThreads and the wait policy of waitPolicy.
 * SCALEFORGE_NO_NATIVE=1 turns the backend off.
 */
export function loadNativeAddon(): NativeLoad {
  if (loaded) return loaded;
  if (process.env.SCALEFORGE_NO_NATIVE && process.env.SCALEFORGE_NO_NATIVE !== '0') {
    return (loaded = { reason: 'disabled by SCALEFORGE_NO_NATIVE' });
  }
  if (!existsSync(addonPath)) {
    const why = buildFailure();
    return (loaded = {
      reason: `not built: ${why ? `the install-time build failed (${why})` : 'native/build/Release/scaleforge_native.node is missing'}; to get it: ${NATIVE_INSTALL_HINT}`,
    });
  }
  try {
    const wait = waitPolicy(process.env);
    const choice = chooseThreads(process.env, os.availableParallelism(), cgroupCpuLimit(readCgroupCpuMax()));
    const addon = createRequire(import.meta.url)(addonPath) as NativeAddon;
    addon.setThreads(choice.threads);
    threadChoice = { ...choice, wait };
    const load = (loaded = { addon, info: addon.info() });
    if (choice.automatic && choice.threads > 1 && process.env.SCALEFORGE_ADAPTIVE_THREADS !== '0') {
      const auto = choice.reason;
      governor = new ThreadGovernor({
        maxThreads: choice.threads,
        sample: otherCoresSampler(),
        apply: (n, why) => applyThreads(load, n, n === choice.threads ? auto : `${why}; adapts between steps`),
      });
    }
    return load;
  } catch (e) {
    const message = e instanceof Error ? e.message.split('\n')[0]! : String(e);
    // A build from another machine whose shared libraries are gone fails here (ERR_DLOPEN_FAILED).
    return (loaded = { reason: `addon failed to load: ${message}; to fix: ${NATIVE_INSTALL_HINT}` });
  }
}

/** One line for `scaleforge env`: library versions, ISA, BLAS core and threads. */
export function describeNative(info: NativeInfo): string {
  const t = threadChoice;
  const threads = t ? `${info.ompThreads} threads (${t.reason}; ${t.wait})` : `threads ${info.ompThreads} omp / ${info.openblasThreads} blas`;
  return `oneDNN ${info.dnnlVersion} (isa 0x${info.dnnlCpuIsa.toString(16)}), OpenBLAS core ${info.openblasCore}, ${threads}; ${describeBf16(info)}`;
}
