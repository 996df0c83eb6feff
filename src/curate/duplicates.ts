/**
 * Duplicate groups and which member of each to keep, as a pure function of per-image records.
 *
 * Two records are linked when their decoded pixels are identical (same `exact` digest) or, when near
 * matching is on, their perceptual hashes differ in at most `threshold` bits (imagededup's default 10;
 * `distance <= threshold`). Groups are the connected components of these links (transitive: a~b and b~c
 * put a, b, c together even when a and c are farther apart). Identical perceptual hashes are collapsed
 * before the pair search, so thousands of copies of one image cost one entry, not a quadratic pair list.
 *
 * Keep policy: records are ranked by the `keep` criteria in order, first difference wins:
 * - 'resolution': more pixels (width × height) first;
 * - 'sharpness': larger caller-supplied sharpness (e.g. variance of the Laplacian) first; missing = worst;
 * - 'path': lexicographically smaller path first (code-unit order, independent of input order);
 * - 'order': earlier in the input first (imagededup keeps the first-seen file).
 * Default ['resolution', 'sharpness', 'path']. Ties after all criteria fall back to input order.
 */
import { UnionFind } from './union_find.js';
import { forEachNearPair, packHashes, type SearchStats } from './dedup_index.js';
import { hammingDistance, hexToHash } from './hash.js';

export interface DedupRecord {
  id: string;
  path: string;
  width: number;
  height: number;
  /** Higher is sharper; supplied by the caller. */
  sharpness?: number;
  /** Perceptual hash, 16 hex characters. Required when near matching is on. */
  hash?: string;
  /** Digest of the decoded pixels (exactPixelHash). */
  exact?: string;
}

export const KEEP_CRITERIA = ['resolution', 'sharpness', 'path', 'order'] as const;
export type KeepCriterion = (typeof KEEP_CRITERIA)[number];

export interface DedupOptions {
  /** Link records with equal `exact` digests (default true). */
  exact?: boolean;
  /** Link records whose perceptual hashes are within `threshold` (default true). */
  near?: boolean;
  /** Hamming threshold for near duplicates, 0–64 (default 10). */
  threshold?: number;
  keep?: readonly KeepCriterion[];
}

export interface RemovedRecord {
  id: string;
  /** The kept record this one duplicates. */
  keptId: string;
  /** 'exact' when its decoded pixels equal the kept record's, else 'near'. */
  reason: 'exact' | 'near';
  /** Hamming distance of the perceptual hashes to the kept record (null without hashes). */
  distance: number | null;
}

export interface DuplicateGroup {
  keptId: string;
  /** Member ids in input order, the kept one included. */
  memberIds: string[];
  removed: RemovedRecord[];
}

export interface DedupResult {
  groups: DuplicateGroup[];
  /** Ids to drop, in input order. */
  removedIds: string[];
  /** Pairs of distinct perceptual hashes found within the threshold, and how the search ran. */
  search: SearchStats | null;
}

export const DEFAULT_KEEP: readonly KeepCriterion[] = ['resolution', 'sharpness', 'path'];

function compareForKeep(a: DedupRecord, ai: number, b: DedupRecord, bi: number, keep: readonly KeepCriterion[]): number {
  for (const c of keep) {
    let d = 0;
    if (c === 'resolution') d = b.width * b.height - a.width * a.height;
    else if (c === 'sharpness') d = (b.sharpness ?? -Infinity) - (a.sharpness ?? -Infinity);
    else if (c === 'path') d = a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
    else d = ai - bi;
    if (d !== 0 && !Number.isNaN(d)) return d;
  }
  return ai - bi;
}

export function findDuplicates(records: readonly DedupRecord[], opts: DedupOptions = {}): DedupResult {
  const useExact = opts.exact ?? true;
  const useNear = opts.near ?? true;
  const threshold = opts.threshold ?? 10;
  const keep = opts.keep ?? DEFAULT_KEEP;
  for (const c of keep) if (!KEEP_CRITERIA.includes(c)) throw new Error(`unknown keep criterion '${c}' (expected one of ${KEEP_CRITERIA.join(', ')})`);
  const uf = new UnionFind(records.length);

  if (useExact) {
    const firstByDigest = new Map<string, number>();
    records.forEach((r, i) => {
      if (r.exact === undefined) return;
      const first = firstByDigest.get(r.exact);
      if (first === undefined) firstByDigest.set(r.exact, i);
      else uf.union(first, i);
    });
  }

  let search: SearchStats | null = null;
  if (useNear) {
    const uniqueHex: string[] = [];
    const firstByHash = new Map<string, number>();
    const recordOfUnique: number[] = [];
    records.forEach((r, i) => {
      if (r.hash === undefined) throw new Error(`record '${r.id}' has no perceptual hash; near-duplicate search needs one`);
      const hex = r.hash.toLowerCase();
      if (!/^[0-9a-f]{16}$/.test(hex)) throw new Error(`record '${r.id}' (${r.path}): perceptual hash must be 16 hex characters, got '${r.hash}'`);
      const first = firstByHash.get(hex);
      if (first === undefined) {
        firstByHash.set(hex, i);
        uniqueHex.push(hex);
        recordOfUnique.push(i);
      } else uf.union(first, i);
    });
    search = forEachNearPair(packHashes(uniqueHex), threshold, (a, b) => uf.union(recordOfUnique[a]!, recordOfUnique[b]!));
  }

  const members = new Map<number, number[]>();
  records.forEach((_, i) => {
    const root = uf.find(i);
    const list = members.get(root);
    if (list) list.push(i);
    else members.set(root, [i]);
  });

  const groups: (DuplicateGroup & { first: number })[] = [];
  const removedIndices: number[] = [];
  for (const list of members.values()) {
    if (list.length < 2) continue;
    let best = list[0]!;
    for (const i of list) if (compareForKeep(records[i]!, i, records[best]!, best, keep) < 0) best = i;
    const kept = records[best]!;
    const removed: RemovedRecord[] = [];
    for (const i of list) {
      if (i === best) continue;
      const r = records[i]!;
      removedIndices.push(i);
      removed.push({
        id: r.id,
        keptId: kept.id,
        reason: r.exact !== undefined && r.exact === kept.exact ? 'exact' : 'near',
        distance: r.hash !== undefined && kept.hash !== undefined ? hammingDistance(hexToHash(r.hash), hexToHash(kept.hash)) : null,
      });
    }
    groups.push({ first: list[0]!, keptId: kept.id, memberIds: list.map((i) => records[i]!.id), removed });
  }
  groups.sort((a, b) => a.first - b.first);
  removedIndices.sort((a, b) => a - b);
  return { groups: groups.map(({ first: _first, ...g }) => g), removedIds: removedIndices.map((i) => records[i]!.id), search };
}
