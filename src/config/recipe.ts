import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Document } from 'yaml';
import type { z } from 'zod';
import { UsageError } from '../util/errors.js';
import { displayPath, formatOrigin, toPlain, type MapNode } from './config_tree.js';
import { listYamlNames, loadWithExtends } from './extends.js';
import { formatIssues } from './issues.js';
import { dropNullKeys } from './merge.js';
import { applySets, parseSet } from './overrides.js';
import { getRecipeKind, kindsOfSchema, listRecipeKinds } from './registry.js';
import { didYouMean } from './suggest.js';

/*
 * Recipe format (YAML 1.2, so `yes`/`no` are strings: write true/false):
 *   kind: nsp-progressive          # selects the schema; the rest of the file is validated by it
 *   extends: [base, ./more.yaml]   # optional; bare names are configs/<name>.yaml, paths are relative to this file
 *   train: { lr: 0.0001 }          # anything the kind's schema allows; omitted keys take the schema defaults
 * Layering: bases merge left to right, then the file, then each `--set key.path=value`. Mappings merge key by key;
 * lists and scalars replace. `~` (null) unsets a key in every layer, so the schema default applies; this is how a
 * child drops a key a base set (e.g. switching an optimizer `type` whose options differ).
 */

export { registerRecipeKind, getRecipeKind, listRecipeKinds, type RecipeKind } from './registry.js';

/** The checkout (or installed package) root: this module lives in `<root>/src/config/`. */
export const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LoadRecipeOptions {
  /** `key.path=value` overrides, applied in order after all files are merged. */
  sets?: readonly string[];
  /** Where `recipes/` and `configs/` live; defaults to the project root. */
  projectRoot?: string;
}

export interface LoadedRecipe {
  kind: string;
  /** Validated by the kind's schema, defaults applied. Use `parseRecipe(Schema, loaded)` to get it typed. */
  config: unknown;
  /** Absolute path of the recipe file that was asked for. */
  sourcePath: string;
  /** The complete effective recipe (kind + config with defaults), loadable again as a recipe of its own. */
  resolvedYaml: string;
  /** Absolute paths of every file merged in, bases first. */
  files: string[];
}

// The merged, positioned tree behind a loaded recipe, kept so parseRecipe can re-validate with located errors.
const treeOf = new WeakMap<LoadedRecipe, MapNode>();

/**
 * Loads `recipes/<name>.yaml` (a bare name, with or without `.yaml`) or a path relative to the working directory,
 * resolves `extends:`, applies `--set` overrides and validates the result with the schema registered for its
 * `kind:`. Every mistake is a UsageError naming file:line:col (or the `--set`) and the dotted key.
 */
export function loadRecipe(pathOrName: string, opts: LoadRecipeOptions = {}): LoadedRecipe {
  const root = opts.projectRoot ?? PROJECT_ROOT;
  const sourcePath = findRecipeFile(pathOrName, root);
  const { tree: fromFiles, files } = loadWithExtends(sourcePath, path.join(root, 'configs'));
  const sets = (opts.sets ?? []).map(parseSet);
  const tree = dropNullKeys(applySets(fromFiles, sets)) as MapNode;

  const kindEntry = tree.entries.get('kind');
  const known = listRecipeKinds().map((k) => k.kind);
  const knownList = known.length > 0 ? known.map((k) => `'${k}'`).join(', ') : '(none registered)';
  if (!kindEntry) throw new UsageError(`${formatOrigin(tree.origin)}: missing 'kind:' (known kinds: ${knownList})`);
  const kindValue = kindEntry.value;
  if (kindValue.type !== 'scalar' || typeof kindValue.value !== 'string') {
    throw new UsageError(`${formatOrigin(kindEntry.keyOrigin)}: kind: expected a name, one of ${knownList}`);
  }
  const kind = kindValue.value;
  const registered = getRecipeKind(kind);
  if (!registered) {
    throw new UsageError(`${formatOrigin(kindEntry.keyOrigin)}: kind: unknown kind '${kind}'${didYouMean(kind, known)}; known kinds: ${knownList}`);
  }

  const config = validate(registered.schema, tree, sourcePath);
  const loaded: LoadedRecipe = {
    kind,
    config,
    sourcePath,
    resolvedYaml: renderResolved(kind, config, files, opts.sets ?? []),
    files: [...new Set(files)],
  };
  treeOf.set(loaded, tree);
  return loaded;
}

