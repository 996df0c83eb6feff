import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
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
    if (typeof rec?.sha256 === 'string' && rec.analysis && typeof rec.analysis.ok === 'boolean') out.set(rec.sha256, rec.analysis);
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
    try {
      rows.push(JSON.parse(lines[i]!) as ManifestRow);
    } catch {
      throw new Error(`${where}:${i + 1}: not valid JSON`);
    }
  }
  return rows;
}
