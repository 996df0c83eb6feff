import { hammingDistance, hexToHash } from './hash.js';

// TEMPORARY bridge until src/curate/duplicates.ts (dedup search, another engineer) lands; to be replaced by it.
export function findNearDuplicateGroups(items: readonly { id: string; hash: string }[], threshold: number): string[][] {
  const hashes = items.map((i) => hexToHash(i.hash));
  const parent = items.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i]!)));
  for (let i = 0; i < items.length; i++)
    for (let j = i + 1; j < items.length; j++)
      if (hammingDistance(hashes[i]!, hashes[j]!) <= threshold) parent[find(i)] = find(j);
  const groups = new Map<number, string[]>();
  items.forEach((it, i) => {
    const r = find(i);
    groups.set(r, [...(groups.get(r) ?? []), it.id]);
  });
  return [...groups.values()].filter((g) => g.length > 1);
}
