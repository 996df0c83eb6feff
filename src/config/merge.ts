import type { ConfigNode, MapNode } from './config_tree.js';

/**
 * Layers `over` on top of `base`: mappings merge key by key, lists and scalars replace, and a null (`~`) in the
 * upper layer removes the key, so the schema default applies again. Inputs are not modified.
 */
export function mergeNodes(base: ConfigNode, over: ConfigNode): ConfigNode {
  if (base.type !== 'map' || over.type !== 'map') return over;
  return mergeMaps(base, over);
}

export function mergeMaps(base: MapNode, over: MapNode): MapNode {
  const entries = new Map(base.entries);
  for (const [key, e] of over.entries) {
    if (e.value.type === 'scalar' && e.value.value === null) {
      entries.delete(key);
      continue;
    }
    const prev = entries.get(key);
    entries.set(key, prev ? { keyOrigin: e.keyOrigin, value: mergeNodes(prev.value, e.value) } : e);
  }
  return { type: 'map', entries, origin: over.origin };
}

/**
 * Drops null-valued keys everywhere, including ones no lower layer defined: null always means "unset" in a
 * recipe. Nulls inside lists are values and stay.
 */
export function dropNullKeys(n: ConfigNode): ConfigNode {
  if (n.type === 'seq') return { ...n, items: n.items.map(dropNullKeys) };
  if (n.type !== 'map') return n;
  const entries = new Map<string, { keyOrigin: typeof n.origin; value: ConfigNode }>();
  for (const [k, e] of n.entries) {
    if (e.value.type === 'scalar' && e.value.value === null) continue;
    entries.set(k, { keyOrigin: e.keyOrigin, value: dropNullKeys(e.value) });
  }
  return { type: 'map', entries, origin: n.origin };
}
