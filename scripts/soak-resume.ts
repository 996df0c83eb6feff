/**
 * Kill-and-resume soak test of a training recipe.
 *
 *   npm run soak -- --recipe nsp-progressive --set train.steps_per_scale=[6] --kills 5 [--seed N]
 *
 * Trains the recipe once uninterrupted, then again while SIGKILLing the process N times — at random
 * moments and the instant a checkpoint write is in progress — resuming after each kill, and
 * finally compares the two runs' last checkpoints (model, EMA and optimizer tensors and the
 * training state) bit for bit. Prints the seed first, so a failure can be replayed with --seed.
 * Exit 0 when identical, 1 when not, 2 for bad arguments.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CheckpointManager } from '../src/train/checkpoint.js';
import { Rng } from '../src/util/rng.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = path.join(ROOT, 'bin', 'scaleforge.js');

export interface SoakOptions {
  /** Recipe name or file, as `train --recipe` takes it. */
  recipe: string;
  sets?: string[];
  kills: number;
  seed: number;
  /** Scratch folder (default: a new temp folder, removed on success unless `keep`). */
  work?: string;
  keep?: boolean;
  backend?: string;
  log?: (line: string) => void;
}

export interface SoakResult {
  seed: number;
  /** Kills that hit a running process (a process may finish before its planned kill). */
  killsLanded: number;
  /** Of those, kills that hit while a checkpoint file was being written. */
  killsInCheckpointWrite: number;
  identical: boolean;
  /** The first differences, when not identical. */
  differences: string[];
  finalStep: number;
  work: string;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** How the process was killed, if it was. */
  killed: 'time' | 'checkpoint-write' | null;
}

/** 'time': a random moment `afterMs` after the first checkpoint exists; 'checkpoint-write': inside the (skipWrites+1)-th write seen. */
type KillPlan = { mode: 'time'; afterMs: number } | { mode: 'checkpoint-write'; skipWrites: number } | null;

/** Runs the CLI; with a plan, SIGKILLs it at the planned moment. */
function runCli(args: string[], logFile: string, checkpointsDir: string, plan: KillPlan): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const out = fs.openSync(logFile, 'a');
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', out, out], env: { ...process.env, SCALEFORGE_DEBUG: '1' } });
    let killed: Exit['killed'] = null;
    let timer: NodeJS.Timeout | undefined;
    if (plan) {
      // Polled every millisecond: the temp file a checkpoint (or its `latest` pointer) is written to,
      // and the `latest` pointer itself (training has begun) for kills at a random moment after it.
      let seen = 0;
      let inWrite = false;
      let armedAt: number | null = null;
      timer = setInterval(() => {
        let names: string[] = [];
        try {
          names = fs.readdirSync(checkpointsDir);
        } catch {
          return;
        }
        if (plan.mode === 'checkpoint-write') {
          const writing = names.some((n) => n.endsWith('.tmp'));
          if (writing && !inWrite && seen++ >= plan.skipWrites) {
            killed = 'checkpoint-write';
            child.kill('SIGKILL');
          }
          inWrite = writing;
        } else {
          if (armedAt === null && names.includes('latest')) armedAt = Date.now();
          if (armedAt !== null && Date.now() - armedAt >= plan.afterMs && killed === null) {
            killed = 'time';
            child.kill('SIGKILL');
          }
        }
      }, 1);
    }
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      fs.closeSync(out);
      resolve({ code, signal, killed: signal === 'SIGKILL' ? killed : null });
    });
  });
}

/** The end of a log file, for error messages (the scratch folder may be gone by the time one is read). */
function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r/g, '\n').slice(-800);
  } catch {
    return '';
  }
}

function hasCheckpoint(runDir: string): boolean {
  const mgr = new CheckpointManager(path.join(runDir, 'checkpoints'));
  return mgr.latestPath() !== null || mgr.list().length > 0;
}

function compareCheckpoints(a: string, b: string): { differences: string[]; step: number } {
  const ca = new CheckpointManager(path.join(a, 'checkpoints')).loadLatest();
  const cb = new CheckpointManager(path.join(b, 'checkpoints')).loadLatest();
  if (!ca || !cb) return { differences: [`missing final checkpoint (${!ca ? a : b})`], step: -1 };
  const differences: string[] = [];
  if (ca.step !== cb.step) differences.push(`final step ${ca.step} vs ${cb.step}`);
  if (JSON.stringify(ca.extra) !== JSON.stringify(cb.extra)) differences.push('training state (data position, RNG streams, phase) differs');
  for (const part of ['model', 'ema', 'optimizer'] as const) {
    const ta = ca[part];
    const tb = cb[part];
    if (!ta || !tb) {
      if (ta !== tb) differences.push(`${part}: present in one run only`);
      continue;
    }
    for (const [name, t] of ta) {
      const u = tb.get(name);
      if (!u) differences.push(`${part}.${name}: missing in the interrupted run`);
      else if (t.data.length !== u.data.length || !t.data.every((v, i) => Object.is(v, u.data[i]))) differences.push(`${part}.${name}: values differ`);
    }
  }
  return { differences: differences.slice(0, 20), step: ca.step };
}

