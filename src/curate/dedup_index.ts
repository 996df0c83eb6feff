/**
 * Sub-quadratic search for pairs of 64-bit hashes within a Hamming distance: multi-index hashing
 * (Norouzi, Punjani & Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012).
 *
 * The 64 bits are cut into m contiguous blocks. If two hashes differ in at most t bits, the block distances
 * sum to at most t, so some block differs in at most r = ⌊t/m⌋ bits (pigeonhole). Sharper: with
 * t = m·r + a, one of the first a + 1 blocks is within r or one of the others is within r − 1 (otherwise
 * the total would be at least (a+1)(r+1) + (m−a−1)r = t + 1), so the later blocks search a smaller ball. For each block, hashes are
 * bucketed by that block's value (counting sort into a direct-address table of 2^w buckets); every bucket is
 * then compared with itself and with each bucket whose key differs in 1..r bits. A candidate pair is reported
 * only from the FIRST block where it is within r, so each pair comes out once without a seen-set.
 *
 * The number of blocks is picked by an estimate of the work on uniformly random hashes (bucket visits plus
 * candidate comparisons) and brute force is used when that is cheaper (small n or large t). For t = 10 and
 * 10^6 hashes the plan is 4 blocks of 16 bits with radius 2: about 4·10^9 candidate comparisons, against
 * 5·10^11 for brute force.
 */
import { hexToHash, popcount32, type Hash64 } from './hash.js';

/** Hashes in two parallel word arrays: `hi[i]` bits 0–31, `lo[i]` bits 32–63 of hash i. */
export interface PackedHashes {
  hi: Uint32Array;
  lo: Uint32Array;
}

export function packHashes(hashes: readonly (string | Hash64)[]): PackedHashes {
  const hi = new Uint32Array(hashes.length);
  const lo = new Uint32Array(hashes.length);
  hashes.forEach((h, i) => {
    const v = typeof h === 'string' ? hexToHash(h) : h;
    hi[i] = v.hi;
    lo[i] = v.lo;
  });
  return { hi, lo };
}

/** Called once per unordered pair i < j with distance ≤ threshold. */
export type PairCallback = (i: number, j: number, distance: number) => void;

export interface SearchPlan {
  method: 'mih' | 'brute';
  /** Block widths in bits, most significant block first (empty for brute force). */
  widths: number[];
  /** Per-block Hamming radius: ⌊t/m⌋ for the first (t mod m) + 1 blocks, one less for the rest. */
  radii: number[];
  /** Estimated work in comparison-sized units, for the chosen plan and for brute force. */
  estimatedCost: number;
  bruteCost: number;
}

export interface SearchStats {
  plan: SearchPlan;
  /** Hash pairs whose full distance was computed. */
  candidates: number;
  pairs: number;
}

/** Largest block width: a direct-address bucket table of 2^22 uint32 offsets is 16 MiB. */
const MAX_BLOCK_BITS = 22;

function binomial(n: number, k: number): number {
  let c = 1;
  for (let i = 0; i < k; i++) c = (c * (n - i)) / (i + 1);
  return c;
}

/** Number of w-bit values within Hamming distance r of a given one. */
function ballSize(w: number, r: number): number {
  let s = 0;
  for (let k = 0; k <= Math.min(r, w); k++) s += binomial(w, k);
  return s;
}

function evenWidths(m: number): number[] {
  const base = Math.floor(64 / m);
  const extra = 64 % m;
  return Array.from({ length: m }, (_, b) => base + (b >= m - extra ? 1 : 0));
}

/** Radius per block; −1 means the block need not be searched at all (only when m > t + 1). */
function blockRadii(m: number, threshold: number): number[] {
  const r = Math.floor(threshold / m);
  const a = threshold % m;
  return Array.from({ length: m }, (_, b) => (b <= a ? r : r - 1));
}

