import { parentPort } from 'node:worker_threads';
import { analyseFile } from './analyse.js';
import type { Analysis } from './manifest.js';
import type { CurateConfig } from './schema.js';

/** One analysis worker of AnalysisPool (pool.ts): analyses the files it is sent, one at a time, in order. */

export interface PoolRequest {
  id: number;
  bytes: Uint8Array;
  sha256: string;
  cfg: CurateConfig;
  cacheRoot: string;
}

export type PoolReply = { id: number; analysis: Analysis } | { id: number; error: string };

if (parentPort) {
  const port = parentPort;
  port.on('message', (request: PoolRequest) => {
    analyseFile(request.bytes, request.sha256, request.cfg, request.cacheRoot).then(
      (analysis) => port.postMessage({ id: request.id, analysis } satisfies PoolReply),
      (e: unknown) => port.postMessage({ id: request.id, error: e instanceof Error ? e.message : String(e) } satisfies PoolReply),
    );
  });
}
