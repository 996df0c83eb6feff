import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { loadRecipe, PROJECT_ROOT } from '../src/config/recipe.js';
import { noSpaceError, setWriteFault } from '../src/io/atomic.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import '../src/jobs/index.js';
import { runVaeJob, type VaeJobResult } from '../src/jobs/vae/index.js';
import { vaeJobStateSchema } from '../src/jobs/vae/model.js';
import { CheckpointManager, verifyChecksum } from '../src/train/checkpoint.js';
import { LOCK_FILE, openRunDir, releaseRunLock } from '../src/train/run_dir.js';
import { findResumePoint } from '../src/train/session.js';
import { JobError, UsageError } from '../src/util/errors.js';
import { quietStream } from './helpers/train.js';

const TINY_VAE = `kind: vae
seed: 5
backend: cpu
model: { preset: tiny, block_out_channels: [8, 16], norm_num_groups: 4, scaling_factor: auto }
data: { source: procedural, procedural: { count: 8, size: 16, seed: 2 }, crop: 8, flip: true, batch_size: 2 }
train: { steps: 4, schedule: { warmup_steps: 1 }, ema: { enabled: true, decay: 0.5 } }
log: { every: 1, sample_every: 2, checkpoint_every: 1, keep_last: 5 }
eval: { count: 2, grid: 2 }
`;

let tmp: string;
let recipeFile: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-fault-'));
  recipeFile = path.join(tmp, 'vae-f.yaml');
  fs.writeFileSync(recipeFile, TINY_VAE);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => {
  setWriteFault(null);
});

function ctx(extra: { out?: string; resume?: string }, lines: string[] = []) {
  return { loaded: loadRecipe(recipeFile), recipeArg: recipeFile, runsRoot: path.join(tmp, 'runs'), log: (l: string) => lines.push(l), ...extra };
}

const vaeJob = (c: ReturnType<typeof ctx>) => runVaeJob(c, { progressStream: quietStream as never });

function sameTensors(a: string, b: string): void {
  const ta = loadSafetensors(a);
  const tb = loadSafetensors(b);
  expect([...tb.keys()].sort()).toEqual([...ta.keys()].sort());
  for (const [name, t] of ta) {
    const u = tb.get(name)!;
    if (!(t.data.length === u.data.length && t.data.every((v, i) => v === u.data[i]))) throw new Error(`${name} differs`);
  }
}


