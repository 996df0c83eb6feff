import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import type { Analysis } from './manifest.js';
import type { PoolReply, PoolRequest } from './pool_worker.js';
import type { CurateConfig } from './schema.js';

/**
 * A pool of worker threads that run analyseFile (decode, hashes, measures, resize, encode, cache write) on whole
 * files, one file per worker at a time. The main thread keeps reading files, hashing their bytes, matching them
 * against the state file and writing state lines, so the result is the same as analysing in the main thread:
 * analyseFile is a pure function of (bytes, config) and every decision is taken after all analyses are in.
 *
 * Threads: every worker's sharp calls run on the process-wide libuv pool, and each libvips operation may spread
 * over `sharp.concurrency()` threads of its own. With one file per worker the JS work (pHash, measures) and the
 * libvips work of one file alternate, so libvips gets max(1, ⌊cores / min(workers, libuv threads)⌋) threads
 * while the pool runs: one each on a machine with as many workers as cores, never cores × workers.
 */

interface Pending {
  resolve: (a: Analysis) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** The job this worker is running, if any. */
  busy?: { id: number; pending: Pending };
}

interface Queued {
  request: PoolRequest;
  pending: Pending;
}

/** Loads pool_worker.ts through tsx's ESM loader, so the worker runs from the TypeScript sources as the CLI does. */
function bootstrapSource(): string {
  const require = createRequire(import.meta.url);
  const tsxPackage = require.resolve('tsx/package.json');
  const exportsMap: unknown = JSON.parse(readFileSync(tsxPackage, 'utf8')).exports?.['./esm/api']?.import?.default;
  if (typeof exportsMap !== 'string') throw new Error(`${tsxPackage}: no ESM entry for tsx/esm/api`);
  const tsxApi = pathToFileURL(join(dirname(tsxPackage), exportsMap)).href;
  const entry = new URL('./pool_worker.ts', import.meta.url).href;
  return `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`;
}

/** libvips threads per operation while `workers` workers run (see the comment at the top). */
export function vipsThreadsFor(workers: number, cores = availableParallelism()): number {
  const libuv = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.floor(cores / Math.max(1, Math.min(workers, libuv))));
}

export class AnalysisPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Queued[] = [];
  private nextId = 0;
  private closed = false;
  private failure: Error | undefined;
  private readonly previousVipsThreads: number;

  /** `size` workers at most, started when first needed. */
  constructor(readonly size: number) {
    this.previousVipsThreads = sharp.concurrency();
    sharp.concurrency(vipsThreadsFor(size));
  }

  /** Starts every worker and waits until each has loaded its modules (a warm pool for timing or many runs). */
  async warm(cfg: CurateConfig, cacheRoot: string): Promise<void> {
    const empty = new Uint8Array(0);
    await Promise.all(Array.from({ length: this.size }, () => this.analyse(empty, '', cfg, cacheRoot)));
  }

  /** analyseFile(bytes, sha256, cfg, cacheRoot) in the next free worker. */
  analyse(bytes: Uint8Array, sha256: string, cfg: CurateConfig, cacheRoot: string): Promise<Analysis> {
    if (this.closed) return Promise.reject(new Error('analysis pool is closed'));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Analysis>((resolve, reject) => {
      // Copied, not transferred: the caller still reads the buffer (its length) after handing it over.
      this.queue.push({ request: { id: this.nextId++, bytes, sha256, cfg, cacheRoot }, pending: { resolve, reject } });
      this.dispatch();
    });
  }

  /** Stops the workers (after their current file) and restores sharp's thread count. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const error = new Error('analysis pool closed');
    for (const q of this.queue.splice(0)) q.pending.reject(error);
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    sharp.concurrency(this.previousVipsThreads);
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => !s.busy);
      if (!slot && this.slots.length < this.size) slot = this.spawn();
      if (!slot) return;
      const { request, pending } = this.queue.shift()!;
      slot.busy = { id: request.id, pending };
      slot.worker.postMessage(request);
    }
  }

  private spawn(): Slot {
    const worker = new Worker(bootstrapSource(), { eval: true, execArgv: [] });
    const slot: Slot = { worker };
    worker.on('message', (reply: PoolReply) => {
      const job = slot.busy;
      if (!job || job.id !== reply.id) return;
      slot.busy = undefined;
      if ('error' in reply) job.pending.reject(new Error(reply.error));
      else job.pending.resolve(reply.analysis);
      this.dispatch();
    });
    const fail = (e: Error) => {
      if (this.closed) return;
      // A worker that dies (out of memory, a crash in native code) fails the run with the file it was on.
      this.failure = new Error(`analysis worker stopped: ${e.message}`);
      slot.busy?.pending.reject(this.failure);
      slot.busy = undefined;
      for (const q of this.queue.splice(0)) q.pending.reject(this.failure);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.slots.push(slot);
    return slot;
  }
}
