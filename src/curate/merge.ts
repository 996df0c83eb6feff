import { existsSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { UsageError } from '../util/errors.js';
import { analysisFingerprint } from './analyse.js';
import { parseManifest, type ManifestRow } from './manifest.js';
import { ensureRealDir } from './output.js';
import { CONFIG_FILE, finishRun, MANIFEST_FILE, type CurateResult } from './pipeline.js';
import type { ShardSpec } from './scan.js';
import type { CurateConfig } from './schema.js';

/**
 * `scaleforge curate merge SHARD_DIRS... --out DIR`: joins the manifests of shard runs and redoes the decisions
 * over all of them, which is where duplicates that live in different shards are found. Nothing is decoded again:
 * the merged output is built from the shards' cached resized images (hard-linked when on one file system).
 */

interface ShardRun {
  dir: string;
  config: CurateConfig;
  shard: ShardSpec;
}

function readShardRun(dir: string): ShardRun {
  const cfgPath = join(dir, CONFIG_FILE);
  if (!existsSync(join(dir, MANIFEST_FILE)) || !existsSync(cfgPath)) {
    throw new UsageError(`${dir} is not a finished curate output (expected ${MANIFEST_FILE} and ${CONFIG_FILE})`);
  }
  let parsed: { config: CurateConfig; shard: ShardSpec };
  try {
    parsed = JSON.parse(readFileSync(cfgPath, 'utf8')) as { config: CurateConfig; shard: ShardSpec };
  } catch (e) {
    throw new UsageError(`${cfgPath}: not readable JSON (${(e as Error).message}); is ${dir} a curate output?`);
  }
  const shard = parsed?.shard;
  if (!shard || !Number.isSafeInteger(shard.index) || !Number.isSafeInteger(shard.count) || shard.count < 1 || shard.count > 1_000_000) {
    throw new UsageError(`${cfgPath}: expected {"config": …, "shard": {"index", "count"}} as curate writes it`);
  }
  return { dir: resolve(dir), config: parsed.config, shard };
}

/** What must agree between shards for their rows to be merged. */
function compatibilityKey(cfg: CurateConfig): string {
  return JSON.stringify([analysisFingerprint(cfg), cfg.output.format, cfg.output.samples_per_shard, cfg.filters, cfg.dedup, cfg.captions]);
}

export async function mergeShards(shardDirs: readonly string[], outDir: string, opts: { log?: (l: string) => void } = {}): Promise<CurateResult> {
  if (shardDirs.length === 0) throw new UsageError('curate merge needs at least one shard folder');
  const runs = shardDirs.map(readShardRun);
  const first = runs[0]!;
  for (const r of runs.slice(1)) {
    if (compatibilityKey(r.config) !== compatibilityKey(first.config)) {
      throw new UsageError(`${r.dir} was curated with other settings than ${first.dir}; shards must share one recipe`);
    }
  }
  const count = first.shard.count;
  const seen = new Set<number>();
  for (const r of runs) {
    if (r.shard.count !== count) throw new UsageError(`${r.dir} is shard ${r.shard.index} of ${r.shard.count}, but ${first.dir} is of ${count}`);
    if (seen.has(r.shard.index)) throw new UsageError(`shard ${r.shard.index} of ${count} is given twice`);
    seen.add(r.shard.index);
  }
  const missing = [...Array(count).keys()].filter((i) => !seen.has(i));
  if (missing.length > 0) throw new UsageError(`shards ${missing.join(', ')} of ${count} are missing; pass every shard folder`);

  const out = resolve(outDir);
  await ensureRealDir(join(out, '.curate'));
  const rows: ManifestRow[] = [];
  for (const r of runs) {
    for (const row of parseManifest(readFileSync(join(r.dir, MANIFEST_FILE), 'utf8'), join(r.dir, MANIFEST_FILE))) {
      // Re-anchored on the merged folder, so its manifest (and a merge of merges) points at the real files.
      if (row.analysis.ok) row.analysis.cached.path = relative(out, join(r.dir, row.analysis.cached.path)).split('\\').join('/');
      rows.push(row);
    }
  }
  await writeFileAtomic(join(out, CONFIG_FILE), JSON.stringify({ config: first.config, shard: { index: 0, count: 1 }, mergedFrom: runs.map((r) => r.dir) }, null, 1));
  return finishRun(
    first.config,
    out,
    rows,
    { scanned: rows.length, inShard: rows.length, analysed: 0, reused: rows.length },
    opts.log ?? (() => undefined),
    (row) => join(out, (row.analysis as { cached: { path: string } }).cached.path),
  );
}
