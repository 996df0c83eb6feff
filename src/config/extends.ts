import { existsSync, readdirSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../util/errors.js';
import { displayPath, formatOrigin, readConfigFile, type MapNode, type Origin } from './config_tree.js';
import { mergeMaps } from './merge.js';
import { didYouMean } from './suggest.js';

export interface LayeredConfig {
  tree: MapNode;
  /** Every file that contributed, bases first, the requested file last (absolute paths). */
  files: string[];
}

/**
 * Loads a config file and, recursively, the bases named by its `extends:` (a string or a list, merged left to
 * right, then the file itself on top). A bare name (`base` or `base.yaml`) means `<configsDir>/base.yaml`;
 * anything with a slash is a path relative to the including file.
 */
export function loadWithExtends(file: string, configsDir: string): LayeredConfig {
  const files: string[] = [];
  const tree = loadLayer(path.resolve(file), configsDir, [], files);
  return { tree, files };
}

function loadLayer(file: string, configsDir: string, chain: string[], files: string[]): MapNode {
  const own = readConfigFile(file);
  const ext = own.entries.get('extends');
  if (!ext) {
    files.push(file);
    return own;
  }
  const names: { name: string; origin: Origin }[] = [];
  if (ext.value.type === 'scalar' && typeof ext.value.value === 'string') names.push({ name: ext.value.value, origin: ext.value.origin });
  else if (ext.value.type === 'seq') {
    for (const item of ext.value.items) {
      if (item.type !== 'scalar' || typeof item.value !== 'string') {
        throw new UsageError(`${formatOrigin(item.origin)}: extends: expected a config name or path (string)`);
      }
      names.push({ name: item.value, origin: item.origin });
    }
  } else if (!(ext.value.type === 'scalar' && ext.value.value === null)) {
    throw new UsageError(`${formatOrigin(ext.keyOrigin)}: extends: expected a config name or path, or a list of them`);
  }

  const self = realpathSync(file);
  const nextChain = [...chain, self];
  let merged: MapNode | undefined;
  for (const { name, origin } of names) {
    const baseFile = resolveBase(name, path.dirname(file), configsDir, origin);
    const baseReal = realpathSync(baseFile);
    const cycleAt = nextChain.indexOf(baseReal);
    if (cycleAt >= 0) {
      const loop = [...nextChain.slice(cycleAt), baseReal].map(displayPath).join(' -> ');
      throw new UsageError(`${formatOrigin(origin)}: extends cycle: ${loop}`);
    }
    const base = loadLayer(baseFile, configsDir, nextChain, files);
    merged = merged ? mergeMaps(merged, base) : base;
  }
  const entries = new Map(own.entries);
  entries.delete('extends');
  const withoutExtends: MapNode = { ...own, entries };
  files.push(file);
  return merged ? mergeMaps(merged, withoutExtends) : withoutExtends;
}

function resolveBase(name: string, includingDir: string, configsDir: string, origin: Origin): string {
  const isBareName = !name.includes('/') && !name.includes('\\');
  const candidate = isBareName
    ? path.join(configsDir, /\.ya?ml$/.test(name) ? name : `${name}.yaml`)
    : path.resolve(includingDir, name);
  if (existsSync(candidate)) return candidate;
  let hint = '';
  if (isBareName) {
    const known = listYamlNames(configsDir);
    hint = known.length > 0 ? `${didYouMean(name.replace(/\.ya?ml$/, ''), known)}; configs available: ${known.join(', ')}` : `; ${displayPath(configsDir)} has no configs`;
  }
  throw new UsageError(`${formatOrigin(origin)}: extends: ${displayPath(candidate)} not found${hint}`);
}

/** Names (without .yaml/.yml) of the YAML files directly inside a folder; empty if it does not exist. */
export function listYamlNames(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => f.replace(/\.ya?ml$/, ''))
    .sort();
}
