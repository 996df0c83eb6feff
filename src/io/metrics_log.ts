import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { JobError } from '../util/errors.js';

/**
 * Training metrics as JSON Lines: one object per line, `{"step":120,"time":1718000000.123,"loss":0.41,...}`,
 * `time` in Unix seconds. JSON has no NaN/Infinity, so those are written as the strings "NaN", "Infinity" and
 * "-Infinity" and read back as numbers (a diverging loss must stay visible in the log).
 */
export type MetricValue = number | string | boolean | null;
export interface MetricsRecord {
  step: number;
  time: number;
  [field: string]: MetricValue;
}

export interface OpenMetricsLogOptions {
  /**
   * Continue a run from this step: records with a larger step (written after the checkpoint being resumed) are
   * removed so the log matches the state training continues from. Without it the file must be new or empty.
   */
  resumeStep?: number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

const NON_FINITE = new Map<string, number>([
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
]);

export class MetricsLog {
  private fd: number | undefined;
  private readonly now: () => number;

  private constructor(
    readonly path: string,
    fd: number,
    now: () => number,
  ) {
    this.fd = fd;
    this.now = now;
  }

  static open(file: string, opts: OpenMetricsLogOptions = {}): MetricsLog {
    if (opts.resumeStep !== undefined) truncateAfter(file, opts.resumeStep);
    else if (existsSync(file) && statSync(file).size > 0) {
      throw new JobError(`${file} already holds metrics; resume from a step or start a new run folder`);
    }
    return new MetricsLog(file, openSync(file, 'a'), opts.now ?? Date.now);
  }

  /** Appends one record; `fields` must not use the reserved names `step` and `time`. */
  write(step: number, fields: Record<string, MetricValue>): void {
    if (this.fd === undefined) throw new Error(`metrics log ${this.path} is closed`);
    if (!Number.isInteger(step) || step < 0) throw new Error(`metrics step must be a non-negative integer, got ${step}`);
    if ('step' in fields || 'time' in fields) throw new Error("metrics fields 'step' and 'time' are reserved");
    writeSync(this.fd, `${encodeRecord({ step, time: this.now() / 1000, ...fields })}\n`);
  }

  /** Forces written records to disk, e.g. right before a checkpoint that claims them is saved. */
  sync(): void {
    if (this.fd !== undefined) fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}

function encodeRecord(r: MetricsRecord): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
}

/**
 * Reads every record. An unterminated last line (the process died mid-write) is ignored; any other line that is
 * not a JSON object with a numeric step is an error naming the line.
 */
export function readMetricsLog(file: string): MetricsRecord[] {
  return parseLines(file, readFileSync(file, 'utf8')).map((l) => l.record);
}

function parseLines(file: string, text: string): { record: MetricsRecord; raw: string }[] {
  // The piece after the last newline is either empty or a record cut short by a crash: both are dropped.
  const complete = text.split('\n').slice(0, -1);
  const out: { record: MetricsRecord; raw: string }[] = [];
  complete.forEach((raw, i) => {
    if (raw.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw, (_k, v: unknown) => (typeof v === 'string' && NON_FINITE.has(v) ? NON_FINITE.get(v) : v));
    } catch {
      throw new JobError(`${file}:${i + 1}: not a JSON line: ${raw.slice(0, 80)}`);
    }
    if (parsed === null || typeof parsed !== 'object' || typeof (parsed as MetricsRecord).step !== 'number') {
      throw new JobError(`${file}:${i + 1}: expected an object with a numeric "step"`);
    }
    out.push({ record: parsed as MetricsRecord, raw });
  });
  return out;
}

function truncateAfter(file: string, step: number): void {
  if (!existsSync(file)) return;
  const kept = parseLines(file, readFileSync(file, 'utf8')).filter((l) => l.record.step <= step);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, kept.map((l) => `${l.raw}\n`).join(''));
  renameSync(tmp, file);
}