/** Chooses the block count (or brute force) with the least estimated work on uniformly random hashes. */
export function planSearch(n: number, threshold: number, blocks?: number): SearchPlan {
  if (!Number.isInteger(threshold) || threshold < 0 || threshold > 64) {
    throw new Error(`Hamming threshold must be an integer in [0, 64], got ${threshold}`);
  }
  const bruteCost = (n * (n - 1)) / 2;
  const cost = (m: number) => {
    const radii = blockRadii(m, threshold);
    let c = 0;
    for (const [b, w] of evenWidths(m).entries()) {
      const r = radii[b]!;
      if (r < 0) continue;
      const ball = ballSize(w, r);
      const buckets = 2 ** w;
      // Bucket visits (each non-empty bucket scans its ball) + comparisons of pairs landing within r.
      c += n + Math.min(buckets, n) * ball + ((n * n) / 2) * (ball / buckets);
    }
    return c;
  };
  const minBlocks = Math.ceil(64 / MAX_BLOCK_BITS);
  if (blocks !== undefined) {
    if (!Number.isInteger(blocks) || blocks < minBlocks || blocks > 64) throw new Error(`blocks must be an integer in [${minBlocks}, 64], got ${blocks}`);
    return { method: 'mih', widths: evenWidths(blocks), radii: blockRadii(blocks, threshold), estimatedCost: cost(blocks), bruteCost };
  }
  let best = minBlocks;
  for (let m = minBlocks + 1; m <= 32; m++) if (cost(m) < cost(best)) best = m;
  const bestCost = cost(best);
  if (bruteCost <= bestCost) return { method: 'brute', widths: [], radii: [], estimatedCost: bruteCost, bruteCost };
  return { method: 'mih', widths: evenWidths(best), radii: blockRadii(best, threshold), estimatedCost: bestCost, bruteCost };
}

function lowMask(width: number): number {
  return width >= 32 ? 0xffffffff : ((1 << width) >>> 0) - 1;
}

/** Bits [start, start + width) of the 64-bit value hi:lo (bit 0 = MSB of hi), as an unsigned integer. */
function blockKey(hi: number, lo: number, start: number, width: number): number {
  const end = start + width;
  if (end <= 32) return (hi >>> (32 - end)) & lowMask(width);
  if (start >= 32) return (lo >>> (64 - end)) & lowMask(width);
  const lowBits = end - 32;
  return ((((hi & lowMask(32 - start)) << lowBits) | (lo >>> (32 - lowBits))) >>> 0) & lowMask(width);
}

/** All non-zero w-bit values with at most r bits set. */
function flipMasks(width: number, radius: number): Int32Array {
  if (radius <= 0) return new Int32Array(0);
  const out: number[] = [];
  const extend = (mask: number, from: number, left: number) => {
    for (let b = from; b < width; b++) {
      const m = mask | (1 << b);
      out.push(m);
      if (left > 1) extend(m, b + 1, left - 1);
    }
  };
  extend(0, 0, radius);
  return Int32Array.from(out);
}

/** One block's bucket table: members of bucket v are order[offsets[v] .. offsets[v+1]). */
interface BlockTable {
  start: number;
  width: number;
  offsets: Uint32Array;
  order: Uint32Array;
}

function buildBlockTable(hashes: PackedHashes, start: number, width: number): BlockTable {
  const n = hashes.hi.length;
  const keys = new Uint32Array(n);
  const offsets = new Uint32Array(2 ** width + 1);
  for (let i = 0; i < n; i++) {
    const k = blockKey(hashes.hi[i]!, hashes.lo[i]!, start, width);
    keys[i] = k;
    offsets[k + 1]!++;
  }
  for (let v = 0; v < offsets.length - 1; v++) offsets[v + 1]! += offsets[v]!;
  const fill = offsets.slice(0, offsets.length - 1);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[fill[keys[i]!]!++] = i;
  return { start, width, offsets, order };
}

