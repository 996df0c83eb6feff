import { availableParallelism } from 'node:os';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { writeFileAtomic } from '../io/atomic.js';
import { JobError, UsageError } from '../util/errors.js';
import { Progress, type ProgressStream } from '../util/progress.js';
import { analyseFile, analysisFingerprint, sha256Hex } from './analyse.js';
import { clipFilterRejections } from './clip_filter.js';
import { cleanCaption, findCaption, readCaptionManifest, withTrigger, type CaptionSource } from './captions.js';
import { decide, type DuplicateGroup } from './decide.js';
import { manifestLines, readState, StateWriter, type Analysis, type ManifestRow } from './manifest.js';
import { AnalysisPool } from './pool.js';
import { ensureRealDir, writeFolderOutput, writeWebDatasetOutput, type OutputSample, type WriteStats } from './output.js';
import { buildReport, writeReport, type CurateReport } from './report.js';
import { scanInputs, shardOf, type ShardSpec, type SourceFile } from './scan.js';
import type { CurateConfig } from './schema.js';

/**
 * `scaleforge curate`: scan → analyse each file once (decode, hash, measure, resize into a cache) → decide
 * (filters, exact and near duplicates) → write the folder or WebDataset output, manifest.jsonl and the report.
 *
 * Resumable: the analysis of every file is appended to `.curate/state-<fingerprint>.jsonl` keyed by the SHA-256 of
 * the file's bytes as soon as it is done, so a re-run (after a crash, or with new files) analyses only files it has
 * not seen; decisions and outputs are cheap and recomputed every time.
 */

export const MANIFEST_FILE = 'manifest.jsonl';
export const CONFIG_FILE = '.curate/config.json';

export interface CurateRunOptions {
  /** Folder this run writes (for a shard: that shard's folder). */
  outDir: string;
  shard?: ShardSpec;
  log?: (line: string) => void;
  progressStream?: ProgressStream;
  /** Stop after analysing this many new files, as a crash would (tests of resumability). */
  stopAfter?: number;
  /** Worker threads to analyse in, kept open by the caller across runs; by default the run starts its own. */
  pool?: AnalysisPool;
  /** When aborted (Ctrl-C), no new file is started; files in progress finish and are saved to the state file. */
  stopSignal?: AbortSignal;
}

export interface RunCounts {
  scanned: number;
  inShard: number;
  analysed: number;
  reused: number;
  kept: number;
  rejected: Record<string, number>;
}

export interface CurateResult {
  outDir: string;
  counts: RunCounts;
  rows: ManifestRow[];
  groups: DuplicateGroup[];
  write: WriteStats;
  report: CurateReport;
  /** False when stopped early by `stopAfter` or `stopSignal`. */
  complete: boolean;
  /** The state file holding every analysis done so far (what a re-run reuses). */
  statePath?: string;
}

export function resolveConcurrency(cfg: CurateConfig): number {
  return cfg.concurrency > 0 ? cfg.concurrency : Math.max(1, availableParallelism());
}

