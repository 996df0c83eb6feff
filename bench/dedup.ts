/**
 * Near-duplicate search benchmark: all pairs within Hamming 10 among N random 64-bit hashes with planted
 * near copies, by multi-index hashing. Recall is checked two ways: every planted pair must be found in the
 * full run, and on a 10^4 subset the search must return exactly the brute-force pair set.
 *
 *   npx tsx bench/dedup.ts [--json] [--n 100000] [--threshold 10]
 * Without --n it runs 10^5 and 10^6.
 */
import { pathToFileURL } from 'node:url';
import { bruteForceNearPairs, forEachNearPair, type PackedHashes } from '../src/curate/dedup_index.js';
import { Rng } from '../src/util/rng.js';

import { formatTable, type BenchRow } from './row.js';

export type { BenchRow };

export interface DedupBenchOptions {
  sizes?: number[];
  threshold?: number;
  seed?: number;
  /** Fraction of the hashes that are planted near copies of another one. */
  plantedFraction?: number;
  log?: (line: string) => void;
}

const SUBSET = 10_000;

function makeHashes(n: number, threshold: number, plantedFraction: number, seed: number) {
  const rng = new Rng(seed);
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    hi[i] = rng.nextU32();
    lo[i] = rng.nextU32();
  }
  // Each planted copy overwrites a random slot with a copy of another slot, 0..threshold bits flipped.
  const planted = new Map<string, number>();
  const count = Math.floor(n * plantedFraction);
  for (let k = 0; k < count; k++) {
    // Every other copy lands inside the brute-force subset, so that check sees real matches too.
    const range = k % 2 === 0 ? Math.min(n, SUBSET) : n;
    const src = rng.nextU32() % range;
    const dst = rng.nextU32() % range;
    if (src === dst) continue;
    let h = hi[src]!;
    let l = lo[src]!;
    const flips = rng.nextU32() % (threshold + 1);
    const used = new Set<number>();
    while (used.size < flips) used.add(rng.nextU32() % 64);
    for (const b of used) {
      if (b < 32) h = (h ^ (1 << b)) >>> 0;
      else l = (l ^ (1 << (b - 32))) >>> 0;
    }
    hi[dst] = h;
    lo[dst] = l;
    planted.set(`${Math.min(src, dst)},${Math.max(src, dst)}`, flips);
  }
  // A later plant may overwrite an earlier pair's member; keep only pairs still within the threshold.
  for (const key of [...planted.keys()]) {
    const [a, b] = key.split(',').map(Number) as [number, number];
    let d = 0;
    for (let bit = 0; bit < 32; bit++) d += (((hi[a]! ^ hi[b]!) >>> bit) & 1) + (((lo[a]! ^ lo[b]!) >>> bit) & 1);
    if (d > threshold) planted.delete(key);
  }
  return { hashes: { hi, lo } as PackedHashes, planted };
}

function subset(hashes: PackedHashes, count: number): PackedHashes {
  return { hi: hashes.hi.slice(0, count), lo: hashes.lo.slice(0, count) };
}

function label(n: number): string {
  const e = Math.log10(n);
  return Number.isInteger(e) ? `1e${e}` : String(n);
}

export async function runDedupBench(opts: DedupBenchOptions = {}): Promise<BenchRow[]> {
  const sizes = opts.sizes ?? [100_000, 1_000_000];
  const threshold = opts.threshold ?? 10;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  for (const n of sizes) {
    const { hashes, planted } = makeHashes(n, threshold, opts.plantedFraction ?? 0.01, (opts.seed ?? 1) + n);
    log(`dedup: ${n} hashes, ${planted.size} planted near pairs, threshold ${threshold}`);
    const found = new Set<string>();
    const t0 = performance.now();
    const stats = forEachNearPair(hashes, threshold, (i, j) => {
      if (planted.has(`${i},${j}`)) found.add(`${i},${j}`);
    });
    const seconds = (performance.now() - t0) / 1000;
    const plan = stats.plan.method === 'mih' ? `MIH ${stats.plan.widths.length} blocks (${stats.plan.widths.join('/')} bits, radii ${stats.plan.radii.join('/')})` : 'brute force';
    rows.push({ name: `dedup search ${label(n)} hashes (t=${threshold})`, value: seconds, unit: 's', note: `${plan}; ${stats.pairs} pairs; ${stats.candidates.toExponential(2)} candidates vs ${stats.plan.bruteCost.toExponential(2)} brute` });
    rows.push({ name: `dedup planted-pair recall ${label(n)}`, value: planted.size === 0 ? 1 : found.size / planted.size, unit: 'fraction', note: `${found.size}/${planted.size}` });

    const small = subset(hashes, Math.min(SUBSET, n));
    const viaIndex: string[] = [];
    const viaBrute: string[] = [];
    forEachNearPair(small, threshold, (i, j, d) => viaIndex.push(`${i},${j},${d}`), { blocks: stats.plan.method === 'mih' ? stats.plan.widths.length : undefined });
    bruteForceNearPairs(small, threshold, (i, j, d) => viaBrute.push(`${i},${j},${d}`));
    viaIndex.sort();
    viaBrute.sort();
    const agree = viaIndex.length === viaBrute.length && viaIndex.every((p, k) => p === viaBrute[k]);
    const bruteSet = new Set(viaBrute);
    const hits = viaIndex.filter((p) => bruteSet.has(p)).length;
    rows.push({
      name: `dedup subset recall vs brute force ${label(small.hi.length)} of ${label(n)}`,
      value: viaBrute.length === 0 ? 1 : hits / viaBrute.length,
      unit: 'fraction',
      note: agree ? `identical pair sets (${viaBrute.length} pairs)` : `MISMATCH: index ${viaIndex.length} vs brute ${viaBrute.length}`,
    });
    log(`  ${seconds.toFixed(1)} s, recall ${found.size}/${planted.size}, subset ${agree ? 'identical' : 'MISMATCH'}`);
  }
  return rows;
}


async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const valueOf = (flag: string, min: number) => {
    const k = argv.indexOf(flag);
    if (k < 0) return undefined;
    const v = Number(argv[k + 1]);
    if (!Number.isInteger(v) || v < min) throw new Error(`${flag} expects an integer >= ${min}, got '${argv[k + 1]}'`);
    return v;
  };
  const n = valueOf('--n', 2);
  const threshold = valueOf('--threshold', 0);
  const rows = await runDedupBench({
    sizes: n === undefined ? undefined : [n],
    threshold,
    log: json ? undefined : (line) => console.error(line),
  });
  console.log(json ? JSON.stringify(rows, null, 2) : formatTable(rows));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error((e as Error).message);
    process.exit(2);
  });
}
