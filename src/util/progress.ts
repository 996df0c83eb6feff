/**
 * Progress reporting for long jobs. On a terminal: one bar line redrawn in place,
 *   `[####................] 120/500 24% | loss 0.123 | 3.2 it/s | ETA 1:58`
 * Elsewhere (CI logs, files): plain lines, one every `intervalSec` or on each `percentStep` milestone, but never
 * two within `minGapSec`, so a log gets a few lines a minute whatever the step rate.
 * The rate is an exponential moving average of the time per step, so a slow first step (graph warm-up) fades.
 */

/** What the reporter writes to; `process.stderr` fits, and tests pass a fake. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export type ProgressFields = Record<string, number | string>;

export interface ProgressOptions {
  total: number;
  /** Printed before the bar, e.g. `train` or `stage 2/5`. */
  label?: string;
  stream?: ProgressStream;
  /** Milliseconds; injectable for tests. */
  now?: () => number;
  /** Step the job resumes from, so the first rate sample does not count the skipped steps. */
  startStep?: number;
  /** Non-terminal: a line at least this often while steps arrive (seconds). */
  intervalSec?: number;
  /** Non-terminal: also a line when progress crosses a multiple of this many percent. */
  percentStep?: number;
  /** Non-terminal: never two lines closer than this (seconds). */
  minGapSec?: number;
  /** Terminal: redraw at most this often (milliseconds). */
  redrawMs?: number;
  barWidth?: number;
  /** Weight of the newest step time in the moving average. */
  emaAlpha?: number;
}

export class Progress {
  readonly total: number;
  private readonly label: string;
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly percentStep: number;
  private readonly minGapMs: number;
  private readonly redrawMs: number;
  private readonly barWidth: number;
  private readonly alpha: number;
  private readonly startStep: number;
  private readonly startedAt: number;

  private step: number;
  private fields: ProgressFields = {};
  private lastSampleAt: number;
  private lastSampleStep: number;
  private emaStepMs: number | undefined;
  private lastOutputAt: number;
  private lastMilestone: number;
  private drawnOnce = false;
  private finished = false;

  constructor(opts: ProgressOptions) {
    this.total = Math.max(0, opts.total);
    this.label = opts.label ?? '';
    this.stream = opts.stream ?? process.stderr;
    this.now = opts.now ?? (() => performance.now());
    this.tty = this.stream.isTTY === true;
    this.intervalMs = (opts.intervalSec ?? 10) * 1000;
    this.percentStep = opts.percentStep ?? 10;
    this.minGapMs = (opts.minGapSec ?? 5) * 1000;
    this.redrawMs = opts.redrawMs ?? 100;
    this.barWidth = opts.barWidth ?? 20;
    this.alpha = opts.emaAlpha ?? 0.1;
    this.startStep = opts.startStep ?? 0;
    this.step = this.startStep;
    this.startedAt = this.now();
    this.lastSampleAt = this.startedAt;
    this.lastSampleStep = this.startStep;
    this.lastOutputAt = this.startedAt;
    this.lastMilestone = this.milestoneOf(this.startStep);
  }

  /** Steps per second from the moving average, undefined before the first completed step. */
  get rate(): number | undefined {
    return this.emaStepMs === undefined || this.emaStepMs <= 0 ? undefined : 1000 / this.emaStepMs;
  }

  /** Seconds left at the current rate. */
  get etaSec(): number | undefined {
    return this.emaStepMs === undefined ? undefined : (Math.max(0, this.total - this.step) * this.emaStepMs) / 1000;
  }

  /** Reports that `step` steps are done (absolute, not an increment); `fields` (loss, lr...) are shown after it. */
  update(step: number, fields?: ProgressFields): void {
    if (this.finished) return;
    const t = this.now();
    const done = step - this.lastSampleStep;
    if (done > 0) {
      const perStep = (t - this.lastSampleAt) / done;
      // One update covering k equal steps weighs like k single-step updates would have.
      const a = 1 - Math.pow(1 - this.alpha, done);
      this.emaStepMs = this.emaStepMs === undefined ? perStep : a * perStep + (1 - a) * this.emaStepMs;
      this.lastSampleAt = t;
      this.lastSampleStep = step;
    }
    this.step = step;
    if (fields) Object.assign(this.fields, fields);

    if (this.tty) {
      if (!this.drawnOnce || t - this.lastOutputAt >= this.redrawMs || step >= this.total) this.redraw(t);
      return;
    }
    const sinceLast = t - this.lastOutputAt;
    const milestone = this.milestoneOf(step);
    const crossed = milestone > this.lastMilestone;
    // A milestone skipped for being too close to the previous line is dropped, not deferred to an odd step.
    if (crossed) this.lastMilestone = milestone;
    if (sinceLast >= this.intervalMs || (crossed && sinceLast >= this.minGapMs)) {
      this.stream.write(`${this.plainLine(t)}\n`);
      this.lastOutputAt = t;
    }
  }

