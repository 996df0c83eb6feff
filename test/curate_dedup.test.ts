import { describe, expect, it } from 'vitest';
import {
  bruteForceNearPairs,
  findNearPairs,
  forEachNearPair,
  MultiIndexHashIndex,
  packHashes,
  planSearch,
  type PackedHashes,
} from '../src/curate/dedup_index.js';
import { findDuplicates, type DedupRecord } from '../src/curate/duplicates.js';
import { hashToHex, type Hash64 } from '../src/curate/hash.js';
import { UnionFind } from '../src/curate/union_find.js';
import { Rng } from '../src/util/rng.js';

function flipBits(h: Hash64, bits: number[]): Hash64 {
  let { hi, lo } = h;
  for (const b of bits) {
    if (b < 32) hi = (hi ^ (1 << (31 - b))) >>> 0;
    else lo = (lo ^ (1 << (63 - b))) >>> 0;
  }
  return { hi, lo };
}

function distinctBits(rng: Rng, k: number): number[] {
  const set = new Set<number>();
  while (set.size < k) set.add(rng.nextU32() % 64);
  return [...set];
}

/** Random hashes plus near copies at every distance 0..maxFlip, so each search has real matches at its edge. */
function plantedSet(seed: number, n: number, maxFlip: number): PackedHashes {
  const rng = new Rng(seed);
  const list: Hash64[] = [];
  while (list.length < n) {
    const base = { hi: rng.nextU32(), lo: rng.nextU32() };
    list.push(base);
    if (rng.uniform() < 0.3) {
      const copies = 1 + (rng.nextU32() % 3);
      for (let c = 0; c < copies && list.length < n; c++) list.push(flipBits(base, distinctBits(rng, rng.nextU32() % (maxFlip + 1))));
    }
  }
  // Shuffle so near copies are not adjacent in input order.
  for (let i = list.length - 1; i > 0; i--) {
    const j = rng.nextU32() % (i + 1);
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return packHashes(list);
}

function pairKeys(hashes: PackedHashes, t: number, search: 'brute' | number | 'auto'): string[] {
  const out: string[] = [];
  const push = (i: number, j: number, d: number) => {
    expect(i).toBeLessThan(j);
    out.push(`${i}-${j}-${d}`);
  };
  if (search === 'brute') bruteForceNearPairs(hashes, t, push);
  else forEachNearPair(hashes, t, push, search === 'auto' ? {} : { blocks: search });
  return out.sort();
}

describe('multi-index hashing pair search', () => {
  it('finds exactly the brute-force pairs, each once, for many thresholds and block counts', () => {
    const hashes = plantedSet(1, 3000, 14);
    for (const t of [0, 1, 3, 7, 10, 12]) {
      const expected = pairKeys(hashes, t, 'brute');
      expect(expected.length).toBeGreaterThan(50);
      for (const blocks of [3, 4, 5, 7, 11, 16]) {
        const got = pairKeys(hashes, t, blocks);
        expect(got.length, `t=${t} blocks=${blocks}`).toBe(expected.length);
        expect(got).toEqual(expected);
      }
    }
  });

  it('catches pairs whose differences are spread evenly over the blocks (the pigeonhole edge)', () => {
    const rng = new Rng(2);
    const list: Hash64[] = [];
    for (let k = 0; k < 300; k++) {
      const base = { hi: rng.nextU32(), lo: rng.nextU32() };
      // 10 flips as 3,3,2,2 over four 16-bit blocks, in a random block order.
      const perBlock = [3, 3, 2, 2].sort(() => rng.uniform() - 0.5);
      const bits: number[] = [];
      perBlock.forEach((c, b) => {
        const set = new Set<number>();
        while (set.size < c) set.add(16 * b + (rng.nextU32() % 16));
        bits.push(...set);
      });
      list.push(base, flipBits(base, bits));
    }
    const hashes = packHashes(list);
    const got = findNearPairs(hashes, 10, { blocks: 4 });
    const expected = pairKeys(hashes, 10, 'brute');
    expect(got.i.length).toBe(expected.length);
    expect(expected.length).toBeGreaterThanOrEqual(300);
    for (let k = 0; k < 300; k++) expect(expected).toContain(`${2 * k}-${2 * k + 1}-10`);
  });

  it('plans brute force for tiny inputs and a far cheaper multi-index search for a million hashes', () => {
    expect(planSearch(50, 10).method).toBe('brute');
    const big = planSearch(1_000_000, 10);
    expect(big.method).toBe('mih');
    expect(big.widths.reduce((a, b) => a + b, 0)).toBe(64);
    expect(big.estimatedCost).toBeLessThan(big.bruteCost / 50);
    // Radii satisfy the pigeonhole bound: any split of 11 differing bits must be needed to evade every block.
    const slack = big.radii.reduce((a, r) => a + r + 1, 0);
    expect(slack).toBe(11);
    expect(() => planSearch(10, 65)).toThrow(/\[0, 64\]/);
    expect(() => planSearch(10, 3, 2)).toThrow(/blocks/);
  });

  it('answers single queries like a linear scan', () => {
    const hashes = plantedSet(3, 4000, 12);
    const index = new MultiIndexHashIndex(hashes, 10);
    const rng = new Rng(4);
    for (let q = 0; q < 100; q++) {
      const target = rng.nextU32() % hashes.hi.length;
      const query = flipBits({ hi: hashes.hi[target]!, lo: hashes.lo[target]! }, distinctBits(rng, rng.nextU32() % 8));
      for (const t of [0, 5, 10, 13]) {
        const expected: number[] = [];
        for (let i = 0; i < hashes.hi.length; i++) {
          let d = 0;
          for (let b = 0; b < 32; b++) d += (((hashes.hi[i]! ^ query.hi) >>> b) & 1) + (((hashes.lo[i]! ^ query.lo) >>> b) & 1);
          if (d <= t) expected.push(i);
        }
        expect(index.query(query, t)).toEqual(expected);
      }
    }
  });
});

describe('duplicate groups and keep policy', () => {
  const base: Hash64 = { hi: 0x12345678, lo: 0x9abcdef0 };
  const at = (bits: number[]) => hashToHex(flipBits(base, bits));
  const rec = (id: string, w: number, h: number, hash: string, extra: Partial<DedupRecord> = {}): DedupRecord => ({ id, path: `img/${id}.jpg`, width: w, height: h, hash, ...extra });

  it('groups transitively and keeps the largest resolution', () => {
    const records = [
      rec('a', 1000, 800, at([])),
      rec('far', 640, 480, hashToHex({ hi: ~base.hi >>> 0, lo: ~base.lo >>> 0 })),
      rec('b', 2000, 1600, at([0, 1, 2, 3, 4, 5, 6, 7])), // 8 from a
      rec('c', 500, 500, at([0, 1, 2, 3, 4, 5, 6, 7, 40, 41, 42, 43, 44])), // 5 from b, 13 from a
    ];
    const r = findDuplicates(records);
    expect(r.groups).toHaveLength(1);
    expect(r.groups[0]!.memberIds).toEqual(['a', 'b', 'c']);
    expect(r.groups[0]!.keptId).toBe('b');
    expect(r.removedIds).toEqual(['a', 'c']);
    expect(r.groups[0]!.removed).toEqual([
      { id: 'a', keptId: 'b', reason: 'near', distance: 8 },
      { id: 'c', keptId: 'b', reason: 'near', distance: 5 },
    ]);
    // At threshold 7 the a–b link (8 bits) is gone; b–c (5) remains.
    const tight = findDuplicates(records, { threshold: 7 });
    expect(tight.groups.map((g) => g.memberIds)).toEqual([['b', 'c']]);
  });

  it('breaks resolution ties by sharpness, then by path; order policy keeps the first seen', () => {
    const records = [
      rec('z', 800, 600, at([1]), { path: 'z/last.png', sharpness: 10 }),
      rec('y', 600, 800, at([2]), { path: 'a/first.png', sharpness: 10 }),
      rec('x', 800, 600, at([3]), { path: 'm/mid.png', sharpness: 25 }),
      rec('w', 100, 100, at([4]), { path: 'a/a.png' }),
    ];
    expect(findDuplicates(records).groups[0]!.keptId).toBe('x');
    expect(findDuplicates(records, { keep: ['resolution', 'path'] }).groups[0]!.keptId).toBe('y');
    expect(findDuplicates(records, { keep: ['path'] }).groups[0]!.keptId).toBe('w');
    expect(findDuplicates(records, { keep: ['order'] }).groups[0]!.keptId).toBe('z');
    expect(() => findDuplicates(records, { keep: ['biggest' as never] })).toThrow(/keep criterion/);
    expect(() => findDuplicates([...records, rec('bad', 1, 1, 'xyz')])).toThrow(/'bad' \(img\/bad.jpg\).*16 hex/);
  });

  it('links identical decoded pixels as exact duplicates, and threshold 0 means identical hashes only', () => {
    const records = [
      rec('p', 64, 64, at([]), { exact: 'aa' }),
      rec('q', 64, 64, at([10, 20, 30, 40, 50, 60, 5, 15, 25, 35, 45, 55]), { exact: 'aa' }),
      rec('r', 32, 32, at([1])),
      rec('s', 32, 32, at([1])),
    ];
    const exactOnly = findDuplicates(records, { near: false });
    expect(exactOnly.groups.map((g) => g.memberIds)).toEqual([['p', 'q']]);
    expect(exactOnly.groups[0]!.removed[0]!.reason).toBe('exact');
    expect(exactOnly.search).toBeNull();
    const zero = findDuplicates(records, { threshold: 0 });
    expect(zero.groups.map((g) => g.memberIds)).toEqual([['p', 'q'], ['r', 's']]);
    expect(findDuplicates(records, { exact: false, threshold: 0 }).groups.map((g) => g.memberIds)).toEqual([['r', 's']]);
  });

  it('collapses many identical hashes without a quadratic pair list', () => {
    const records: DedupRecord[] = [];
    for (let i = 0; i < 20_000; i++) records.push(rec(`dup${i}`, i === 7777 ? 200 : 100, 100, at([])));
    records.push(rec('other', 10, 10, hashToHex({ hi: 0, lo: 0 })));
    const t0 = performance.now();
    const r = findDuplicates(records);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(r.groups).toHaveLength(1);
    expect(r.groups[0]!.memberIds).toHaveLength(20_000);
    expect(r.groups[0]!.keptId).toBe('dup7777');
    expect(r.search!.pairs).toBe(0);
  });

  it('union-find merges components', () => {
    const uf = new UnionFind(6);
    expect(uf.union(0, 1)).toBe(true);
    expect(uf.union(2, 3)).toBe(true);
    expect(uf.union(1, 3)).toBe(true);
    expect(uf.union(0, 2)).toBe(false);
    expect(uf.find(3)).toBe(uf.find(0));
    expect(uf.find(4)).not.toBe(uf.find(5));
  });
});
