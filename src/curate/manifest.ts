import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { JobError } from '../util/errors.js';
import type { CaptionSource } from './captions.js';
import type { SourceFormat } from './decode.js';
import type { QualityMeasures } from './filters.js';

/**
 * What curation learns about each source file, the decision taken on it, and the append-only state file that
 * makes a run resumable.
 */

/** Everything about one decodable file that does not depend on the other files or on filter thresholds. */
export interface ImageAnalysis {
  ok: true;
  width: number;
  height: number;
  source: SourceFormat;
  /** exactPixelHash of the decoded pixels (hex SHA-256). */
  pixelHash: string;
  /** 16 hex characters, of the kind the run is configured with. */
  perceptualHash: string;
  quality: QualityMeasures;
  /** The resized, encoded output, cached so the write stage never decodes again. Path relative to the output folder. */
  cached: { path: string; width: number; height: number; bytes: number };
}

export interface FailedAnalysis {
  ok: false;
  code: string;
  reason: string;
}

export type Analysis = ImageAnalysis | FailedAnalysis;

/** One line of the state file: the analysis of a file with this SHA-256 of its bytes. */
export interface StateLine {
  sha256: string;
  analysis: Analysis;
}

export type Stage = 'decode' | 'caption' | 'filter' | 'exact_duplicate' | 'near_duplicate';

export interface Decision {
  status: 'kept' | 'rejected';
  /** Why it was rejected (the first stage that rejected it). */
  stage?: Stage;
  reasons?: string[];
  /** Filters failed, by name (several can fail at once). */
  filters?: string[];
  /** Index into the run's duplicate groups, for images in one (kept or not). */
  group?: number;
  /** Source id of the image kept in its place. */
  duplicateOf?: string;
  /** Output sample key, for kept images. */
  key?: string;
}

/** One line of manifest.jsonl. */
export interface ManifestRow {
  source: string;
  sha256: string;
  fileBytes: number;
  caption: string;
  captionSource: CaptionSource;
  /** Set when a caption file exists but cannot be read; the image is rejected at the caption stage. */
  captionError?: string;
  analysis: Analysis;
  decision: Decision;
}

/**
 * Where a cached image may be: `.curate/cache/<fingerprint>/<sha256>.<ext>`, the only files analyseFile writes;
 * a merged manifest points into the shard folders beside it, so it may climb out with leading `../`. State files
 * and manifests are read back from disk, where anyone may have edited them: a path in them must not lead a run
 * (or `curate merge`) to read, and publish into its output, any other file.
 */
const CACHED_IN_OUTPUT = /^\.curate\/cache\/[0-9a-f]+\/[0-9a-f]{64}\.(jpg|png|webp)$/;
const CACHED_BESIDE = /^(\.\.\/)*((?!\.\.?\/)[^/\\\0]+\/)*\.curate\/cache\/[0-9a-f]+\/[0-9a-f]{64}\.(jpg|png|webp)$/;

export function isCachedImagePath(p: string, opts: { beside?: boolean } = {}): boolean {
  return (opts.beside ? CACHED_BESIDE : CACHED_IN_OUTPUT).test(p);
}

const finite = z.number().finite();
const count = z.number().int().nonnegative();
const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`));

/**
 * The shape of an analysis as analyseFile writes it; anything else read back from disk is refused. In a state file
 * the cached path lies inside the output folder; a merged manifest points into the shard folders beside it (`../`).
 */
function analysisSchema(cachedPath: z.ZodType<string>): z.ZodType<Analysis> {
  return z.union([
    z.object({
      ok: z.literal(true),
      width: count,
      height: count,
      source: z.object({ format: z.string(), space: z.string(), channels: count, depth: z.string(), hasAlpha: z.boolean(), orientation: count }),
      pixelHash: hex(64),
      perceptualHash: hex(16),
      quality: z.object({ brightness: finite, entropy: finite, blurVariance: finite }),
      cached: z.object({ path: cachedPath, width: count, height: count, bytes: count }),
    }),
    z.object({ ok: z.literal(false), code: z.string(), reason: z.string() }),
  ]);
}

const StateAnalysisSchema = analysisSchema(z.string().refine((p) => isCachedImagePath(p), 'a cached image path .curate/cache/<fingerprint>/<sha256>.<ext>'));
const STAGES = ['decode', 'caption', 'filter', 'exact_duplicate', 'near_duplicate'] as const;

const ManifestRowSchema: z.ZodType<ManifestRow> = z.object({
  source: z.string(),
  sha256: z.string(),
  fileBytes: count,
  caption: z.string(),
  captionSource: z.enum(['sidecar', 'manifest', 'none']),
  captionError: z.string().optional(),
  analysis: analysisSchema(z.string().refine((p) => isCachedImagePath(p, { beside: true }), 'a cached image path [../…/].curate/cache/<fingerprint>/<sha256>.<ext>')),
  decision: z.object({
    status: z.enum(['kept', 'rejected']),
    stage: z.enum(STAGES).optional(),
    reasons: z.array(z.string()).optional(),
    filters: z.array(z.string()).optional(),
    group: count.optional(),
    duplicateOf: z.string().optional(),
    key: z.string().optional(),
  }),
});

/**
 * Reads the state file, ignoring a torn last line (a crash during the append) and any line that does not parse.
 * Later lines win, so a re-analysed file replaces its earlier entry.
 */
export function readState(path: string): Map<string, Analysis> {
  const out = new Map<string, Analysis>();
  if (!existsSync(path)) return out;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let rec: StateLine;
    try {
      rec = JSON.parse(line) as StateLine;
    } catch {
      continue;
    }
    const analysis = StateAnalysisSchema.safeParse(rec?.analysis);
    // A line in another shape (edited by hand, or from another version) is analysed again rather than trusted.
    if (typeof rec?.sha256 === 'string' && analysis.success) out.set(rec.sha256, analysis.data);
  }
  return out;
}

/**
 * Appends one JSON line per analysed file. Each line goes out in a single synchronous write on an O_APPEND
 * descriptor, so lines from concurrent workers never interleave and a killed process leaves at most one torn
 * final line, which readState skips. No fsync per line: after an OS crash the lost tail is simply redone.
 */
export class StateWriter {
  private fd: number | undefined;

  constructor(readonly path: string) {
    // A torn line from a crash must not glue itself to the next record.
    const size = existsSync(path) ? statSync(path).size : 0;
    let endsTorn = false;
    if (size > 0) {
      const last = Buffer.alloc(1);
      const rfd = openSync(path, 'r');
      readSync(rfd, last, 0, 1, size - 1);
      closeSync(rfd);
      endsTorn = last[0] !== 0x0a;
    }
    this.fd = openSync(path, 'a');
    if (endsTorn) writeSync(this.fd, '\n');
  }

  append(line: StateLine): void {
    if (this.fd === undefined) throw new Error('StateWriter is closed');
    writeSync(this.fd, `${JSON.stringify(line)}\n`);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

export function manifestLines(rows: readonly ManifestRow[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
}

export function parseManifest(text: string, where: string): ManifestRow[] {
  const rows: ManifestRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.trim()) continue;
    let json: unknown;
    try {
      json = JSON.parse(lines[i]!);
    } catch {
      throw new JobError(`${where}:${i + 1}: not valid JSON`);
    }
    const row = ManifestRowSchema.safeParse(json);
    if (!row.success) {
      const issue = row.error.issues[0]!;
      throw new JobError(`${where}:${i + 1}: not a curate manifest row: ${issue.path.join('.') || '(row)'}: ${issue.message}`);
    }
    rows.push(row.data);
  }
  return rows;
}