  /** One more step done. */
  tick(fields?: ProgressFields): void {
    this.update(this.step + 1, fields);
  }

  /** A message that must not be garbled by the bar (printed above it on a terminal). */
  log(message: string): void {
    if (this.tty && this.drawnOnce && !this.finished) {
      this.stream.write(`\r\x1b[K${message}\n`);
      this.redraw(this.now());
    } else {
      this.stream.write(`${message}\n`);
    }
  }

  /** Final line with the total time and the average rate over the whole run; later calls do nothing. */
  finish(fields?: ProgressFields): void {
    if (this.finished) return;
    if (fields) Object.assign(this.fields, fields);
    this.finished = true;
    const elapsedMs = this.now() - this.startedAt;
    const steps = this.step - this.startStep;
    const avgRate = steps > 0 && elapsedMs > 0 ? (steps * 1000) / elapsedMs : undefined;
    const parts = [
      `${this.prefix()}done ${this.step}/${this.total} in ${formatDuration(elapsedMs / 1000)}${avgRate ? ` (${formatRate(avgRate)})` : ''}`,
      ...this.fieldParts(),
    ];
    const line = parts.join(' | ');
    // Unclipped even on a terminal: nothing redraws this line, so wrapping is harmless.
    this.stream.write(this.tty ? `\r${line}\x1b[K\n` : `${line}\n`);
  }

  private redraw(t: number): void {
    const frac = this.total > 0 ? Math.min(1, this.step / this.total) : 1;
    const filled = Math.floor(frac * this.barWidth);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(this.barWidth - filled)}]`;
    const line = this.fit(`${this.prefix()}${bar} ${this.counter()}`, this.fieldParts(), this.speedParts());
    this.stream.write(`\r${line}\x1b[K`);
    this.lastOutputAt = t;
    this.drawnOnce = true;
  }

  private plainLine(t: number): string {
    return [
      `${this.prefix()}${this.counter()}`,
      ...this.fieldParts(),
      ...this.speedParts(),
      `elapsed ${formatDuration((t - this.startedAt) / 1000)}`,
    ].join(' | ');
  }

  private prefix(): string {
    return this.label ? `${this.label} ` : '';
  }

  private counter(): string {
    return `${this.step}/${this.total} ${this.percent(this.step)}%`;
  }

  private percent(step: number): number {
    return this.total > 0 ? Math.floor((Math.min(step, this.total) / this.total) * 100) : 100;
  }

  private milestoneOf(step: number): number {
    return this.percentStep > 0 ? Math.floor(this.percent(step) / this.percentStep) : 0;
  }

  private fieldParts(): string[] {
    return Object.entries(this.fields).map(([k, v]) => `${k} ${formatValue(v)}`);
  }

  private speedParts(): string[] {
    const rate = this.rate;
    const eta = this.etaSec;
    return [rate === undefined ? '-- it/s' : formatRate(rate), `ETA ${eta === undefined ? '--:--' : formatDuration(eta)}`];
  }

  /**
   * Keeps the bar on one terminal row (a wrapped line cannot be redrawn with `\r`): drops trailing fields first,
   * then the rate, then the ETA, and cuts the rest only as a last resort.
   */
  private fit(head: string, fields: string[], speed: string[]): string {
    const cols = this.stream.columns;
    const parts = [head, ...fields, ...speed];
    if (!cols || cols < 2) return parts.join(' | ');
    const max = cols - 1;
    let nFields = fields.length;
    let nSpeed = speed.length;
    const build = () => [head, ...fields.slice(0, nFields), ...speed.slice(speed.length - nSpeed)].join(' | ');
    while (build().length > max && nFields > 0) nFields--;
    while (build().length > max && nSpeed > 0) nSpeed--;
    const line = build();
    return line.length > max ? line.slice(0, max) : line;
  }
}

/** `m:ss` below an hour, `h:mm:ss` above; seconds are rounded. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** `3.2 it/s`, or `4.5 s/it` when a step takes longer than a second. */
export function formatRate(stepsPerSec: number): string {
  if (stepsPerSec >= 1) return `${stepsPerSec >= 100 ? stepsPerSec.toFixed(0) : stepsPerSec.toFixed(1)} it/s`;
  const secPerStep = 1 / stepsPerSec;
  return `${secPerStep >= 100 ? secPerStep.toFixed(0) : secPerStep.toFixed(1)} s/it`;
}

/** Integers as they are, other numbers to 4 significant digits (exponent form when very large or small). */
export function formatValue(v: number | string): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}
