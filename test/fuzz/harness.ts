import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { JobError, UsageError } from '../../src/util/errors.js';

/**
 * Property-based fuzzing of every parser a user feeds files to. A target is an arbitrary (how inputs are made)
 * and a `run` that feeds one input to the parser. The property every target must keep: the input ends in a
 * result (which `run` may check further) or in a typed error from src/util/errors.ts whose message says what was
 * wrong. A TypeError/RangeError, a plain Error, an empty message, a stack overflow, a hang past the time limit or
 * a burst of allocation is a failure, reported with the seed and the shrunk input so it can be replayed.
 */

export interface FuzzContext {
  /** A scratch folder for this target, emptied before each run. */
  readonly dir: string;
  /** A fresh file path inside `dir` (unique per call). */
  file(name: string): string;
}

export interface FuzzTarget<T = unknown> {
  /** `area.parser`, e.g. `safetensors.header`; `--only` matches on prefixes of it. */
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** Feed one input; throw to signal an error outcome. Returning means a (checked) result. */
  run(input: T, ctx: FuzzContext): unknown | Promise<unknown>;
  /** Relative cost: the suite runs `ceil(runs / cost)` cases of this target. Default 1. */
  cost?: number;
}

/** Declares a target with its input type checked against its arbitrary. */
export function target<T>(t: FuzzTarget<T>): FuzzTarget {
  return t as FuzzTarget;
}

/** Longest acceptable error message: a hostile file must not be echoed back in full. */
export const MAX_MESSAGE = 4000;
/** Bytes a single case may allocate (heap + array buffers, measured around the run). */
export const MAX_ALLOCATION = 512 * 1024 * 1024;

export class FuzzFailure extends Error {}

/** Why an error is not an acceptable outcome, or undefined when it is. */
export function unacceptableError(e: unknown): string | undefined {
  if (!(e instanceof UsageError || e instanceof JobError)) {
    const what = e instanceof Error ? `${e.constructor.name}: ${e.message}` : `a thrown ${typeof e}: ${String(e)}`;
    return `escaped as ${what.slice(0, 500)} (expected a UsageError/JobError)\n${e instanceof Error ? e.stack?.split('\n').slice(1, 6).join('\n') : ''}`;
  }
  if (e.message.trim() === '') return `${e.name} with an empty message`;
  if (e.message.length > MAX_MESSAGE) return `${e.name} message is ${e.message.length} characters (limit ${MAX_MESSAGE})`;
  return undefined;
}

function allocated(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** The fast-check property of one target. */
export function propertyOf(t: FuzzTarget, ctx: FuzzContext & { reset(): void }): fc.IAsyncPropertyWithHooks<[unknown]> {
  return fc.asyncProperty(t.arbitrary, async (input) => {
    ctx.reset();
    const before = allocated();
    let outcome: unknown;
    try {
      await t.run(input, ctx);
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      outcome = e;
    }
    const grew = allocated() - before;
    if (grew > MAX_ALLOCATION) throw new FuzzFailure(`${t.name}: one input allocated ${(grew / 2 ** 20).toFixed(0)} MiB`);
    if (outcome !== undefined) {
      const why = unacceptableError(outcome);
      if (why) throw new FuzzFailure(`${t.name}: ${why}`);
    }
  });
}

export function makeContext(name: string): FuzzContext & { reset(): void; dispose(): void } {
  const dir = mkdtempSync(join(tmpdir(), `sf-fuzz-${name.replace(/[^a-z0-9]/gi, '_')}-`));
  let n = 0;
  return {
    dir,
    file: (base: string) => join(dir, `${n++}-${base}`),
    reset() {
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface FuzzRunOptions {
  seed: number;
  /** Cases per target of cost 1. */
  runs: number;
  /** Milliseconds one case may take before it counts as a hang. */
  timeoutMs?: number;
}

/** Runs one target; resolves to fast-check's report (failed, counterexample, seed and path for replay). */
export async function fuzzTarget(t: FuzzTarget, opts: FuzzRunOptions): Promise<fc.RunDetails<[unknown]>> {
  const ctx = makeContext(t.name);
  try {
    return await fc.check(propertyOf(t, ctx), {
      seed: opts.seed,
      numRuns: Math.max(1, Math.ceil(opts.runs / (t.cost ?? 1))),
      timeout: opts.timeoutMs ?? 10_000,
      endOnFailure: false,
    });
  } finally {
    ctx.dispose();
  }
}

/** A failure report a person can act on: the target, the seed and path to replay it, the shrunk input and why. */
export function describeFailure(t: FuzzTarget, details: fc.RunDetails<[unknown]>): string {
  const input = details.counterexample ? fc.stringify(details.counterexample[0]) : '(none)';
  const why = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
  return [
    `fuzz target ${t.name} failed after ${details.numRuns} runs`,
    `replay: npm run fuzz -- --only ${t.name} --seed ${details.seed} --path ${details.counterexamplePath ?? ''}`,
    `input: ${input.length > 2000 ? `${input.slice(0, 2000)}…` : input}`,
    `why: ${why}`,
  ].join('\n');
}
