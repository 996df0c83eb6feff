import { adaptNativeThreads } from '../backend/native/addon.js';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { BatchSampler, type BatchSamplerOptions } from '../data/batch.js';
import type { Dataset } from '../data/dataset.js';
import { MetricsLog, type MetricValue } from '../io/metrics_log.js';
import { SummaryWriter } from '../io/tensorboard.js';
import { Module, StateDictError } from '../nn/module.js';
import { JobError, UsageError } from '../util/errors.js';
import { Progress } from '../util/progress.js';
import { interruptOnSignals, type Interrupt } from '../util/interrupt.js';
import { Rng } from '../util/rng.js';
import { CheckpointManager, checkpointFileName, type LoadedCheckpoint } from './checkpoint.js';
import type { EMA } from './ema.js';
import { DynamicLossScaler } from './loss_scaler.js';
import type { Optimizer } from './optim.js';
import { needsLossScaling, type Precision } from './precision.js';
import { installComputePrecision, resetComputePrecision } from './compute_precision.js';
import { acquireRunLock, createRunDir, findLatestRun, openRunDir, releaseRunLock, type RunDir } from './run_dir.js';
import type { StepResult } from './step.js';

/**
 * A training session: everything around the optimizer step that every trainer needs, written once.
 *   run folder (created, or reopened to resume)   RNG root and named streams   data cursor
 *   checkpoints (typed state, resume)             TensorBoard + metrics.jsonl  progress bar
 *   periodic log / sample (under EMA weights) / checkpoint                     end-of-run summary
 * A job builds its model and data, opens a session, and calls `runPhase` with its step (see
 * docs/writing-a-trainer.md). A job with stages (NSP) runs one phase per stage; others run one.
 */

// ---------------------------------------------------------------------------------------------
// Checkpoint state: what the session stores in every checkpoint, with the job's own part inside.

const u32 = z.number().int().min(0).max(0xffffffff);
export const rngStateSchema = z.tuple([u32, u32, u32, u32]);
export const samplerPositionSchema = z.strictObject({ epoch: z.number().int().min(0), index: z.number().int().min(0) });
export const lossScalerStateSchema = z.strictObject({
  scale: z.number(),
  growth_factor: z.number(),
  backoff_factor: z.number(),
  growth_interval: z.number(),
  _growth_tracker: z.number(),
});

const sessionStateSchema = z.strictObject({
  kind: z.string(),
  /** Optimizer steps done over the whole run. */
  step: z.number().int().min(0),
  /** The job's phase id (NSP: the stage) and optimizer steps done in it (= its length when complete). */
  phase: z.number().int().min(0),
  phaseStep: z.number().int().min(0),
  data: samplerPositionSchema.nullable(),
  rngs: z.record(z.string(), rngStateSchema),
  lossScaler: lossScalerStateSchema.nullable(),
  job: z.unknown(),
});

export type SessionState = z.infer<typeof sessionStateSchema>;

/**
 * Maps the state a job's checkpoints held before the session existed (one flat object per job)
 * to the session's layout, so runs started by an older build still resume; the result is
 * validated like any state.
 */
export type LegacyState = (extra: Record<string, unknown>) => unknown;

/** A checkpoint read back with its state checked: the session's part and the job's part, typed. */
export interface ResumePoint<J> {
  checkpoint: LoadedCheckpoint;
  state: SessionState;
  job: J;
}

/**
 * Reads a checkpoint's state for a job of `kind`: a checkpoint of another kind, or one whose
 * state does not match the job's schema, is a usage error naming both (exit 2).
 */