export function bruteForceNearPairs(hashes: PackedHashes, threshold: number, onPair: PairCallback): number {
  const n = hashes.hi.length;
  const hi = new Int32Array(hashes.hi.buffer, hashes.hi.byteOffset, n);
  const lo = new Int32Array(hashes.lo.buffer, hashes.lo.byteOffset, n);
  let pairs = 0;
  for (let i = 0; i < n; i++) {
    const hiI = hi[i]!;
    const loI = lo[i]!;
    for (let j = i + 1; j < n; j++) {
      const dHi = popcount32(hiI ^ hi[j]!);
      if (dHi > threshold) continue;
      const d = dHi + popcount32(loI ^ lo[j]!);
      if (d <= threshold) {
        pairs++;
        onPair(i, j, d);
      }
    }
  }
  return pairs;
}

/**
 * Calls `onPair(i, j, d)` exactly once for every pair i < j of hashes within `threshold` bits.
 * `blocks` forces the number of MIH blocks (for benchmarks); by default planSearch decides.
 */
export function forEachNearPair(
  hashes: PackedHashes,
  threshold: number,
  onPair: PairCallback,
  opts: { blocks?: number } = {},
): SearchStats {
  const n = hashes.hi.length;
  if (hashes.lo.length !== n) throw new Error('forEachNearPair: hi and lo arrays differ in length');
  const plan = planSearch(n, threshold, opts.blocks);
  if (plan.method === 'brute') {
    const pairs = bruteForceNearPairs(hashes, threshold, onPair);
    return { plan, candidates: (n * (n - 1)) / 2, pairs };
  }
  const { hi, lo } = hashes;
  const radii = plan.radii;
  const starts = plan.widths.map((_, b) => plan.widths.slice(0, b).reduce((a, w) => a + w, 0));
  let candidates = 0;
  let pairs = 0;
  // Int32 copies: V8 keeps int32 values unboxed, while uint32 values ≥ 2^31 become doubles.
  const hiS = new Int32Array(hi.buffer, hi.byteOffset, n);
  const loS = new Int32Array(lo.buffer, lo.byteOffset, n);

  for (let b = 0; b < plan.widths.length; b++) {
    const width = plan.widths[b]!;
    const r = radii[b]!;
    if (r < 0) continue;
    const { offsets, order } = buildBlockTable(hashes, starts[b]!, width);
    // Hashes copied into bucket order so the inner loops read memory sequentially.
    const sHi = new Int32Array(n);
    const sLo = new Int32Array(n);
    for (let p = 0; p < n; p++) {
      sHi[p] = hiS[order[p]!]!;
      sLo[p] = loS[order[p]!]!;
    }
    const masks = flipMasks(width, r);

    const report = (p: number, q: number, d: number) => {
      const i = order[p]!;
      const j = order[q]!;
      const xHi = (hi[i]! ^ hi[j]!) >>> 0;
      const xLo = (lo[i]! ^ lo[j]!) >>> 0;
      for (let e = 0; e < b; e++) {
        if (popcount32(blockKey(xHi, xLo, starts[e]!, plan.widths[e]!)) <= radii[e]!) return;
      }
      pairs++;
      if (i < j) onPair(i, j, d);
      else onPair(j, i, d);
    };

    const buckets = offsets.length - 1;
    for (let v = 0; v < buckets; v++) {
      const a0 = offsets[v]!;
      const a1 = offsets[v + 1]!;
      if (a0 === a1) continue;
      for (let p = a0; p < a1; p++) {
        const hP = sHi[p]!;
        const lP = sLo[p]!;
        for (let q = p + 1; q < a1; q++) {
          const dHi = popcount32(hP ^ sHi[q]!);
          if (dHi > threshold) continue;
          const d = dHi + popcount32(lP ^ sLo[q]!);
          if (d <= threshold) report(p, q, d);
        }
      }
      candidates += ((a1 - a0) * (a1 - a0 - 1)) / 2;
      for (let u = 0; u < masks.length; u++) {
        const partner = v ^ masks[u]!;
        if (partner < v) continue;
        const b0 = offsets[partner]!;
        const b1 = offsets[partner + 1]!;
        if (b0 === b1) continue;
        candidates += (a1 - a0) * (b1 - b0);
        for (let p = a0; p < a1; p++) {
          const hP = sHi[p]!;
          const lP = sLo[p]!;
          for (let q = b0; q < b1; q++) {
            const dHi = popcount32(hP ^ sHi[q]!);
            if (dHi > threshold) continue;
            const d = dHi + popcount32(lP ^ sLo[q]!);
            if (d <= threshold) report(p, q, d);
          }
        }
      }
    }
  }
  return { plan, candidates, pairs };
}

