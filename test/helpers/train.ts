import type { z } from 'zod';
import type { Module } from '../../src/nn/module.js';
import { CheckpointManager } from '../../src/train/checkpoint.js';
import { createRunDir, openRunDir, type RunDir } from '../../src/train/run_dir.js';
import { readCheckpointState, TrainingSession, type LogSettings, type ResumePoint, type SessionOptions } from '../../src/train/session.js';

/** A progress stream that swallows everything, for quiet tests. */
export const quietStream = { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream;

/** A new run folder at `dir` (which must not hold a run yet). */
export function newRun(dir: string, kind: string): RunDir {
  return createRunDir({ recipeName: 'tiny', resolvedYaml: `kind: ${kind}\n`, out: dir });
}

/** The latest checkpoint of the run at `dir`, read as a resume point for `kind`. */
export function latestResumePoint<J>(dir: string, kind: string, jobSchema: z.ZodType<J>): { run: RunDir; resume: ResumePoint<J> } {
  const run = openRunDir(dir);
  const ckpt = new CheckpointManager(run.checkpoints).loadLatest();
  if (!ckpt) throw new Error(`${run.checkpoints}: no checkpoint`);
  return { run, resume: readCheckpointState(ckpt, kind, jobSchema) };
}

/** A quiet session for tests: no signal handlers, no progress output. */
export function testSession<J>(opts: {
  kind: string;
  run: RunDir;
  seed: number;
  log: LogSettings;
  totalSteps: number;
  model: Module;
  jobState: () => J;
  resume?: ResumePoint<J> | null;
  stopAfterStep?: number;
  precision?: SessionOptions<J>['precision'];
}): TrainingSession<J> {
  return new TrainingSession<J>({ ...opts, handleSignals: false, progressStream: quietStream as never, say: () => {} });
}