export async function runCurate(cfg: CurateConfig, opts: CurateRunOptions): Promise<CurateResult> {
  const log = opts.log ?? (() => undefined);
  const shard = opts.shard ?? { index: 0, count: 1 };
  const scanned = await scanInputs({ ...cfg.input, skipDirs: [opts.outDir] });
  const sources = shard.count > 1 ? scanned.filter((s) => shardOf(s.id, shard.count) === shard.index) : scanned;
  if (scanned.length === 0) {
    throw new UsageError(`no images found under ${cfg.input.paths.join(', ')} matching ${cfg.input.include.join(', ')}`);
  }
  await ensureRealDir(join(opts.outDir, '.curate'));
  await writeFileAtomic(join(opts.outDir, CONFIG_FILE), JSON.stringify({ config: cfg, shard }, null, 1));
  const manifest = cfg.captions.manifest ? await readCaptionManifest(cfg.captions.manifest) : undefined;

  const statePath = join(opts.outDir, '.curate', `state-${analysisFingerprint(cfg)}.jsonl`);
  const known = readState(statePath);
  const state = new StateWriter(statePath);
  const progress = new Progress({
    total: sources.length,
    label: shard.count > 1 ? `curate ${shard.index + 1}/${shard.count}` : 'curate',
    ...(opts.progressStream ? { stream: opts.progressStream } : {}),
  });
  const concurrency = resolveConcurrency(cfg);
  log(`curate: ${sources.length} files${shard.count > 1 ? ` in shard ${shard.index}/${shard.count} (of ${scanned.length})` : ''}, ${known.size} already analysed, ${concurrency} in parallel → ${opts.outDir}`);
  // concurrency 1 analyses in this thread; more runs that many worker threads, started when a file needs one.
  const ownPool = !opts.pool && concurrency > 1 ? new AnalysisPool(concurrency) : undefined;
  const pool = opts.pool ?? ownPool;
  const analyse = (bytes: Uint8Array, sha256: string) =>
    pool ? pool.analyse(bytes, sha256, cfg, opts.outDir) : analyseFile(bytes, sha256, cfg, opts.outDir);
  // Twice as many files in flight as workers, so a worker finds its next file read and hashed when it finishes one.
  const inFlight = pool ? pool.size * 2 : concurrency;

  const rows: (ManifestRow | undefined)[] = new Array(sources.length);
  let analysed = 0;
  let started = 0;
  let reused = 0;
  let done = 0;
  let stopped = false;
  const limit = pLimit(inFlight);
  const running = new Map<string, Promise<Analysis | undefined>>();
  const interrupted = () => opts.stopSignal?.aborted === true;
  const one = async (src: SourceFile, index: number) => {
    if (stopped || interrupted()) return;
    const [bytes, caption] = await Promise.all([readSource(src), captionFor(src, cfg, manifest)]);
    const sha256 = bytes ? sha256Hex(bytes) : '';
    let analysis: Analysis | undefined = bytes ? known.get(sha256) : { ok: false, code: 'unreadable', reason: 'cannot read the file' };
    if (analysis?.ok && (await stat(join(opts.outDir, analysis.cached.path)).catch(() => null))?.size !== analysis.cached.bytes) {
      analysis = undefined; // the cached output went missing: redo
    }
    const twin = analysis ? undefined : running.get(sha256);
    if (analysis) reused++;
    else if (twin) {
      // The same bytes are being analysed for another file: wait for that analysis instead of repeating it, so the
      // counts and the state file do not depend on which files happened to be in flight together.
      const settled = await twin;
      if (!settled) return; // that file failed; its error stops the run
      analysis = settled;
      reused++;
    } else {
      if (opts.stopAfter !== undefined && started >= opts.stopAfter) {
        stopped = true;
        return;
      }
      started++;
      const job = analyse(bytes!, sha256);
      running.set(sha256, job.catch(() => undefined));
      try {
        analysis = await job;
      } catch (e) {
        throw new JobError(`curate: failed while processing ${src.abs}: ${(e as Error).message}`);
      } finally {
        running.delete(sha256);
      }
      state.append({ sha256, analysis });
      known.set(sha256, analysis);
      analysed++;
    }
    rows[index] = {
      source: src.id,
      sha256,
      fileBytes: bytes?.byteLength ?? 0,
      caption: caption.text,
      captionSource: caption.source,
      ...(caption.error ? { captionError: caption.error } : {}),
      analysis,
      decision: { status: 'rejected' },
    };
    progress.update(++done);
  };
  // A bounded window of queued tasks: millions of files never become millions of pending closures.
  const inflight = new Set<Promise<void>>();
  try {
    for (let i = 0; i < sources.length && !stopped && !interrupted(); i++) {
      const p: Promise<void> = limit(() => one(sources[i]!, i)).finally(() => inflight.delete(p));
      // Marked handled: when one file fails the run stops, and files still in flight may then fail too.
      p.catch(() => undefined);
      inflight.add(p);
      if (inflight.size >= inFlight * 4) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  } finally {
    state.close();
    await ownPool?.close();
  }
  progress.finish({ analysed, reused });
  const present = rows.filter((r): r is ManifestRow => r !== undefined);
  if (stopped || interrupted()) {
    const counts = countsOf(scanned.length, sources.length, analysed, reused, present);
    const write = { written: 0, unchanged: 0, removed: 0 };
    return { outDir: opts.outDir, counts, rows: present, groups: [], write, report: buildReport({ rows: [], groups: [], counts }), complete: false, statePath };
  }
  return finishRun(cfg, opts.outDir, present, { scanned: scanned.length, inShard: sources.length, analysed, reused }, log, (row) =>
    join(opts.outDir, (row.analysis as { cached: { path: string } }).cached.path),
  );
}

/**
 * Decisions, outputs, manifest and report from analysed rows. Shared with `curate merge`, whose rows come from
 * several shard folders (`cachedPath` resolves each row's cached image).
 */
export async function finishRun(
  cfg: CurateConfig,
  outDir: string,
  rows: ManifestRow[],
  base: { scanned: number; inShard: number; analysed: number; reused: number },
  log: (line: string) => void,
  cachedPath: (row: ManifestRow) => string,
): Promise<CurateResult> {
  rows.sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0));
  const clipRejections = await clipFilterRejections(rows, cfg, { outDir, cachedPath, log });
  const { bySource, groups } = decide(
    rows.map((r) => ({ source: r.source, analysis: r.analysis, captionSource: r.captionSource, captionError: r.captionError })),
    cfg,
    clipRejections,
  );
  const samples: OutputSample[] = [];
  for (const r of rows) {
    const d = bySource.get(r.source)!;
    r.decision = d;
    if (d.status !== 'kept' || !r.analysis.ok) continue;
    d.key = r.analysis.pixelHash.slice(0, 16);
    samples.push({
      key: d.key,
      imagePath: cachedPath(r),
      imageBytes: r.analysis.cached.bytes,
      caption: r.caption,
      meta: {
        key: d.key,
        source: r.source,
        caption: r.caption,
        width: r.analysis.cached.width,
        height: r.analysis.cached.height,
        original_width: r.analysis.width,
        original_height: r.analysis.height,
        sha256: r.sha256,
        pixel_hash: r.analysis.pixelHash,
      },
    });
  }
  // Kept images are sorted by key so shard contents do not depend on the order files were found or finished.
  samples.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const ext = cfg.output.image_format;
  const write =
    cfg.output.format === 'folder'
      ? await writeFolderOutput(outDir, samples, ext)
      : await writeWebDatasetOutput(outDir, samples, cfg.output.samples_per_shard, ext);
  await writeFileAtomic(join(outDir, MANIFEST_FILE), manifestLines(rows));
  const counts = countsOf(base.scanned, base.inShard, base.analysed, base.reused, rows);
  const report = buildReport({ rows, groups, counts });
  await writeReport(outDir, report, rows, cfg.output.thumbnails, cachedPath);
  log(
    `curate: kept ${counts.kept} of ${rows.length}; rejected ${Object.entries(counts.rejected)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none'}; wrote ${write.written}, unchanged ${write.unchanged}, removed ${write.removed} → ${outDir}`,
  );
  return { outDir, counts, rows, groups, write, report, complete: true };
}

function countsOf(scanned: number, inShard: number, analysed: number, reused: number, rows: readonly ManifestRow[]): RunCounts {
  const rejected: Record<string, number> = {};
  let kept = 0;
  for (const r of rows) {
    if (r.decision.status === 'kept') kept++;
    else if (r.decision.stage) rejected[r.decision.stage] = (rejected[r.decision.stage] ?? 0) + 1;
  }
  return { scanned, inShard, analysed, reused, kept, rejected };
}

async function readSource(src: SourceFile): Promise<Uint8Array | undefined> {
  try {
    return await readFile(src.abs);
  } catch {
    return undefined;
  }
}

async function captionFor(
  src: SourceFile,
  cfg: CurateConfig,
  manifest: Map<string, string> | undefined,
): Promise<{ text: string; source: CaptionSource; error?: string }> {
  const found = await findCaption(src, cfg.captions.sidecar, manifest);
  const text = cfg.captions.clean ? cleanCaption(found.text) : found.text.trim();
  return { ...found, text: withTrigger(text, cfg.captions.trigger) };
}

