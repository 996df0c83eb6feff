import { UsageError } from '../util/errors.js';
import { CONFIG_LIMITS, describeNode, formatOrigin, parseSetValue, type ConfigNode, type MapNode } from './config_tree.js';
import { mergeNodes } from './merge.js';

export interface SetOverride {
  /** Dotted key path as typed, e.g. `train.lr`. */
  keyPath: string;
  keys: string[];
  value: ConfigNode;
}

/** Parses one `--set a.b.c=value`; the value is YAML, so `8`, `true`, `[16,32]` and `{a: 1}` keep their types. */
export function parseSet(arg: string): SetOverride {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new UsageError(`--set ${arg}: expected key.path=value (e.g. --set train.lr=0.0001)`);
  const keyPath = arg.slice(0, eq).trim();
  const keys = keyPath.split('.');
  if (keys.some((k) => k === '')) throw new UsageError(`--set ${arg}: the key path '${keyPath}' has an empty part`);
  if (keys.length > CONFIG_LIMITS.maxDepth) throw new UsageError(`--set ${keyPath.slice(0, 80)}…: the key path has ${keys.length} parts (limit ${CONFIG_LIMITS.maxDepth})`);
  if (keys[0] === 'extends') throw new UsageError(`--set ${keyPath}: 'extends' is resolved from the files and cannot be set on the command line`);
  const rawValue = arg.slice(eq + 1);
  if (rawValue.trim() === '') throw new UsageError(`--set ${keyPath}: no value after '='; write '~' to unset the key`);
  return { keyPath, keys, value: parseSetValue(rawValue, keyPath) };
}

/**
 * Applies overrides in order. Missing mappings on the way are created (the schema then reports unknown keys);
 * a path that runs through a scalar is an error, as is a list index that is not an existing position.
 */
export function applySets(root: MapNode, sets: readonly SetOverride[]): MapNode {
  let out = root;
  for (const s of sets) out = applyOne(out, s, 0) as MapNode;
  return out;
}

function applyOne(node: ConfigNode, s: SetOverride, depth: number): ConfigNode {
  const key = s.keys[depth]!;
  const last = depth === s.keys.length - 1;
  const here = s.keys.slice(0, depth).join('.');
  if (node.type === 'map') {
    const entries = new Map(node.entries);
    const prev = entries.get(key);
    if (last) {
      if (s.value.type === 'scalar' && s.value.value === null) entries.delete(key);
      else entries.set(key, { keyOrigin: { set: s.keyPath }, value: prev ? mergeNodes(prev.value, s.value) : s.value });
    } else {
      const child: ConfigNode = prev?.value ?? { type: 'map', entries: new Map(), origin: { set: s.keyPath } };
      entries.set(key, { keyOrigin: prev?.keyOrigin ?? { set: s.keyPath }, value: applyOne(child, s, depth + 1) });
    }
    return { ...node, entries };
  }
  if (node.type === 'seq') {
    const index = /^\d+$/.test(key) ? Number(key) : NaN;
    if (!(index < node.items.length)) {
      throw new UsageError(
        `--set ${s.keyPath}: '${here}' is a list of ${node.items.length} items (${formatOrigin(node.origin)}); '${key}' is not a position in it`,
      );
    }
    const items = [...node.items];
    if (last) {
      if (s.value.type === 'scalar' && s.value.value === null) throw new UsageError(`--set ${s.keyPath}: list items cannot be unset`);
      items[index] = mergeNodes(items[index]!, s.value);
    } else {
      items[index] = applyOne(items[index]!, s, depth + 1);
    }
    return { ...node, items };
  }
  throw new UsageError(
    `--set ${s.keyPath}: '${here}' is a ${describeNode(node)} (${formatOrigin(node.origin)}), so it has no key '${key}'`,
  );
}
