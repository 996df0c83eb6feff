import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { registerRecipeKind } from '../config/registry.js';
import type { LoadedRecipe } from '../config/recipe.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { CheckpointManager, STATE_METADATA_KEY } from '../train/checkpoint.js';
import { runDirPaths } from '../train/run_dir.js';
import { UsageError } from '../util/errors.js';

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

/** Knobs of a training run that are not part of the recipe (tests and tools set them). */
export interface JobRunOptions {
  /** Stop with a checkpoint once this many optimizer steps are done (tests simulate a crash with it). */
  stopAfterStep?: number;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

/** A trained model of some kind, ready to use; `dispose` frees its tensors. */
export interface LoadedModel {
  kind: string;
  /** The file the weights came from. */
  source: string;
  dispose(): void;
}

/** What `scaleforge sample` asks of a job; kinds ignore what they have no use for (a VAE has no prompts). */
export interface SampleRequest {
  prompts: string[];
  /** Samples per prompt (or images, for kinds without prompts). */
  n: number;
  seed: number;
  /** Folder for the PNGs. */
  out: string;
  saveIntermediates: boolean;
  /** Training checkpoints: use the EMA weights when they exist. */
  ema: boolean;
  log: (line: string) => void;
  /** Class-conditioned kinds: class labels to sample instead of prompts. */
  classes?: number[];
  /** Diffusion kinds: sampler name, number of steps, classifier-free guidance scale, DDIM η. */
  sampler?: string;
  steps?: number;
  cfg?: number;
  eta?: number;
  /** Diffusion kinds: LoRA files `FILE[:strength]` applied to the model before sampling (any layout). */
  loras?: string[];
}

export interface Job {
  kind: string;
  describe: string;
  schema: z.ZodType;
  /** Trains; returns the process exit code (130/143 when a signal stopped it, after a checkpoint). */
  run(ctx: JobContext, opts?: JobRunOptions): Promise<number>;
  /** A run folder, final model or training checkpoint of this kind → the model, weights loaded. */
  load(target: string, opts: { ema?: boolean }): LoadedModel;
  /** Writes samples (PNGs) from a run folder, final model or checkpoint of this kind; returns the files. */
  sample(target: string, request: SampleRequest): Promise<string[]>;
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

/** Metadata key naming the kind of a final model file (training checkpoints carry it in their state). */
export const MODEL_KIND_KEY = 'scaleforge.kind';

/**
 * The kind of what `target` holds, for dispatch: a run folder (its run.json), a final model file
 * (`scaleforge.kind` metadata), a training checkpoint (its state), or a diffusers VAE folder.
 */
export function detectModelKind(target: string): string {
  const p = path.resolve(target);
  if (!fs.existsSync(p)) throw new UsageError(`${target} does not exist`);
  if (fs.statSync(p).isDirectory()) {
    const run = runDirPaths(p);
    if (fs.existsSync(run.infoFile)) {
      const info: unknown = JSON.parse(fs.readFileSync(run.infoFile, 'utf8'));
      if (info !== null && typeof info === 'object' && 'kind' in info && typeof info.kind === 'string') return info.kind;
    }
    const latest = new CheckpointManager(run.checkpoints).latestPath();
    if (latest) return detectModelKind(latest);
    const diffusersConfig = path.join(p, 'config.json');
    if (fs.existsSync(diffusersConfig) && /"_class_name"\s*:\s*"AutoencoderKL"/.test(fs.readFileSync(diffusersConfig, 'utf8'))) return 'vae';
    throw new UsageError(`${target}: not a run folder (no run.json or checkpoints) nor a diffusers AutoencoderKL folder`);
  }
  const meta = readSafetensorsHeader(p).metadata;
  const kind = meta[MODEL_KIND_KEY];
  if (kind) return kind;
  const state = meta[STATE_METADATA_KEY];
  if (state) {
    const parsed: unknown = JSON.parse(state);
    if (parsed !== null && typeof parsed === 'object' && 'extra' in parsed) {
      const extra = parsed.extra;
      if (extra !== null && typeof extra === 'object' && 'kind' in extra && typeof extra.kind === 'string') return extra.kind;
    }
  }
  const beside = path.join(path.dirname(p), 'config.json');
  if (fs.existsSync(beside) && /"_class_name"\s*:\s*"AutoencoderKL"/.test(fs.readFileSync(beside, 'utf8'))) return 'vae';
  throw new UsageError(`${target}: a safetensors file without scaleforge.kind metadata; known kinds: ${listJobs().map((j) => j.kind).join(', ')}`);
}

/** The registered job for what `target` holds; a kind without a job is a usage error naming the known ones. */
export function jobForModel(target: string): Job {
  const kind = detectModelKind(target);
  const job = jobs.get(kind);
  if (!job) throw new UsageError(`${target}: holds a model of kind '${kind}', which no job handles; known kinds: ${listJobs().map((j) => j.kind).join(', ')}`);
  return job;
}
