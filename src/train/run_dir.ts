import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../util/errors.js';

/**
 * One training run on disk, laid out so a person can find everything later:
 *   <run>/recipe.resolved.yaml   the complete effective recipe (reload it to repeat the run)
 *   <run>/run.json               when, where and how it was started
 *   <run>/metrics.jsonl          metrics log
 *   <run>/checkpoints/           model/optimizer states
 *   <run>/samples/               images generated during training
 *   <run>/tb/                    TensorBoard logdir (`tensorboard --logdir <run>/tb`)
 * Default location: `checkpoints/<recipe>-<YYYYMMDD-HHMMSS>/` (local time), so runs sort by start time.
 */
export interface RunDir {
  dir: string;
  name: string;
  checkpoints: string;
  samples: string;
  tb: string;
  recipeFile: string;
  metricsFile: string;
  infoFile: string;
}

export interface CreateRunDirOptions {
  recipeName: string;
  /** The recipe as loaded (`LoadedRecipe.resolvedYaml`), saved next to the results. */
  resolvedYaml: string;
  /** Parent of the timestamped run folders. */
  root?: string;
  /** Exact folder to use instead (the `--out` option). */
  out?: string;
  /** Extra facts for run.json (seed, backend, source recipe path...). */
  info?: Record<string, unknown>;
  now?: Date;
}

export const RECIPE_FILE = 'recipe.resolved.yaml';

export function runDirPaths(dir: string): RunDir {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    name: path.basename(abs),
    checkpoints: path.join(abs, 'checkpoints'),
    samples: path.join(abs, 'samples'),
    tb: path.join(abs, 'tb'),
    recipeFile: path.join(abs, RECIPE_FILE),
    metricsFile: path.join(abs, 'metrics.jsonl'),
    infoFile: path.join(abs, 'run.json'),
  };
}

/** `YYYYMMDD-HHMMSS` in local time. */
export function runStamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** A recipe name or path reduced to something safe in a folder name: `recipes/nsp-progressive.yaml` → `nsp-progressive`. */
export function runBaseName(recipeName: string): string {
  const base = path.basename(recipeName).replace(/\.ya?ml$/, '');
  const safe = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+/, '');
  return safe === '' ? 'run' : safe;
}

/**
 * Creates a fresh run folder with its subfolders and writes the resolved recipe and run.json. Two runs started in
 * the same second get `-2`, `-3`... rather than sharing a folder. An `out` folder that already holds a run, or
 * other files, is refused: results are never mixed.
 */
export function createRunDir(opts: CreateRunDirOptions): RunDir {
  const now = opts.now ?? new Date();
  let dir: string;
  if (opts.out !== undefined) {
    dir = path.resolve(opts.out);
    claimOutDir(dir);
  } else {
    const root = path.resolve(opts.root ?? 'checkpoints');
    mkdirSync(root, { recursive: true });
    dir = claimStampedDir(root, `${runBaseName(opts.recipeName)}-${runStamp(now)}`);
  }
  const run = runDirPaths(dir);
  for (const sub of [run.checkpoints, run.samples, run.tb]) mkdirSync(sub, { recursive: true });
  writeFileSync(run.recipeFile, opts.resolvedYaml);
  const info = {
    recipe: opts.recipeName,
    createdAt: now.toISOString(),
    command: process.argv.slice(1),
    cwd: process.cwd(),
    host: os.hostname(),
    node: process.version,
    ...opts.info,
  };
  writeFileSync(run.infoFile, `${JSON.stringify(info, null, 2)}\n`);
  return run;
}

function claimOutDir(dir: string): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new UsageError(`--out ${dir}: exists and is not a folder`);
    if (existsSync(path.join(dir, RECIPE_FILE))) {
      throw new UsageError(`--out ${dir}: already holds a run; pass --resume to continue it, or choose another folder`);
    }
    if (readdirSync(dir).length > 0) throw new UsageError(`--out ${dir}: folder is not empty; choose an empty or new folder`);
    return;
  }
  mkdirSync(dir, { recursive: true });
}

