import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, posix, resolve } from 'node:path';
import { UsageError } from '../util/errors.js';
import type { SourceFile } from './scan.js';

/**
 * Captions for curated images: found in a sidecar next to the image (`name.txt`, `name.caption`, or `name.json`
 * with a "caption"/"text" field) or in a CSV/JSONL manifest, then cleaned and given the trigger token.
 */

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const FILE_KEYS = ['file_name', 'file', 'path', 'image'];
const TEXT_KEYS = ['text', 'caption'];

/**
 * Manifest captions keyed by absolute image path. File names in the manifest are relative to the manifest's
 * folder (Hugging Face imagefolder style) unless absolute.
 */
export async function readCaptionManifest(manifestPath: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = strictUtf8.decode(await readFile(manifestPath));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'is not readable UTF-8';
    throw new UsageError(`captions.manifest ${manifestPath} ${why}`);
  }
  const base = dirname(resolve(manifestPath));
  const rows = /\.csv$/i.test(manifestPath) ? csvRecords(text, manifestPath) : jsonlRecords(text, manifestPath);
  const out = new Map<string, string>();
  for (const { rec, where } of rows) {
    const file = FILE_KEYS.map((k) => rec[k]).find((v) => typeof v === 'string');
    const caption = TEXT_KEYS.map((k) => rec[k]).find((v) => typeof v === 'string');
    if (typeof file !== 'string' || typeof caption !== 'string') {
      throw new UsageError(`${where}: expected a file column (${FILE_KEYS.join('/')}) and a caption column (${TEXT_KEYS.join('/')})`);
    }
    const normal = file.split('\\').join('/');
    out.set(isAbsolute(normal) ? resolve(normal) : resolve(base, posix.normalize(normal)), caption);
  }
  return out;
}

function jsonlRecords(text: string, file: string): { rec: Record<string, unknown>; where: string }[] {
  const out: { rec: Record<string, unknown>; where: string }[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    const where = `${file}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      throw new UsageError(`${where}: not valid JSON; expected {"file_name": "...", "text": "..."}`);
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw new UsageError(`${where}: expected a JSON object`);
    out.push({ rec: rec as Record<string, unknown>, where });
  }
  return out;
}

/**
 * RFC 4180 CSV: a header row, quoted fields may hold commas, doubled quotes and newlines. A quote that is never
 * closed would swallow the rest of the file into one field, so it is an error naming the line it opened on.
 */
export function parseCsv(text: string, file = 'CSV'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let quoteStart = 0;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  for (; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += ch;
    } else if (ch === '"') {
      quoted = true;
      quoteStart = i;
    }
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (quoted) throw new UsageError(`${file}:${text.slice(0, quoteStart).split(/\r\n|\r|\n/).length}: a quoted field is never closed (a '"' without its closing '"')`);
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === ''));
}

function csvRecords(text: string, file: string): { rec: Record<string, unknown>; where: string }[] {
  const rows = parseCsv(text, file);
  const header = rows[0];
  if (!header) throw new UsageError(`${file}: empty CSV; expected a header row such as file_name,text`);
  return rows.slice(1).map((r, k) => {
    const rec: Record<string, unknown> = {};
    header.forEach((h, j) => (rec[h.trim()] = r[j] ?? ''));
    return { rec, where: `${file}: data row ${k + 1}` };
  });
}

export type CaptionSource = 'sidecar' | 'manifest' | 'none';

/** Raw caption text (before cleaning) and where it came from. A sidecar wins over the manifest. */
export async function findCaption(
  src: SourceFile,
  sidecars: readonly ('txt' | 'caption' | 'json')[],
  manifest: Map<string, string> | undefined,
): Promise<{ text: string; source: CaptionSource; error?: string }> {
  const stem = join(dirname(src.abs), basename(src.abs, extname(src.abs)));
  for (const ext of sidecars) {
    const bytes = await readFile(`${stem}.${ext}`).catch(() => null);
    if (!bytes) continue;
    let text: string;
    try {
      text = strictUtf8.decode(bytes);
    } catch {
      return { text: '', source: 'none', error: `caption file ${stem}.${ext} is not valid UTF-8` };
    }
    if (ext !== 'json') return { text, source: 'sidecar' };
    try {
      const rec = JSON.parse(text) as Record<string, unknown>;
      const value = TEXT_KEYS.map((k) => rec?.[k]).find((v) => typeof v === 'string');
      if (typeof value === 'string') return { text: value, source: 'sidecar' };
    } catch {
      return { text: '', source: 'none', error: `caption file ${stem}.json is not valid JSON` };
    }
  }
  const fromManifest = manifest?.get(src.abs);
  if (fromManifest !== undefined) return { text: fromManifest, source: 'manifest' };
  return { text: '', source: 'none' };
}

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  ndash: '–',
  mdash: '—',
  hellip: '…',
  lsquo: '‘',
  rsquo: '’',
  ldquo: '“',
  rdquo: '”',
  copy: '©',
  reg: '®',
  trade: '™',
  eacute: 'é',
  egrave: 'è',
  uuml: 'ü',
  ouml: 'ö',
  auml: 'ä',
  szlig: 'ß',
};

/** `&amp;`, `&#39;`, `&#x27;` and the common named entities; unknown names are left as written. */
export function htmlUnescape(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, body: string) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[body.toLowerCase()] ?? whole;
  });
}

