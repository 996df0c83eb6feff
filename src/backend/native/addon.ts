import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

/** The N-API addon's functions (native/src/addon.cc). All work synchronously on the given arrays. */
export interface NativeAddon {
  info(): NativeInfo;
  setThreads(n: number): void;
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
    a: Float32Array,
    b: Float32Array,
    bias: Float32Array | null,
    c: Float32Array,
    activation: number,
    alpha: number,
  ): string;
  /** oneDNN convolution pass (0 forward, 1 backward data, 2 backward weights); returns the implementation name. */
  conv(kind: 0 | 1 | 2, params: Int32Array, alpha: number, in1: Float32Array, in2: Float32Array, bias: Float32Array | null, out: Float32Array): string;
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
}

export interface NativeInfo {
  dnnlVersion: string;
  dnnlCpuIsa: number;
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

/**
 * Threads for the libraries: every core, less the cores other processes already keep busy (the
 * 1-minute load average, read before this process starts working). An OpenMP team waits at every
 * kernel for its slowest thread; with a thread that has to queue for a busy core, a small matmul
 * measured 40× slower on 2 threads than on 1.
 */
export function defaultThreads(cores: number, loadAverage: number): number {
  return Math.max(1, Math.min(cores, Math.round(cores - loadAverage + 0.25)));
}

/**
 * Loads the addon once. Threads: every core for both oneDNN (OpenMP) and OpenBLAS unless the
 * user set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which the libraries read at load time.
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
    const addon = createRequire(import.meta.url)(addonPath) as NativeAddon;
    const userChoseThreads = process.env.OMP_NUM_THREADS || process.env.OPENBLAS_NUM_THREADS;
    if (!userChoseThreads) addon.setThreads(defaultThreads(os.availableParallelism(), os.loadavg()[0]!));
    return (loaded = { addon, info: addon.info() });
  } catch (e) {
    const message = e instanceof Error ? e.message.split('\n')[0]! : String(e);
    // A build from another machine whose shared libraries are gone fails here (ERR_DLOPEN_FAILED).
    return (loaded = { reason: `addon failed to load: ${message}; to fix: ${NATIVE_INSTALL_HINT}` });
  }
}

/** One line for `scaleforge env`: library versions, ISA, BLAS core and threads. */
export function describeNative(info: NativeInfo): string {
  return `oneDNN ${info.dnnlVersion} (isa 0x${info.dnnlCpuIsa.toString(16)}), OpenBLAS core ${info.openblasCore}, threads ${info.ompThreads} omp / ${info.openblasThreads} blas`;
}