/** All pairs within `threshold`, as parallel arrays sorted by (i, j). */
export function findNearPairs(
  hashes: PackedHashes,
  threshold: number,
  opts: { blocks?: number } = {},
): { i: Uint32Array; j: Uint32Array; distance: Uint8Array; stats: SearchStats } {
  const found: [number, number, number][] = [];
  const stats = forEachNearPair(hashes, threshold, (i, j, d) => found.push([i, j, d]), opts);
  found.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  return {
    i: Uint32Array.from(found, (p) => p[0]),
    j: Uint32Array.from(found, (p) => p[1]),
    distance: Uint8Array.from(found, (p) => p[2]),
    stats,
  };
}

/**
 * A multi-index over a fixed set of hashes for one-off queries (e.g. new images against an existing
 * dataset). Built for an expected threshold; any threshold can be queried, at a cost that grows with it.
 */
export class MultiIndexHashIndex {
  private readonly tables: BlockTable[];
  private readonly stamp: Uint32Array;
  private queryCount = 0;

  constructor(
    private readonly hashes: PackedHashes,
    expectedThreshold = 10,
  ) {
    const n = hashes.hi.length;
    const plan = planSearch(Math.max(n, 2), expectedThreshold);
    const widths = plan.method === 'mih' ? plan.widths : evenWidths(Math.ceil(64 / MAX_BLOCK_BITS));
    let start = 0;
    this.tables = widths.map((w) => {
      const t = buildBlockTable(hashes, start, w);
      start += w;
      return t;
    });
    this.stamp = new Uint32Array(n);
  }

  get size(): number {
    return this.hashes.hi.length;
  }

  /** Indices of stored hashes within `threshold` of `h`, ascending. */
  query(h: Hash64, threshold: number): number[] {
    if (!Number.isInteger(threshold) || threshold < 0 || threshold > 64) throw new Error(`Hamming threshold must be an integer in [0, 64], got ${threshold}`);
    const radii = blockRadii(this.tables.length, threshold);
    const { hi, lo } = this.hashes;
    const stamp = this.stamp;
    this.queryCount = (this.queryCount + 1) >>> 0;
    if (this.queryCount === 0) {
      stamp.fill(0);
      this.queryCount = 1;
    }
    const mark = this.queryCount;
    const out: number[] = [];
    for (const [b, t] of this.tables.entries()) {
      const r = radii[b]!;
      if (r < 0) continue;
      const key = blockKey(h.hi, h.lo, t.start, t.width);
      const visit = (v: number) => {
        for (let p = t.offsets[v]!; p < t.offsets[v + 1]!; p++) {
          const i = t.order[p]!;
          if (stamp[i] === mark) continue;
          stamp[i] = mark;
          if (popcount32((h.hi ^ hi[i]!) >>> 0) + popcount32((h.lo ^ lo[i]!) >>> 0) <= threshold) out.push(i);
        }
      };
      visit(key);
      const masks = flipMasks(t.width, r);
      for (let u = 0; u < masks.length; u++) visit(key ^ masks[u]!);
    }
    return out.sort((a, b) => a - b);
  }
}
