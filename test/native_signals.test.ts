import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeAddon } from '../src/backend/native/addon.js';

// oneDNN 2.6's JIT sgemm kernels run with rsp pointing into a heap workspace: a signal with a
// handler (Node always handles SIGCHLD) taken inside one wrote its frame over malloc'd memory.
// The addon blocks asynchronous signals for the duration of every native call
// (native/src/signal_shield.h); these tests hold it to that.
const here = path.dirname(fileURLToPath(import.meta.url));
const addonPath = path.join(here, '..', 'native', 'build', 'Release', 'scaleforge_native.node');
const { addon, info } = loadNativeAddon();

describe.skipIf(addon === undefined)('native calls and asynchronous signals', () => {
  afterAll(() => addon!.setThreads(info!.ompThreads));

  it.each([1, 2, 3])('blocks SIGCHLD on every OpenMP thread of a %i-thread team during a call', (threads) => {
    addon!.setThreads(threads);
    expect(addon!.asyncSignalsBlocked()).toBe(true);
  });

  it('survives a flood of handled signals while oneDNN sgemm runs on 2 threads', () => {
    const child = spawnSync(process.execPath, [path.join(here, 'helpers', 'sgemm_under_signals.cjs'), addonPath, '2', '2500'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(child.stderr).not.toMatch(/corrupted|free\(\)|malloc/);
    expect(child.signal).toBeNull();
    expect(child.status).toBe(0);
    const [word, calls, c0] = child.stdout.trim().split(' ');
    expect(word).toBe('ok');
    expect(Number(calls)).toBeGreaterThan(0);
    // 192 products of 0.5·0.5: the flood must not change the result either.
    expect(Number(c0)).toBe(48);
  }, 70_000);
});