export function readCheckpointState<J>(ckpt: LoadedCheckpoint, kind: string, jobSchema: z.ZodType<J>, legacy?: LegacyState): ResumePoint<J> {
  const otherKind = typeof ckpt.extra.kind === 'string' ? ckpt.extra.kind : undefined;
  if (otherKind !== undefined && otherKind !== kind) {
    throw new UsageError(`${ckpt.file}: a checkpoint of kind '${otherKind}', but this job is of kind '${kind}'; resume it with a '${otherKind}' recipe`);
  }
  const current = sessionStateSchema.safeParse(ckpt.extra);
  const parsed = current.success || !legacy ? current : sessionStateSchema.safeParse(legacy(ckpt.extra));
  if (!parsed.success) throw new UsageError(`${ckpt.file}: not a '${kind}' training checkpoint of this version (${issueText(parsed.error)})`);
  const job = parsed.data.job;
  const check = jobSchema.safeParse(job);
  if (!check.success) throw new UsageError(`${ckpt.file}: the '${kind}' state does not match this version (${issueText(check.error)})`);
  // The stored object itself, not zod's rebuilt copy: same key order, so a resumed run writes back byte-identical state.
  if (!conforms(jobSchema, job)) throw new Error('unreachable: the state was just validated');
  return { checkpoint: ckpt, state: parsed.data, job };
}

/** A type guard from a schema (job state schemas have no defaults or transforms, so input and output agree). */
function conforms<J>(schema: z.ZodType<J>, x: unknown): x is J {
  return schema.safeParse(x).success;
}

function issueText(e: z.ZodError): string {
  return e.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(state)'}: ${i.message}`)
    .join('; ');
}

/** The checkpoint's kind without checking the rest (for dispatch), or undefined for a foreign file. */
export function checkpointKind(ckpt: LoadedCheckpoint): string | undefined {
  return typeof ckpt.extra.kind === 'string' ? ckpt.extra.kind : undefined;
}

/**
 * Loads `weights` into `model` strictly; a mismatch (another architecture) is a usage error that
 * names the file and, for each tensor that differs, its name and both shapes.
 */
