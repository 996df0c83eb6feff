// Child process of test/native_signals.test.ts: runs oneDNN sgemm (the JIT kernel that used to
// point rsp into the heap) in a loop while a shell floods this process with a handled signal.
// Before native/src/signal_shield.h this died within seconds with glibc's
// "corrupted size vs. prev_size" or a segfault; it must now print "ok" and exit 0.
const { spawn } = require('node:child_process');
const [addonPath, threads, ms] = process.argv.slice(2);
const addon = require(addonPath);
addon.setThreads(Number(threads));
process.on('SIGUSR2', () => {});
const flood = spawn('bash', ['-c', `while kill -USR2 ${process.pid} 2>/dev/null; do :; done`], { stdio: 'ignore' });
const n = 192;
const a = new Float32Array(n * n).fill(0.5);
const c = new Float32Array(n * n);
const end = Date.now() + Number(ms);
let calls = 0;
while (Date.now() < end) {
  for (let i = 0; i < 20; i++, calls++) addon.sgemm(0, false, (i & 1) === 1, n, n, n, a, 0, a, 0, c, 0);
  // Allocations and frees between calls, so a corrupted chunk header is noticed by malloc.
  for (let i = 0; i < 20; i++) new Float32Array(1000 + i * 37).fill(i);
}
flood.kill('SIGKILL');
process.stdout.write(`ok ${calls} ${c[0]}\n`);
process.exit(0);
