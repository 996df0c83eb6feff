import type { z } from 'zod';
import { registerRecipeKind } from '../config/registry.js';
import type { LoadedRecipe } from '../config/recipe.js';

/** What the CLI hands a job besides the recipe. */
export interface JobContext {
  loaded: LoadedRecipe;
  /** The recipe as the user named it (for the run folder's name). */
  recipeArg: string;
  out?: string;
  /** true = the latest run of this recipe; a string = a run folder or checkpoint file. */
  resume?: string | true;
  /** --backend, overriding the recipe's `backend`. */
  backend?: string;
  /** Where run folders go (default `checkpoints/`). */
  runsRoot?: string;
  log: (line: string) => void;
}

export interface Job {
  kind: string;
  describe: string;
  schema: z.ZodType;
  /** Returns the process exit code. */
  run(ctx: JobContext): Promise<number>;
}

const jobs = new Map<string, Job>();

/** A job kind is its recipe schema plus a runner; registering one makes `train --recipe` accept it. */
export function registerJob(job: Job): Job {
  registerRecipeKind(job.kind, job.schema, { describe: job.describe });
  jobs.set(job.kind, job);
  return job;
}

export function getJob(kind: string): Job | undefined {
  return jobs.get(kind);
}

export function listJobs(): Job[] {
  return [...jobs.values()];
}