describe('a full disk', () => {
  let full: VaeJobResult;
  beforeAll(async () => {
    full = await vaeJob(ctx({ out: path.join(tmp, 'full') }));
  }, 120_000);

  it('while writing a checkpoint: clear error naming the file, previous checkpoint intact, resumes to the same weights once space is back', async () => {
    const dir = path.join(tmp, 'nospace-ckpt');
    setWriteFault((target) => {
      if (target.endsWith('step-000003.safetensors')) throw noSpaceError(target);
    });
    const err = await vaeJob(ctx({ out: dir })).catch((e: unknown) => e);
    setWriteFault(null);
    expect(err).toBeInstanceOf(JobError);
    const msg = String((err as Error).message);
    expect(msg).toContain(`could not write the checkpoint ${path.join(dir, 'checkpoints', 'step-000003.safetensors')}: ENOSPC: no space left on device`);
    expect(msg).toContain(`the previous checkpoint ${path.join(dir, 'checkpoints', 'step-000002.safetensors')} is intact; free some space, then continue with --resume ${dir}`);
    const mgr = new CheckpointManager(path.join(dir, 'checkpoints'));
    expect(fs.readdirSync(mgr.dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(mgr.loadLatest()!.step).toBe(2);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);

    const lines: string[] = [];
    const resumed = await vaeJob(ctx({ resume: dir }, lines));
    expect(lines.some((l) => l.includes('at step 2/4'))).toBe(true);
    expect(resumed.step).toBe(4);
    sameTensors(path.join(full.vaeDir!, 'diffusion_pytorch_model.safetensors'), path.join(resumed.vaeDir!, 'diffusion_pytorch_model.safetensors'));
  }, 120_000);

  it('while writing a sample: clear error naming the file; the run resumes from the last checkpoint', async () => {
    const dir = path.join(tmp, 'nospace-sample');
    setWriteFault((target) => {
      if (target.endsWith('step-000002-reconstructions.png')) throw noSpaceError(target);
    });
    const err = await vaeJob(ctx({ out: dir })).catch((e: unknown) => e);
    setWriteFault(null);
    expect(err).toBeInstanceOf(JobError);
    const msg = String((err as Error).message);
    expect(msg).toContain(`could not write samples into ${path.join(dir, 'samples')}: ENOSPC`);
    expect(msg).toContain(path.join(dir, 'samples', 'step-000002-reconstructions.png'));
    expect(msg).toContain(`the previous checkpoint ${path.join(dir, 'checkpoints', 'step-000001.safetensors')} is intact`);
    const resumed = await vaeJob(ctx({ resume: dir }));
    expect(resumed.step).toBe(4);
    sameTensors(path.join(full.vaeDir!, 'diffusion_pytorch_model.safetensors'), path.join(resumed.vaeDir!, 'diffusion_pytorch_model.safetensors'));
  }, 120_000);

  it('a truncated or corrupt latest checkpoint: resume falls back to the newest valid one with a warning; none valid is a clear error', async () => {
    const dir = path.join(tmp, 'corrupt');
    fs.cpSync(full.run.dir, dir, { recursive: true });
    const ck = (s: number) => path.join(dir, 'checkpoints', `step-00000${s}.safetensors`);
    // keep_last 5: steps 1..4 are there. Truncate 4, flip one weight byte of 3.
    fs.truncateSync(ck(4), fs.statSync(ck(4)).size - 100);
    const bytes = fs.readFileSync(ck(3));
    bytes[bytes.length - 5]! ^= 0x40;
    fs.writeFileSync(ck(3), bytes);
    expect(verifyChecksum(ck(3)).status).toBe('mismatch');
    expect(verifyChecksum(ck(2)).status).toBe('ok');

    const lines: string[] = [];
    const point = findResumePoint({ ...ctx({ resume: dir }, lines) }, 'vae', vaeJobStateSchema)!;
    releaseRunLock(point.run);
    expect(point.checkpoint.step).toBe(2);
    expect(lines.join('\n')).toMatch(/warning: .*step-000004\.safetensors is unreadable \(.*\); resuming from the newest valid one, .*step-000002\.safetensors/);
    expect(() => new CheckpointManager(path.join(dir, 'checkpoints')).load(ck(3))).toThrow(/does not match its checksum .* the file is corrupt/);

    for (const s of [1, 2]) fs.truncateSync(ck(s), 50);
    let err: unknown;
    try {
      findResumePoint(ctx({ resume: dir }), 'vae', vaeJobStateSchema);
    } catch (e) {
      err = e;
    }
    releaseRunLock(openRunDir(dir));
    expect(err).toBeInstanceOf(JobError);
    expect(String((err as Error).message)).toMatch(/no readable checkpoint \(4 tried\)[\s\S]*step-000004[\s\S]*step-000003[\s\S]*checksum[\s\S]*step-000001/);
  });

  it('inspect --verify checks the recorded checksum', async () => {
    const good = path.join(full.run.checkpoints, 'step-000004.safetensors');
    const ok = await cli(['inspect', '--verify', good]);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/checksum ok \(sha256 [0-9a-f]{64} of the tensor data\)/);
    const bad = path.join(tmp, 'bad.safetensors');
    const bytes = fs.readFileSync(good);
    bytes[bytes.length - 1]! ^= 1;
    fs.writeFileSync(bad, bytes);
    const r = await cli(['inspect', '--verify', bad]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/checksum MISMATCH/);
    const plain = await cli(['inspect', '--verify', path.join(full.vaeDir!, 'diffusion_pytorch_model.safetensors')]);
    expect(plain.code).toBe(1);
    expect(plain.err).toMatch(/records no checksum/);
  });

  it('a run folder in use is refused; a lock left by a dead process is taken over', async () => {
    const dir = path.join(tmp, 'locked');
    fs.cpSync(full.run.dir, dir, { recursive: true });
    const lockFile = path.join(dir, LOCK_FILE);
    const sleeper = spawn('sleep', ['60']);
    try {
      fs.writeFileSync(lockFile, JSON.stringify({ pid: sleeper.pid, host: os.hostname(), startedAt: 'earlier' }));
      expect(() => findResumePoint(ctx({ resume: dir }), 'vae', vaeJobStateSchema)).toThrow(UsageError);
      const r = await cli(['train', '--recipe', recipeFile, '--resume', dir]);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`${dir} is in use by a running job (pid ${sleeper.pid} on this host, since earlier)`);
      fs.writeFileSync(lockFile, JSON.stringify({ pid: 1, host: 'elsewhere', startedAt: 'earlier' }));
      expect(() => findResumePoint(ctx({ resume: dir }), 'vae', vaeJobStateSchema)).toThrow(/in use by pid 1 on elsewhere .* delete .*\.lock/);
    } finally {
      sleeper.kill('SIGKILL');
    }
    await new Promise((res) => sleeper.on('exit', res));
    fs.writeFileSync(lockFile, JSON.stringify({ pid: sleeper.pid, host: os.hostname(), startedAt: 'earlier' }));
    const lines: string[] = [];
    const point = findResumePoint(ctx({ resume: dir }, lines), 'vae', vaeJobStateSchema)!;
    expect(lines.join('\n')).toContain(`was left by pid ${sleeper.pid}, which is no longer running; taking the run over`);
    expect(JSON.parse(fs.readFileSync(lockFile, 'utf8')).pid).toBe(process.pid);
    releaseRunLock(point.run);
    expect(fs.existsSync(lockFile)).toBe(false);
  });
});

