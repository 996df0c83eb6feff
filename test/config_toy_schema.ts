import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { registerRecipeKind } from '../src/config/registry.js';

/** A small test-only recipe kind exercising nesting, lists, enums, defaults and strictness. */
export const ToySchema = z.strictObject({
  train: z.strictObject({
    learning_rate: z.number().positive(),
    batch_size: z.int().positive(),
    schedule: z
      .strictObject({
        warmup: z.int().nonnegative().default(0),
        decay: z.enum(['cosine', 'linear', 'constant']).default('constant'),
      })
      .prefault({}),
  }),
  model: z.strictObject({
    channels: z.int().positive(),
    scales: z.array(z.int().positive()).min(1),
    name: z.string().default('toy'),
  }),
  seed: z.int().default(0),
});

export const OtherSchema = z.strictObject({ steps: z.int().positive().default(10) });

registerRecipeKind('test-toy', ToySchema, { describe: 'test-only toy kind' });
registerRecipeKind('test-other', OtherSchema, { describe: 'test-only second kind' });

export const FIXTURE_ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/config/project');

export function fixture(rel: string): string {
  return path.join(FIXTURE_ROOT, rel);
}

/** `file:line:col` of the first occurrence of `needle` in a fixture, found by scanning its text. */
export function locate(rel: string, needle: string): string {
  const file = fixture(rel);
  const lines = readFileSync(file, 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(needle));
  if (i < 0) throw new Error(`${needle} not in ${rel}`);
  return `${path.relative(process.cwd(), file)}:${i + 1}:${lines[i]!.indexOf(needle) + 1}`;
}