function claimStampedDir(root: string, base: string): string {
  for (let n = 1; n < 1000; n++) {
    const dir = path.join(root, n === 1 ? base : `${base}-${n}`);
    try {
      mkdirSync(dir);
      return dir;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  throw new Error(`could not create a new run folder for ${base} in ${root}`);
}

/** An existing run to resume; its subfolders are recreated if someone deleted them. */
export function openRunDir(dir: string): RunDir {
  const run = runDirPaths(dir);
  if (!existsSync(run.recipeFile)) {
    throw new UsageError(`${run.dir}: not a run folder (no ${RECIPE_FILE}); give the folder a run was started in`);
  }
  for (const sub of [run.checkpoints, run.samples, run.tb]) mkdirSync(sub, { recursive: true });
  return run;
}

/** The most recently started run of a recipe under `root` (by the timestamp in its name), for `--resume`. */
export function findLatestRun(root: string, recipeName: string): string | undefined {
  const absRoot = path.resolve(root);
  if (!existsSync(absRoot)) return undefined;
  const base = runBaseName(recipeName).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^${base}-(\\d{8}-\\d{6})(?:-(\\d+))?$`);
  let best: { dir: string; stamp: string; n: number } | undefined;
  for (const entry of readdirSync(absRoot)) {
    const m = pattern.exec(entry);
    if (!m) continue;
    const dir = path.join(absRoot, entry);
    if (!existsSync(path.join(dir, RECIPE_FILE))) continue;
    const cand = { dir, stamp: m[1]!, n: m[2] ? Number(m[2]) : 1 };
    if (!best || cand.stamp > best.stamp || (cand.stamp === best.stamp && cand.n > best.n)) best = cand;
  }
  return best?.dir;
}

// ---------------------------------------------------------------------------------------------
// One process per run folder: `<run>/.lock` holds the owner's pid and host while a job runs.

export const LOCK_FILE = '.lock';

interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
}

const held = new Map<string, () => void>();

function readOwner(file: string): LockOwner | null {
  try {
    const o: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (o && typeof o === 'object' && 'pid' in o && 'host' in o && typeof o.pid === 'number' && typeof o.host === 'string') {
      return { pid: o.pid, host: o.host, startedAt: 'startedAt' in o && typeof o.startedAt === 'string' ? o.startedAt : '?' };
    }
  } catch {
    // unreadable or half-written: treated as no owner below
  }
  return null;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Claims the run folder for this process. Another live owner is refused with a message naming
 * it; a lock left by a dead process on this host (a crash, kill -9) is taken over with a warning
 * (`log`). Claiming a folder this process holds is a no-op. The lock goes with `releaseRunLock`,
 * or when the process exits.
 */
export function acquireRunLock(run: RunDir, log: (line: string) => void = () => {}): void {
  if (held.has(run.dir)) return;
  const file = path.join(run.dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, `${JSON.stringify(me)}\n`, { flag: 'wx' });
      const onExit = () => {
        try {
          if (readOwner(file)?.pid === process.pid) unlinkSync(file);
        } catch {
          // the folder is gone: nothing to release
        }
      };
      process.on('exit', onExit);
      held.set(run.dir, onExit);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = readOwner(file);
    if (owner && owner.host !== me.host) {
      throw new UsageError(
        `${run.dir} is in use by pid ${owner.pid} on ${owner.host} (since ${owner.startedAt}); ` +
          `if that job is no longer running, delete ${file} and try again`,
      );
    }
    if (owner && owner.pid !== process.pid && pidAlive(owner.pid)) {
      throw new UsageError(`${run.dir} is in use by a running job (pid ${owner.pid} on this host, since ${owner.startedAt}); wait for it to finish or stop it first`);
    }
    log(`warning: ${file} was left by ${owner ? `pid ${owner.pid}, which is no longer running` : 'a process that did not finish writing it'}; taking the run over`);
    try {
      unlinkSync(file);
    } catch {
      // someone else removed it first: try again
    }
  }
  throw new UsageError(`${run.dir}: could not claim ${file}; another process keeps taking it`);
}

/** Gives up this process's claim of the run folder (removes the lock file). */
export function releaseRunLock(run: RunDir): void {
  const onExit = held.get(run.dir);
  if (!onExit) return;
  held.delete(run.dir);
  process.off('exit', onExit);
  onExit();
}