describe('signals', () => {
  // No samples or checkpoints between steps: the stop must be seen although a step never waits on I/O.
  const LONG_VAE = TINY_VAE.replace('steps: 4', 'steps: 400').replace('checkpoint_every: 1', 'checkpoint_every: 1000').replace('sample_every: 2', 'sample_every: 1000');

  function start(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
    let text = '';
    const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'scaleforge.js'), ...args], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d) => (text += String(d)));
    child.stderr!.on('data', (d) => (text += String(d)));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    return { child, output: () => text, exited };
  }

  async function waitForSteps(metrics: string, n: number): Promise<void> {
    for (let i = 0; i < 1200; i++) {
      if (fs.existsSync(metrics) && fs.readFileSync(metrics, 'utf8').split('\n').filter(Boolean).length >= n) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no ${n} steps in ${metrics}`);
  }

  it('SIGINT finishes the step, writes a checkpoint, says how to resume, exits 130; SIGTERM on the resumed run exits 143', async () => {
    const recipe = path.join(tmp, 'vae-long.yaml');
    fs.writeFileSync(recipe, LONG_VAE);
    const dir = path.join(tmp, 'signalled');
    const a = start(['train', '--recipe', recipe, '--out', dir]);
    await waitForSteps(path.join(dir, 'metrics.jsonl'), 2);
    a.child.kill('SIGINT');
    expect(await a.exited).toBe(130);
    const mgr = new CheckpointManager(path.join(dir, 'checkpoints'));
    const step = mgr.loadLatest()!.step;
    expect(step).toBeGreaterThanOrEqual(2);
    expect(a.output()).toContain(`stopped at step ${step} (SIGINT); continue with --resume ${dir}`);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);

    const b = start(['train', '--recipe', recipe, '--resume', dir]);
    await waitForSteps(path.join(dir, 'metrics.jsonl'), step + 2);
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(143);
    expect(mgr.loadLatest()!.step).toBeGreaterThanOrEqual(step + 2);
  }, 300_000);

  it('a second signal aborts at once', async () => {
    // Larger images so one step takes a while: both signals land inside the same step.
    const recipe = path.join(tmp, 'vae-long2.yaml');
    fs.writeFileSync(recipe, LONG_VAE.replace('crop: 8', 'crop: 0').replace('batch_size: 2', 'batch_size: 4'));
    const dir = path.join(tmp, 'aborted');
    const a = start(['train', '--recipe', recipe, '--out', dir]);
    await waitForSteps(path.join(dir, 'metrics.jsonl'), 1);
    a.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 30));
    a.child.kill('SIGINT');
    expect(await a.exited).toBe(130);
    expect(a.output()).toMatch(/SIGINT again: aborting without a checkpoint; resume from the last one with --resume/);
    expect(new CheckpointManager(path.join(dir, 'checkpoints')).list()).toEqual([]);
  }, 300_000);
});