export function loadWeightsInto(model: Module, weights: Parameters<Module['loadStateDict']>[0], file: string): void {
  try {
    model.loadStateDict(weights, { strict: true });
  } catch (e) {
    if (e instanceof StateDictError) throw new UsageError(`${file}: the weights do not fit this model (another architecture?):\n${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Run folder: create, or find the one to resume.

/** What a session needs from the command line (the CLI's JobContext has these fields). */
export interface RunRequest {
  /** The recipe as the user named it (for the run folder's name and `--resume` without a path). */
  recipeArg: string;
  /** The effective recipe, saved in the run folder. */
  loaded: { resolvedYaml: string; sourcePath: string };
  out?: string;
  /** true = the latest run of this recipe; a string = a run folder or checkpoint file. */
  resume?: string | true;
  runsRoot?: string;
  log: (line: string) => void;
}

/**
 * The checkpoint a `--resume` points at (the latest run of the recipe, a run folder, or a
 * checkpoint file), read and checked against `kind` and the job's state schema; null without
 * `--resume`. Runs before any model or dataset is built, so a wrong target fails fast.
 */
export function findResumePoint<J>(req: RunRequest, kind: string, jobSchema: z.ZodType<J>, legacy?: LegacyState): (ResumePoint<J> & { run: RunDir }) | null {
  if (!req.resume) return null;
  const runsRoot = req.runsRoot ?? 'checkpoints';
  let dir: string;
  let file: string | null = null;
  if (req.resume === true) {
    const latest = findLatestRun(runsRoot, req.recipeArg);
    if (!latest) throw new UsageError(`--resume: no earlier run of ${req.recipeArg} under ${runsRoot}/`);
    dir = latest;
  } else {
    const p = path.resolve(req.resume);
    if (!fs.existsSync(p)) throw new UsageError(`--resume: ${req.resume} does not exist`);
    if (fs.statSync(p).isDirectory()) dir = path.basename(p) === 'checkpoints' ? path.dirname(p) : p;
    else {
      file = p;
      dir = path.dirname(path.dirname(p));
    }
  }
  const run = openRunDir(dir);
  acquireRunLock(run, req.log);
  try {
    const mgr = new CheckpointManager(run.checkpoints);
    const checkpoint = file ? mgr.load(file) : mgr.loadLatest();
    if (!checkpoint) throw new UsageError(`--resume: ${run.checkpoints} holds no checkpoint yet`);
    if (checkpoint.fellBackFrom) {
      req.log(`warning: ${checkpoint.fellBackFrom} is unreadable (${checkpoint.fallbackReason}); resuming from the newest valid one, ${checkpoint.file}`);
    }
    return { run, ...readCheckpointState(checkpoint, kind, jobSchema, legacy) };
  } catch (e) {
    releaseRunLock(run);
    throw e;
  }
}

/** A fresh run folder for this recipe (`--out`, or `<runsRoot>/<recipe>-<time>/`). */
export function createRun(req: RunRequest, info: Record<string, unknown>): RunDir {
  const run = createRunDir({
    recipeName: req.recipeArg,
    resolvedYaml: req.loaded.resolvedYaml,
    root: req.runsRoot ?? 'checkpoints',
    ...(req.out ? { out: req.out } : {}),
    info: { ...info, recipe: req.loaded.sourcePath },
  });
  acquireRunLock(run, req.log);
  return run;
}

// ---------------------------------------------------------------------------------------------
// The session.

export interface LogSettings {
  /** Metrics every this many steps (and at the end of each phase). */
  every: number;
  sample_every: number;
  checkpoint_every: number;
  keep_last: number;
}

export interface SessionOptions<J> {
  kind: string;
  run: RunDir;
  seed: number;
  log: LogSettings;
  /** Optimizer steps of the whole run (for the progress bar). */
  totalSteps: number;
  /** The module whose weights each checkpoint holds. */
  model: Module;
  /** The job's part of each checkpoint's state (e.g. the architecture to rebuild the model from). */
  jobState: () => J;
  precision?: Precision;
  resume?: ResumePoint<J> | null;
  /** The recipe, shown in TensorBoard's text tab for a new run. */
  recipe?: unknown;
  /** Stop (with a checkpoint) once this many steps are done; tests simulate a crash with it. */
  stopAfterStep?: number;
  /** Progress bar label. */
  label?: string;
  /**
   * Default true: SIGINT/SIGTERM finish the step in progress, write a checkpoint and stop (exit
   * 130/143); a second signal aborts at once.
   */
  handleSignals?: boolean;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  say?: (line: string) => void;
}

export interface PhaseOptions {
  /** The phase's id, saved in checkpoints (NSP: the stage number; single-phase jobs: 0). */
  id: number;
  steps: number;
  /** The learning rate for step `phaseStep` of this phase. */
  lr: (phaseStep: number) => number;
  optimizer: Optimizer;
  ema?: EMA | null;
  /** One optimizer step (normally `StepFunction.run`). */
  step: (lr: number, phaseStep: number) => Promise<StepResult>;
  /** Fields that lead every metrics record and progress line of this phase, e.g. `{ stage: 2 }`. */
  tags?: Record<string, number>;
  /** TensorBoard tag of the total loss (default `loss/total`). */
  lossTag?: string;
  /** After each step's metrics, before samples and checkpoints (e.g. weight histograms). */
  afterStep?: (step: number) => Promise<void>;
  /** Periodic samples, run under the EMA weights when there is an EMA. Not run on a phase's last step. */
  sample?: (step: number) => Promise<void>;
}

/** 'done': the phase ran to its end. 'stopped': a stop was requested; a checkpoint was written. */
export type PhaseOutcome = 'done' | 'stopped';

export class TrainingSession<J> {
  readonly run: RunDir;
  readonly kind: string;
  readonly checkpoints: CheckpointManager;
  readonly tb: SummaryWriter;
  readonly metrics: MetricsLog;
  readonly progress: Progress;
  readonly lossScaler: DynamicLossScaler | null;
  readonly say: (line: string) => void;
  /** Where the resumed checkpoint left off, until the phase it names has started; null for a new run. */
  private resume: ResumePoint<J> | null;
  private readonly root: Rng;
  private readonly rngs = new Map<string, Rng>();
  private sampler: BatchSampler | null = null;
  private phase = 0;
  private phaseStep = 0;
  private optimizer: Optimizer | null = null;
  private ema: EMA | null = null;
  private readonly started = Date.now();
  private stopReason: string | null = null;
  private readonly interrupt: Interrupt | null = null;
  /** Optimizer steps done over the whole run. */
  step = 0;
  lastLoss: number | null = null;

  constructor(private readonly opts: SessionOptions<J>) {
    this.run = opts.run;
    this.kind = opts.kind;
    this.say = opts.say ?? ((l) => process.stdout.write(`${l}\n`));
    this.resume = opts.resume ?? null;
    this.root = new Rng(opts.seed);
    acquireRunLock(opts.run, this.say);
    this.checkpoints = new CheckpointManager(opts.run.checkpoints, { keepLast: opts.log.keep_last });
    this.tb = new SummaryWriter(opts.run.tb);
    this.metrics = MetricsLog.open(opts.run.metricsFile, this.resume ? { resumeStep: this.resume.checkpoint.step } : {});
    const precision = opts.precision ?? 'fp32';
    this.lossScaler = needsLossScaling(precision) ? new DynamicLossScaler() : null;
    const compute = installComputePrecision(precision);
    if (compute.mode !== 'fp32') this.say(compute.line);
    if (this.resume) {
      const s = this.resume.state;
      loadWeightsInto(opts.model, this.resume.checkpoint.model, this.resume.checkpoint.file);
      if (this.lossScaler && s.lossScaler) this.lossScaler.loadStateDict(s.lossScaler);
      this.step = s.step;
      this.phase = s.phase;
      this.phaseStep = s.phaseStep;
      this.say(`resuming from ${this.resume.checkpoint.file} at step ${this.step}/${opts.totalSteps}`);
    } else if (opts.recipe !== undefined) {
      this.tb.text('recipe', '```\n' + JSON.stringify(opts.recipe, null, 2) + '\n```', 0);
    }
    this.progress = new Progress({
      total: opts.totalSteps,
      label: opts.label ?? opts.kind,
      startStep: this.step,
      ...(opts.progressStream ? { stream: opts.progressStream } : {}),
    });
    if (opts.handleSignals ?? true) {
      // A second signal means it: the last complete checkpoint stays valid.
      this.interrupt = interruptOnSignals(
        {
          first: 'stopping after the step in progress and writing a checkpoint',
          second: `aborting without a checkpoint; resume from the last one with --resume ${this.run.dir}`,
        },
        { onStop: (sig) => this.requestStop(sig) },
      );
    }
  }

  /** 0, or 128 + the signal number when a signal stopped the run (130 for SIGINT, 143 for SIGTERM). */
  get exitCode(): number {
    return this.interrupt?.exitCode ?? 0;
  }

  /**
   * A named random stream derived from the seed (`root.fork(name)`), restored from the checkpoint
   * on resume and saved in every checkpoint. Ask for each name once.
   */
  rng(name: string): Rng {
    if (this.rngs.has(name)) throw new Error(`session.rng('${name}') asked for twice`);
    const r = this.root.fork(name);
    const saved = this.resume?.state.rngs[name];
    if (saved) r.setState(saved);
    this.rngs.set(name, r);
    return r;
  }

  /** The run's data cursor: epoch-shuffled batches seeded from the root, at the checkpoint's position on resume. */
  dataCursor(dataset: Dataset, opts: Omit<BatchSamplerOptions, 'seed'> = {}): BatchSampler {
    if (this.sampler) throw new Error('session.dataCursor called twice');
    const sampler = new BatchSampler(dataset, { ...opts, seed: this.root.fork('data').nextU32() });
    const pos = this.resume?.state.data;
    if (pos) sampler.seek(pos);
    this.sampler = sampler;
    return sampler;
  }

  /** The phase the resumed checkpoint is in, or null for a new run (phases before it are done). */
  get resumePhase(): number | null {
    return this.resume ? this.resume.state.phase : null;
  }

  /** Steps already done in phase `id` when the run resumes into it; null when it starts fresh. */
  resumePoint(id: number): number | null {
    return this.resume && this.resume.state.phase === id ? this.resume.state.phaseStep : null;
  }

  /** The job's part of the resumed checkpoint's state, or null for a new run. */
  get resumedJobState(): J | null {
    return this.resume?.job ?? null;
  }

  /** Ask the loop to stop after the step in progress (with a checkpoint). */
  requestStop(reason: string): void {
    this.stopReason ??= reason;
  }

  get stopRequested(): boolean {
    return this.stopReason !== null || (this.opts.stopAfterStep !== undefined && this.step >= this.opts.stopAfterStep);
  }

  /**
   * Runs one phase from where it stands (its start, or the resumed step, restoring optimizer and
   * EMA state from the checkpoint) to its end, doing the periodic logging, sampling and
   * checkpointing after each step. Stops early, with a checkpoint, when a stop is requested.
   */
  async runPhase(p: PhaseOptions): Promise<PhaseOutcome> {
    const resumed = this.resumePoint(p.id);
    this.phase = p.id;
    this.phaseStep = resumed ?? 0;
    this.optimizer = p.optimizer;
    this.ema = p.ema ?? null;
    if (resumed !== null && this.resume) {
      const c = this.resume.checkpoint;
      if (c.optimizer) p.optimizer.loadStateDict(c.optimizer);
      if (p.ema && c.ema) p.ema.loadStateDict(c.ema, c.emaNumUpdates ?? 0);
    }
    this.resume = null;
    const log = this.opts.log;
    while (this.phaseStep < p.steps) {
      // A training step never waits on I/O, so without this turn of the event loop a signal would
      // only be seen at the next sample or checkpoint write.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.stopRequested) {
        await this.checkpoint();
        return 'stopped';
      }
      const lr = p.lr(this.phaseStep);
      adaptNativeThreads();
      const r = await p.step(lr, this.phaseStep);
      this.phaseStep++;
      this.step++;
      this.lastLoss = r.loss;
      const step = this.step;
      const phaseEnd = this.phaseStep === p.steps;
      this.progress.update(step, { ...(p.tags ?? {}), loss: r.loss.toFixed(4), lr: lr.toExponential(2) });
      if (step % log.every === 0 || phaseEnd) this.logStep(p, r, lr);
      await p.afterStep?.(step);
      if (p.sample && step % log.sample_every === 0 && !phaseEnd) await this.writeSamples(() => this.withEma(this.ema, () => p.sample!(step)));
      if (step % log.checkpoint_every === 0 && !phaseEnd) await this.checkpoint();
    }
    return 'done';
  }

  private logStep(p: PhaseOptions, r: StepResult, lr: number): void {
    const fields: Record<string, MetricValue> = { ...(p.tags ?? {}), loss: r.loss, ...r.parts, lr, grad_norm: r.gradNorm };
    if (r.lossScale !== undefined) fields.loss_scale = r.lossScale;
    if (r.skipped) fields.skipped = 1;
    this.metrics.write(this.step, fields);
    this.tb.scalar(p.lossTag ?? 'loss/total', r.loss, this.step);
    for (const [name, v] of Object.entries(r.parts)) this.tb.scalar(`loss/${name}`, v, this.step);
    this.tb.scalar('lr', lr, this.step);
    this.tb.scalar('grad_norm', r.gradNorm, this.step);
    if (r.lossScale !== undefined) this.tb.scalar('loss_scale', r.lossScale, this.step);
  }

  /**
   * Writes a checkpoint of where training stands now (model, current optimizer and EMA, every
   * stream). A write that fails (disk full) leaves the previous checkpoint in place and stops the
   * run with an error naming the file and how to continue.
   */
  async checkpoint(): Promise<string> {
    const state: SessionState = {
      kind: this.kind,
      step: this.step,
      phase: this.phase,
      phaseStep: this.phaseStep,
      data: this.sampler ? this.sampler.position : null,
      rngs: Object.fromEntries([...this.rngs].map(([name, r]) => [name, r.getState()])),
      lossScaler: this.lossScaler ? this.lossScaler.stateDict() : null,
      job: this.opts.jobState(),
    };
    const previous = this.checkpoints.latestPath();
    try {
      return await this.checkpoints.save(this.step, {
        model: this.opts.model,
        ...(this.optimizer ? { optimizer: this.optimizer } : {}),
        ...(this.ema ? { ema: this.ema } : {}),
        extra: state,
      });
    } catch (e) {
      throw this.writeFailure(`could not write the checkpoint ${path.join(this.run.checkpoints, checkpointFileName(this.step))}`, e, previous);
    }
  }

  /** Runs a job's sample writer; a failed write is reported like a failed checkpoint. */
  async writeSamples(f: () => Promise<void>): Promise<void> {
    try {
      await f();
    } catch (e) {
      if (!isWriteError(e)) throw e;
      throw this.writeFailure(`could not write samples into ${this.run.samples}`, e, this.checkpoints.latestPath());
    }
  }

  private writeFailure(what: string, e: unknown, previous: string | null): JobError {
    const cause = e instanceof Error ? e.message : String(e);
    const hint = isWriteError(e) && ['ENOSPC', 'EDQUOT'].includes(e.code ?? '') ? 'free some space, then ' : '';
    const last = previous ? `the previous checkpoint ${previous} is intact; ${hint}continue with --resume ${this.run.dir}` : `no checkpoint was written yet; ${hint}start the run again`;
    return new JobError(`${what}: ${cause}\n${last}`);
  }

  /** Runs `f` with the EMA weights swapped into the model (no-op without EMA). */
  async withEma<T>(ema: EMA | null | undefined, f: () => Promise<T>): Promise<T> {
    if (!ema) return f();
    ema.swap();
    try {
      return await f();
    } finally {
      ema.swap();
    }
  }

  /** Ends the training loop: compute precision back to fp32, progress bar closed. */
  endTraining(): void {
    resetComputePrecision();
    this.progress.finish();
  }

  /** Closes the logs. Call once, also after a failure. */
  close(): void {
    this.interrupt?.dispose();
    resetComputePrecision();
    this.metrics.close();
    this.tb.close();
    releaseRunLock(this.run);
  }

  /**
   * The end-of-run summary every job prints: time, steps and final loss, the job's result lines,
   * then where everything is. `outputs` are the job's own files (`[label, path, note]`).
   */
  printSummary(opts: { results?: string[]; outputs?: [string, string, string?][]; samplesNote?: string; next?: string }): void {
    const say = this.say;
    const minutes = ((Date.now() - this.started) / 60000).toFixed(1);
    say('');
    say(`done in ${minutes} min, ${this.step} steps, final loss ${this.lastLoss?.toFixed(4) ?? 'n/a'}`);
    for (const l of opts.results ?? []) say(l);
    const row = (label: string, p: string, note?: string) => say(`  ${`${label}:`.padEnd(14)}${p}${note ? `  (${note})` : ''}`);
    for (const [label, p, note] of opts.outputs ?? []) row(label, p, note);
    row('checkpoints', this.run.checkpoints, `continue with --resume ${this.run.dir}`);
    row('samples', `${this.run.samples}/*.png`, opts.samplesNote);
    row('metrics', this.run.metricsFile);
    row('TensorBoard', `tensorboard --logdir ${this.run.tb}`);
    if (opts.next) row('next', opts.next);
  }

  /** What a stopped run prints: where it stopped and how to continue. */
  printStopped(): void {
    this.say('');
    this.say(`stopped at step ${this.step}${this.stopReason ? ` (${this.stopReason})` : ''}; continue with --resume ${this.run.dir}`);
  }
}

function isWriteError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}