/**
 * HTML-unescapes, collapses runs of whitespace (newlines included) to one space and, for comma-separated tag
 * lists, drops repeated tags (compared case-insensitively, first spelling kept) and empty ones.
 */
export function cleanCaption(raw: string): string {
  const text = htmlUnescape(raw).replace(/\s+/g, ' ').trim();
  if (!text.includes(',')) return text;
  const seen = new Set<string>();
  const tags: string[] = [];
  for (const part of text.split(',')) {
    const tag = part.trim();
    const key = tag.toLowerCase();
    if (!tag || seen.has(key)) continue;
    seen.add(key);
    tags.push(tag);
  }
  return tags.join(', ');
}

/** Puts the trigger token first (once): `sks, a photo of a dog`. */
export function withTrigger(caption: string, trigger: string | undefined): string {
  const t = trigger?.trim();
  if (!t) return caption;
  if (caption === t || caption.startsWith(`${t},`) || caption.startsWith(`${t} `)) return caption;
  return caption ? `${t}, ${caption}` : t;
}

export interface CaptionStats {
  count: number;
  empty: number;
  bySource: Record<CaptionSource, number>;
  words: { mean: number; min: number; max: number };
  /** Most frequent comma-separated tags (or words for prose captions), most common first. */
  topTokens: { token: string; count: number }[];
}

export function captionStats(captions: readonly { text: string; source: CaptionSource }[], top = 20): CaptionStats {
  const bySource: Record<CaptionSource, number> = { sidecar: 0, manifest: 0, none: 0 };
  const counts = new Map<string, number>();
  let empty = 0;
  let sum = 0;
  let min = Infinity;
  let max = 0;
  for (const c of captions) {
    bySource[c.source]++;
    const words = c.text.split(/\s+/).filter(Boolean).length;
    if (words === 0) empty++;
    sum += words;
    min = Math.min(min, words);
    max = Math.max(max, words);
    const tokens = c.text.includes(',') ? c.text.split(',') : c.text.split(/\s+/);
    for (const raw of tokens) {
      const t = raw.trim().toLowerCase();
      if (t) counts.set(t, (counts.get(t) ?? 0) + 1);
    }
  }
  const topTokens = [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, top)
    .map(([token, count]) => ({ token, count }));
  const n = captions.length;
  return { count: n, empty, bySource, words: { mean: n ? sum / n : 0, min: n ? min : 0, max }, topTokens };
}
