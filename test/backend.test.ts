import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend, listBackends } from '../src/backend/select.js';
import { UsageError } from '../src/util/errors.js';
import { envCommand } from '../src/cli/commands/env.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
// The optional native addon is built where libdnnl-dev/libopenblas-dev are installed (CI); auto
// prefers it there and falls back to wasm where it is missing.
const nativeBuilt = loadNativeAddon().addon !== undefined;
const autoHere = nativeBuilt ? 'native' : 'wasm';

// The command module alone, so this test does not depend on every other command importing cleanly.
const runEnv = async (json: boolean): Promise<number> => {
  await envCommand.handler({ json, _: ['env'], $0: 'scaleforge' });
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
};

async function captureStdout(run: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const w = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
  try {
    const code = await run();
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    process.stdout.write = w;
    process.stderr.write = e;
  }
}

describe('backend selection', () => {
  const savedEnv = process.env.SCALEFORGE_BACKEND;
  afterEach(() => {
    if (savedEnv === undefined) delete process.env.SCALEFORGE_BACKEND;
    else process.env.SCALEFORGE_BACKEND = savedEnv;
  });

  it('lists every backend in auto order with a reason for each unavailable one', async () => {
    const statuses = await listBackends();
    expect(statuses.map((s) => s.name)).toEqual(['tensorflow', 'native', 'wasm', 'cpu']);
    const byName = Object.fromEntries(statuses.map((s) => [s.name, s]));
    // Neither tfjs-node build can be installed in this environment (their install downloads libtensorflow).
    expect(byName.tensorflow!.available).toBe(false);
    expect(byName.tensorflow!.reason).toContain('@tensorflow/tfjs-node-gpu not installed');
    expect(byName.tensorflow!.reason).toContain('@tensorflow/tfjs-node not installed');
    expect(byName.native!.available).toBe(nativeBuilt);
    if (!nativeBuilt) expect(byName.native!.reason).toMatch(/^not built: .*apt-get install -y libdnnl-dev libopenblas-dev/);
    expect(byName.wasm!.available).toBe(true);
    expect(byName.cpu!.available).toBe(true);
  });

  it('auto picks native where built, else wasm; wasm gets the missing training kernels and leaves no process error handlers', async () => {
    delete process.env.SCALEFORGE_BACKEND;
    // First wasm initialisation in this test process: emscripten would add one handler of each kind.
    const handlers = () => [process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection')];
    const before = handlers();
    expect((await initBackend()).name).toBe(autoHere);
    const { name } = await initBackend('wasm');
    expect(handlers()).toEqual(before);
    expect(name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
  });

  it('an unknown --backend is a usage error naming the flag and the choices', async () => {
    await expect(initBackend('tpu')).rejects.toThrow(UsageError);
    await expect(initBackend('tpu')).rejects.toThrow(/--backend: unknown backend 'tpu'; expected one of auto, tensorflow, native, wasm, cpu/);
  });

  it('a forced unavailable backend says why, naming where it was requested', async () => {
    process.env.SCALEFORGE_BACKEND = 'tensorflow';
    const e = await initBackend().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect((e as Error).message).toBe(
      "SCALEFORGE_BACKEND: backend 'tensorflow' is not available: @tensorflow/tfjs-node-gpu not installed; @tensorflow/tfjs-node not installed",
    );
    if (!nativeBuilt) await expect(initBackend('native')).rejects.toThrow(/--backend: backend 'native' is not available: not built/);
  });

  it('--backend overrides SCALEFORGE_BACKEND', async () => {
    process.env.SCALEFORGE_BACKEND = 'native';
    expect((await initBackend('cpu')).name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });
});

describe('scaleforge env', () => {
  it('--json reports versions, backends, the auto choice and the machine', async () => {
    const { code, out } = await captureStdout(() => runEnv(true));
    expect(code).toBe(0);
    const r = JSON.parse(out);
    expect(r.node).toBe(process.versions.node);
    expect(r.tfjs['tfjs-core']).toBe(tf.version_core);
    expect(r.tfjs['tfjs-backend-wasm']).toBe(r.wasm.version);
    expect(r.backends.map((b: { name: string }) => b.name)).toEqual(['tensorflow', 'native', 'wasm', 'cpu']);
    if (!nativeBuilt) expect(r.backends.find((b: { name: string }) => b.name === 'native').reason).toMatch(/not built/);
    expect(r.auto).toBe(autoHere);
    expect(r.cpu.cores).toBeGreaterThan(0);
    expect(r.memory.totalBytes).toBeGreaterThanOrEqual(r.memory.freeBytes);
    expect(typeof r.wasm.simd).toBe('boolean');
    expect(r.wasm.multithreadSupported).toBe(false);
  });

  it('prints a readable table without --json', async () => {
    const { code, out } = await captureStdout(() => runEnv(false));
    expect(code).toBe(0);
    expect(out).toMatch(nativeBuilt ? /^ {2}native +yes +oneDNN \d/m : /^ {2}native +no +not built/m);
    expect(out).toMatch(new RegExp(`^auto +${autoHere}$`, 'm'));
  });
});

describe('errors after wasm has loaded', () => {
  it('a stray rejection is reported at its own source line, not by dumping the wasm glue code', () => {
    const script = [
      "const { initBackend } = await import('./src/backend/select.ts');",
      "await initBackend('wasm');",
      "Promise.reject(new Error('stray failure'));",
    ].join('\n');
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toContain('Error: stray failure');
    expect(r.stderr).not.toContain('tfjs-backend-wasm.js');
    expect(r.stderr.length).toBeLessThan(4000);
    expect(r.status).toBe(1);
  });
});

describe('native thread count', () => {
  it('uses every core it may run on, whatever the load average, unless told otherwise', async () => {
    const { chooseThreads } = await import('../src/backend/native/addon.js');
    expect(chooseThreads({}, 2, undefined)).toEqual({ threads: 2, reason: 'every core this process may run on (2; fewer while other processes hold cores)', automatic: true });
    expect(chooseThreads({}, 16, 4).automatic).toBe(true);
    expect(chooseThreads({}, 16, 4).threads).toBe(4);
    expect(chooseThreads({}, 16, 4).reason).toContain('cgroup CPU quota');
    expect(chooseThreads({ OMP_NUM_THREADS: '1' }, 2, undefined)).toEqual({ threads: 1, reason: 'OMP_NUM_THREADS=1' });
    expect(chooseThreads({ OPENBLAS_NUM_THREADS: '3' }, 8, undefined).threads).toBe(3);
    expect(chooseThreads({ SCALEFORGE_THREADS: '2', OMP_NUM_THREADS: '1' }, 8, undefined)).toEqual({ threads: 2, reason: 'SCALEFORGE_THREADS=2' });
    // Unparseable values are ignored rather than turned into 0 or NaN threads.
    expect(chooseThreads({ OMP_NUM_THREADS: 'lots' }, 2, undefined).threads).toBe(2);
  });

  it('reads a cgroup v2 cpu.max quota', async () => {
    const { cgroupCpuLimit } = await import('../src/backend/native/addon.js');
    expect(cgroupCpuLimit('max 100000\n')).toBeUndefined();
    expect(cgroupCpuLimit('200000 100000\n')).toBe(2);
    expect(cgroupCpuLimit('150000 100000')).toBe(1);
    expect(cgroupCpuLimit('50000 100000')).toBe(1);
    expect(cgroupCpuLimit(undefined)).toBeUndefined();
  });

  it('sets a short OpenMP spin before the libraries load, keeping what the user chose', async () => {
    const { waitPolicy, DEFAULT_SPINCOUNT } = await import('../src/backend/native/addon.js');
    const env: NodeJS.ProcessEnv = {};
    expect(waitPolicy(env)).toContain('GOMP_SPINCOUNT');
    expect(env.GOMP_SPINCOUNT).toBe(DEFAULT_SPINCOUNT);
    const user: NodeJS.ProcessEnv = { OMP_WAIT_POLICY: 'active' };
    expect(waitPolicy(user)).toBe('OMP_WAIT_POLICY=active (user)');
    expect(user.GOMP_SPINCOUNT).toBeUndefined();
  });
});

describe('native GEMM routing and bf16 report', () => {
  it('keeps OpenBLAS off the GEMMs when it runs generic kernels on a vector CPU', async () => {
    const { gemmPolicy, gemmLibrary } = await import('../src/backend/native/matmul.js');
    const prescott = gemmPolicy('Prescott', 0xe7);
    expect(prescott.openblasForSmall).toBe(false);
    expect(prescott.reason).toContain('generic Prescott');
    expect(gemmLibrary(8, 8, 8, prescott)).toBe(0);
    const cooper = gemmPolicy('Cooperlake', 0xe7);
    expect(gemmLibrary(8, 8, 8, cooper)).toBe(1);
    expect(gemmLibrary(512, 512, 512, cooper)).toBe(0);
    expect(gemmPolicy('Haswell', 0xe7).openblasForSmall).toBe(true);
    // A CPU without AVX2 (oneDNN's SSE4.1 level): OpenBLAS's pick is as good as any.
    expect(gemmPolicy('Nehalem', 0x1).openblasForSmall).toBe(true);
  });

  it('says whether bf16 runs on bf16 hardware or stays emulated', async () => {
    const { describeBf16 } = await import('../src/backend/native/bf16.js');
    expect(describeBf16({ dnnlCpuIsa: 0xe7, dnnlAmx: 'no AMX on this CPU' })).toContain('oneDNN bf16 kernels on AVX-512-BF16');
    expect(describeBf16({ dnnlCpuIsa: 0x3e7, dnnlAmx: 'AMX enabled' })).toContain('AMX-BF16 (AMX enabled)');
    expect(describeBf16({ dnnlCpuIsa: 0x27, dnnlAmx: 'no AMX on this CPU' })).toContain('no bf16 instructions');
    expect(describeBf16({ dnnlCpuIsa: 0x27, dnnlAmx: 'no AMX on this CPU' })).toContain('emulated');
  });
});
