import os from 'node:os';
import { tf } from './tf.js';
import { autoChoice, listBackends, loadWasmPackage, type BackendStatus } from './select.js';

export interface EnvironmentReport {
  node: string;
  platform: string;
  tfjs: Record<string, string>;
  backends: BackendStatus[];
  /** What `--backend auto` would pick now. */
  auto: string | null;
  cpu: { model: string; cores: number };
  memory: { totalBytes: number; freeBytes: number };
  /** Present when the wasm backend can load. */
  wasm?: { version: string; simd: boolean; multithreadSupported: boolean; threads: number | null };
}

/** Everything `scaleforge env` reports, gathered without switching the active backend. */
export async function collectEnvironment(): Promise<EnvironmentReport> {
  const backends = await listBackends();
  const cpus = os.cpus();
  const tfjs: Record<string, string> = {};
  for (const [k, v] of Object.entries(tf.version)) if (typeof v === 'string') tfjs[k] = v;
  const report: EnvironmentReport = {
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    tfjs,
    backends,
    auto: autoChoice(backends) ?? null,
    cpu: { model: cpus[0]?.model.trim() ?? 'unknown', cores: cpus.length },
    memory: { totalBytes: os.totalmem(), freeBytes: os.freemem() },
  };
  if (backends.find((b) => b.name === 'wasm')?.available) {
    const wasm = await loadWasmPackage();
    const version = String(wasm.version_wasm);
    tfjs['tfjs-backend-wasm'] = version;
    const getThreadsCount = wasm.getThreadsCount as (() => number) | undefined;
    report.wasm = {
      version,
      simd: Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')),
      multithreadSupported: Boolean(await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT')),
      // The thread pool size is only known once the wasm backend has been initialised.
      threads: tf.findBackend('wasm') && getThreadsCount ? getThreadsCount() : null,
    };
  }
  return report;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

export function formatEnvironment(r: EnvironmentReport): string {
  const lines = [
    `node        ${r.node} (${r.platform})`,
    `tfjs        ${Object.entries(r.tfjs).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `cpu         ${r.cpu.model} × ${r.cpu.cores}`,
    `memory      ${gib(r.memory.freeBytes)} free of ${gib(r.memory.totalBytes)}`,
    'backends (in auto order):',
  ];
  const width = Math.max(...r.backends.map((b) => b.name.length));
  for (const b of r.backends) {
    const why = b.available ? (b.detail ?? '') : (b.reason ?? '');
    lines.push(`  ${b.name.padEnd(width)}  ${b.available ? 'yes' : 'no '}  ${why}`);
  }
  lines.push(`auto        ${r.auto ?? 'none available'}`);
  if (r.wasm) {
    const threads = r.wasm.threads === null ? 'not initialised' : String(r.wasm.threads);
    lines.push(
      `wasm        SIMD ${r.wasm.simd ? 'yes' : 'no'}, multithreading ${r.wasm.multithreadSupported ? 'supported' : 'not supported in Node'}, threads ${threads}`,
    );
  }
  return lines.join('\n');
}
