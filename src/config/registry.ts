import type { z } from 'zod';

export interface RecipeKind<S extends z.ZodType = z.ZodType> {
  kind: string;
  /** Validates everything in a recipe except `kind` (and the already resolved `extends`). */
  schema: S;
  /** One line for listings such as "known kinds". */
  describe: string;
}

const kinds = new Map<string, RecipeKind>();

/**
 * Called once per kind by the module that implements the job. Registering a different schema under a taken
 * name is a programming error, registering the same one again (module loaded twice) is harmless.
 */
export function registerRecipeKind<S extends z.ZodType>(kind: string, schema: S, opts: { describe: string }): RecipeKind<S> {
  if (!/^[a-z][a-z0-9-]*$/.test(kind)) throw new Error(`recipe kind '${kind}' must be lower-case letters, digits and dashes`);
  const prev = kinds.get(kind);
  if (prev && prev.schema !== schema) throw new Error(`recipe kind '${kind}' is already registered with another schema`);
  const entry: RecipeKind<S> = { kind, schema, describe: opts.describe };
  kinds.set(kind, entry);
  return entry;
}

export function getRecipeKind(kind: string): RecipeKind | undefined {
  return kinds.get(kind);
}

export function listRecipeKinds(): RecipeKind[] {
  return [...kinds.values()].sort((a, b) => a.kind.localeCompare(b.kind));
}

/** The kinds this schema is registered under (normally one). */
export function kindsOfSchema(schema: z.ZodType): string[] {
  return [...kinds.values()].filter((k) => k.schema === schema).map((k) => k.kind);
}