export async function soakResume(opts: SoakOptions): Promise<SoakResult> {
  const say = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const work = opts.work ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sf-soak-'));
  fs.mkdirSync(work, { recursive: true });
  const rng = new Rng(opts.seed);
  const base = ['train', '--recipe', opts.recipe, ...(opts.sets ?? []).flatMap((s) => ['--set', s]), ...(opts.backend ? ['--backend', opts.backend] : [])];
  say(`soak: seed ${opts.seed}, ${opts.kills} kills, recipe ${opts.recipe}, work ${work}`);

  const reference = path.join(work, 'reference');
  const started = Date.now();
  const ref = await runCli([...base, '--out', reference], path.join(work, 'reference.log'), path.join(reference, 'checkpoints'), null);
  const refMs = Date.now() - started;
  if (ref.code !== 0) throw new Error(`the uninterrupted run failed (exit ${ref.code}); see ${path.join(work, 'reference.log')}`);
  say(`soak: uninterrupted run took ${(refMs / 1000).toFixed(1)} s`);

  const target = path.join(work, 'interrupted');
  const log = path.join(work, 'interrupted.log');
  let killsLanded = 0;
  let killsInCheckpointWrite = 0;
  for (let attempt = 0; attempt < opts.kills * 4 && killsLanded < opts.kills; attempt++) {
    // Alternate kill styles; the first one always lands inside a checkpoint write.
    const plan: KillPlan =
      killsLanded % 2 === 0 ? { mode: 'checkpoint-write', skipWrites: rng.int(3) } : { mode: 'time', afterMs: Math.round(rng.uniform() * Math.min(3000, refMs / 4)) };
    const resume = fs.existsSync(target) && hasCheckpoint(target);
    if (!resume) fs.rmSync(target, { recursive: true, force: true });
    const exit = await runCli([...base, ...(resume ? ['--resume', target] : ['--out', target])], log, path.join(target, 'checkpoints'), plan);
    if (exit.killed) {
      killsLanded++;
      if (exit.killed === 'checkpoint-write') killsInCheckpointWrite++;
      say(`soak: kill ${killsLanded}/${opts.kills} (${plan.mode === 'time' ? `after ${plan.afterMs} ms` : 'inside a checkpoint write'})`);
    } else if (exit.code === 0) {
      say('soak: the run finished before its planned kill; starting it again to place the remaining kills');
      fs.rmSync(target, { recursive: true, force: true });
    } else throw new Error(`interrupted run failed on its own (exit ${exit.code}, signal ${exit.signal}; seed ${opts.seed}); ${log} ends:\n${tail(log)}`);
  }
  const resumeLast = hasCheckpoint(target);
  if (!resumeLast) fs.rmSync(target, { recursive: true, force: true });
  const last = await runCli([...base, ...(resumeLast ? ['--resume', target] : ['--out', target])], log, path.join(target, 'checkpoints'), null);
  if (last.code !== 0) throw new Error(`the final resume failed (exit ${last.code}; seed ${opts.seed}); ${log} ends:\n${tail(log)}`);

  const { differences, step } = compareCheckpoints(reference, target);
  const identical = differences.length === 0;
  say(
    identical
      ? `soak: identical after ${killsLanded} kills (${killsInCheckpointWrite} inside checkpoint writes), final step ${step}`
      : `soak: DIFFERENT after ${killsLanded} kills (seed ${opts.seed}):\n  ${differences.join('\n  ')}\nreplay: npm run soak -- --recipe ${opts.recipe} --kills ${opts.kills} --seed ${opts.seed}`,
  );
  if (identical && !opts.keep && !opts.work) fs.rmSync(work, { recursive: true, force: true });
  return { seed: opts.seed, killsLanded, killsInCheckpointWrite, identical, differences, finalStep: step, work };
}

function parseArgs(argv: string[]): SoakOptions {
  const o: SoakOptions = { recipe: '', sets: [], kills: 3, seed: Math.floor(Math.random() * 2 ** 31) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--recipe') o.recipe = v();
    else if (a === '--set') o.sets!.push(v());
    else if (a === '--kills') o.kills = Number(v());
    else if (a === '--seed') o.seed = Number(v());
    else if (a === '--work') o.work = v();
    else if (a === '--backend') o.backend = v();
    else if (a === '--keep') o.keep = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.recipe) throw new Error('--recipe is required');
  if (!Number.isInteger(o.kills) || o.kills < 1) throw new Error('--kills: expected a positive integer');
  if (!Number.isInteger(o.seed) || o.seed < 0) throw new Error('--seed: expected a non-negative integer');
  return o;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  let opts: SoakOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`soak-resume: ${(e as Error).message}\nusage: npm run soak -- --recipe NAME|FILE [--set k=v]... [--kills N] [--seed S] [--work DIR] [--keep]\n`);
    process.exit(2);
  }
  const r = await soakResume(opts);
  process.exitCode = r.identical ? 0 : 1;
}
