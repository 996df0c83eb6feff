import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// Signals arrive during native kernels: SIGCHLD when a curation worker or a benchmark's child exits,
// SIGINT/SIGTERM (the trainer checkpoints on them), SIGPROF under --cpu-prof. oneDNN 2.6.3's
// dnnl_sgemm corrupted the heap when one landed mid-call (glibc: "corrupted size vs. prev_size");
// the addon no longer calls it. This runs each GEMM route in a child process under a stream of signals.

const addonPath = fileURLToPath(new URL('../native/build/Release/scaleforge_native.node', import.meta.url));

const CHILD = `
const { createRequire } = require('node:module');
const addon = createRequire(__filename)(process.argv[2]);
const lib = Number(process.argv[3]);
addon.setThreads(Number(process.argv[4]));
process.on('SIGUSR2', () => {});
const n = 384;
const a = new Float32Array(n * n), b = new Float32Array(n * n), c = new Float32Array(n * n);
for (let i = 0; i < a.length; i++) { a[i] = ((i * 7) % 13) / 13 - 0.5; b[i] = ((i * 5) % 11) / 11 - 0.5; }
// c[0] = sum_k a[0,k] b[k,0], computed in double here
let want = 0;
for (let k = 0; k < n; k++) want += a[k] * b[k * n];
process.stdout.write('ready\\n');
const end = Date.now() + 1500;
let calls = 0;
while (Date.now() < end) {
  addon.sgemm(lib, false, false, n, n, n, a, 0, b, 0, c, 0);
  if (Math.abs(c[0] - want) > 1e-3) { console.error('wrong product', c[0], want); process.exit(3); }
  calls++;
}
// allocate and free a lot: a corrupted heap aborts here if not before
for (let i = 0; i < 2000; i++) Buffer.alloc(4096 + (i % 7) * 1000).fill(i);
process.stdout.write('done ' + calls + '\\n');
// exit once the parent has stopped signalling: at shutdown the default action (terminate) is back
setTimeout(() => process.exit(0), 300);
`;

function runUnderSignals(lib: number, threads: number): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sf-signals-'));
  const file = path.join(dir, 'child.cjs');
  writeFileSync(file, CHILD);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, addonPath, String(lib), String(threads)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!timer && out.includes('ready')) timer = setInterval(() => child.kill('SIGUSR2'), 2);
      if (out.includes('done')) clearInterval(timer);
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      resolve({ code, signal, out, err });
    });
  });
}

describe.skipIf(!existsSync(addonPath))('native GEMMs under a stream of signals', () => {
  for (const [name, lib] of [['oneDNN route', 0], ['OpenBLAS route', 1]] as const) {
    for (const threads of [1, 2]) {
      it(`${name}, ${threads} thread(s): right products, no heap corruption`, async () => {
        const r = await runUnderSignals(lib, threads);
        expect(r.err, r.err).toBe('');
        expect({ code: r.code, signal: r.signal }).toEqual({ code: 0, signal: null });
        expect(r.out).toMatch(/done \d+/);
      }, 20_000);
    }
  }
});
