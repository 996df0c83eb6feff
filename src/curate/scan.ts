import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename, isAbsolute, relative, resolve, sep } from 'node:path';
import fg from 'fast-glob';
import { UsageError } from '../util/errors.js';

/** One file to curate. */
export interface SourceFile {
  /** Absolute path. */
  abs: string;
  /**
   * Stable name used in manifests, shard assignment and the keep policy's tie-break: the path relative to its
   * input folder with forward slashes, prefixed by `<input index>/` when there are several inputs.
   */
  id: string;
}

export interface ScanOptions {
  paths: readonly string[];
  include: readonly string[];
  exclude: readonly string[];
  /** Absolute folders never scanned, e.g. the output folder when it lies inside an input. */
  skipDirs?: readonly string[];
}

/** Lists every matching file under the inputs, sorted by id; a missing input is a UsageError. */
export async function scanInputs(opts: ScanOptions): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const multi = opts.paths.length > 1;
  for (let i = 0; i < opts.paths.length; i++) {
    const given = opts.paths[i]!;
    const abs = resolve(given);
    const info = await stat(abs).catch(() => null);
    if (!info) throw new UsageError(`curate input ${given} does not exist`);
    const prefix = multi ? `${i}/` : '';
    if (info.isFile()) {
      out.push({ abs, id: prefix + basename(abs) });
      continue;
    }
    if (!info.isDirectory()) throw new UsageError(`curate input ${given} is neither a folder nor a file`);
    const skip = (opts.skipDirs ?? [])
      .map((d) => relative(abs, resolve(d)))
      .filter((r) => r !== '' && !r.startsWith('..') && !isAbsolute(r))
      .map((r) => `${fg.escapePath(r.split(sep).join('/'))}/**`);
    const found = await fg([...opts.include], {
      cwd: abs,
      onlyFiles: true,
      caseSensitiveMatch: false,
      ignore: [...opts.exclude, ...skip, '**/.curate/**'],
      dot: false,
      followSymbolicLinks: false,
    });
    for (const rel of found) out.push({ abs: resolve(abs, rel), id: prefix + rel.split(sep).join('/') });
  }
  out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return out;
}

/**
 * Which of `numShards` shards a file belongs to: a hash of its id, so adding or removing files never moves the
 * others to another shard (unlike splitting a sorted list into ranges).
 */
export function shardOf(id: string, numShards: number): number {
  const digest = createHash('sha1').update(id).digest();
  return digest.readUInt32BE(0) % numShards;
}

export interface ShardSpec {
  index: number;
  count: number;
}

const INDEX_VARIABLES = ['JOB_COMPLETION_INDEX', 'SLURM_ARRAY_TASK_ID', 'AWS_BATCH_JOB_ARRAY_INDEX'] as const;

/**
 * The shard this process works on: `--shard-index` wins, else the first array-job index variable that is set
 * (Kubernetes Indexed Job, Slurm array, AWS Batch array). `numShards` must be given explicitly because none of
 * those systems exports the count in a portable way.
 */
export function resolveShard(
  flags: { shardIndex?: number | undefined; numShards?: number | undefined },
  env: NodeJS.ProcessEnv = process.env,
): ShardSpec {
  const count = flags.numShards ?? 1;
  if (!Number.isInteger(count) || count < 1) throw new UsageError(`--num-shards must be a positive integer, got ${count}`);
  let index = flags.shardIndex;
  let from = '--shard-index';
  if (index === undefined && count > 1) {
    for (const name of INDEX_VARIABLES) {
      const v = env[name];
      if (v !== undefined && v !== '') {
        if (!/^\d+$/.test(v)) throw new UsageError(`${name}=${v}: expected a non-negative integer shard index`);
        index = Number(v);
        from = name;
        break;
      }
    }
    if (index === undefined) {
      throw new UsageError(`--num-shards ${count} needs --shard-index or one of ${INDEX_VARIABLES.join(', ')}`);
    }
  }
  index ??= 0;
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new UsageError(`${from} = ${index} is out of range for --num-shards ${count} (expected 0..${count - 1})`);
  }
  return { index, count };
}

/** Folder of one shard inside the output folder; an unsharded run writes to the folder itself. */
export function shardOutputDir(outDir: string, shard: ShardSpec): string {
  if (shard.count === 1) return outDir;
  const pad = (n: number) => String(n).padStart(5, '0');
  return resolve(outDir, `shard-${pad(shard.index)}-of-${pad(shard.count)}`);
}