/**
 * The typed config for a job: `const cfg = parseRecipe(NspRecipeSchema, loaded)`. A recipe of another registered
 * kind is a usage error; a schema that is not registered (a job's private variant) re-validates the same tree.
 */
export function parseRecipe<S extends z.ZodType>(schema: S, loaded: LoadedRecipe): z.output<S> {
  const owners = kindsOfSchema(schema);
  if (owners.includes(loaded.kind)) return loaded.config as z.output<S>;
  if (owners.length > 0) {
    throw new UsageError(
      `${displayPath(loaded.sourcePath)}: this recipe is of kind '${loaded.kind}', but this job needs kind ${owners.map((k) => `'${k}'`).join(' or ')}`,
    );
  }
  const tree = treeOf.get(loaded);
  if (!tree) throw new Error('parseRecipe: the recipe was not produced by loadRecipe');
  return validate(schema, tree, loaded.sourcePath) as z.output<S>;
}

function validate(schema: z.ZodType, tree: MapNode, sourcePath: string): unknown {
  const body = new Map(tree.entries);
  body.delete('kind');
  const bodyTree: MapNode = { ...tree, entries: body };
  const input = toPlain(bodyTree);
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const lines = formatIssues(schema, result.error.issues, bodyTree, input);
  const header = lines.length > 1 ? `recipe ${displayPath(sourcePath)} has ${lines.length} problems:\n` : '';
  throw new UsageError(header + lines.join('\n'));
}

/**
 * Finds the recipe file. A bare name is looked up in `<root>/recipes/` first (the usual case), then as a file in
 * the working directory; anything with a slash is a path relative to the working directory.
 */
export function findRecipeFile(pathOrName: string, projectRoot: string = PROJECT_ROOT): string {
  const recipesDir = path.join(projectRoot, 'recipes');
  const isBareName = !pathOrName.includes('/') && !pathOrName.includes('\\');
  const candidates: string[] = [];
  if (isBareName) {
    candidates.push(path.join(recipesDir, pathOrName));
    if (!/\.ya?ml$/.test(pathOrName)) candidates.push(path.join(recipesDir, `${pathOrName}.yaml`), path.join(recipesDir, `${pathOrName}.yml`));
  }
  candidates.push(path.resolve(pathOrName));
  for (const c of candidates) if (existsSync(c) && statSync(c).isFile()) return c;
  const known = listYamlNames(recipesDir);
  const hint = isBareName && known.length > 0 ? `${didYouMean(pathOrName.replace(/\.ya?ml$/, ''), known)}; recipes available: ${known.join(', ')}` : '';
  throw new UsageError(
    `recipe '${pathOrName}' not found (looked for ${candidates.map(displayPath).join(', ')})${hint}`,
  );
}

function renderResolved(kind: string, config: unknown, files: string[], sets: readonly string[]): string {
  const body = config !== null && typeof config === 'object' && !Array.isArray(config) ? config : { config };
  const doc = new Document({ kind, ...body });
  const uniqueFiles = [...new Set(files)];
  const notes = [
    `Resolved recipe: ${displayPath(uniqueFiles[uniqueFiles.length - 1] ?? '')}`,
    ...(uniqueFiles.length > 1 ? [`merged from: ${uniqueFiles.map(displayPath).join(', ')}`] : []),
    ...sets.map((s) => `--set ${s.replace(/\n/g, "\\n")}`),
    'All defaults are filled in; load this file as a recipe to repeat the run exactly.',
  ];
  doc.commentBefore = notes.map((n) => ` ${n}`).join('\n');
  return doc.toString({ lineWidth: 0 });
}
