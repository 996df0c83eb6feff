import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../../util/errors.js';
import { clipClean, PY_SPACE } from './text_clean.js';

/**
 * CLIP's byte-level BPE tokenizer (openai/CLIP simple_tokenizer.py, HF CLIPTokenizer): text is
 * cleaned (see text_clean.ts), split by CLIP's regex, each piece's UTF-8 bytes are mapped to
 * printable characters, then merged greedily by lowest merge rank with `</w>` marking word ends.
 */

export const CLIP_SOT_TOKEN = '<|startoftext|>';
export const CLIP_EOT_TOKEN = '<|endoftext|>';

export type ClipPadding = 'eot' | 'zero';

export interface ClipCallOptions {
  contextLength?: number;
  /** Too-long input keeps the first contextLength−1 ids and ends with EOT; false makes it an error. */
  truncate?: boolean;
  /** 'eot' pads with 49407 as HF CLIPTokenizer does; 'zero' pads with 0 as openai/CLIP's clip.tokenize does. */
  pad?: ClipPadding;
}

/** Row-major [batch, length] ids and attention mask (1 = real token, SOT and EOT included). */
export interface TokenBatch {
  ids: Int32Array;
  mask: Int32Array;
  batch: number;
  length: number;
}

/** GPT-2's byte ↔ unicode table: printable Latin-1 bytes map to themselves, the rest to 256+n. */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return table;
}

// Python's regex `\s` is Unicode whitespace; the text is lower-cased already, so IGNORECASE only matters
// for the special tokens, which are lower-case as written.
const PRETOKENIZE = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${PY_SPACE}\\p{L}\\p{N}]+`,
  'giu',
);

const DEFAULT_ASSETS = fileURLToPath(new URL('../../../assets/clip/', import.meta.url));

export class ClipTokenizer {
  readonly sotId: number;
  readonly eotId: number;
  readonly vocabSize: number;
  private readonly ranks: Map<string, number>;
  private readonly byteEncoder = bytesToUnicode();
  private readonly utf8 = new TextEncoder();
  private readonly cache = new Map<string, number[]>();
  private static readonly CACHE_LIMIT = 50_000;

  constructor(private readonly vocab: Map<string, number>, merges: [string, string][]) {
    this.vocabSize = vocab.size;
    this.ranks = new Map(merges.map(([a, b], i) => [pairKey(a, b), i]));
    const sot = vocab.get(CLIP_SOT_TOKEN);
    const eot = vocab.get(CLIP_EOT_TOKEN);
    if (sot === undefined || eot === undefined) {
      throw new UsageError(`CLIP vocabulary lacks ${CLIP_SOT_TOKEN} or ${CLIP_EOT_TOKEN}`);
    }
    this.sotId = sot;
    this.eotId = eot;
  }

  /** The vocabulary shipped in assets/clip (openai/CLIP bpe_simple_vocab_16e6, HF layout). */
  static default(): ClipTokenizer {
    return ClipTokenizer.fromFiles(join(DEFAULT_ASSETS, 'vocab.json'), join(DEFAULT_ASSETS, 'merges.txt'));
  }

  /** HF slow-tokenizer layout: vocab.json ({token: id}) and merges.txt ("#version" header, "a b" per line). */
  static fromFiles(vocabPath: string, mergesPath: string): ClipTokenizer {
    const vocab = readJson(vocabPath);
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) {
      throw new UsageError(`${vocabPath}: expected a JSON object mapping token → id`);
    }
    const merges = parseMergesText(readText(mergesPath), mergesPath);
    return new ClipTokenizer(vocabMap(vocab as Record<string, unknown>, vocabPath), merges);
  }

  /** HF fast-tokenizer layout: tokenizer.json with model.vocab and model.merges ("a b" strings or [a, b] pairs). */
  static fromTokenizerJson(path: string): ClipTokenizer {
    const doc = readJson(path) as { model?: { type?: string; vocab?: unknown; merges?: unknown } };
    const model = doc?.model;
    if (!model || typeof model.vocab !== 'object' || model.vocab === null || !Array.isArray(model.merges)) {
      throw new UsageError(`${path}: expected a BPE tokenizer.json with model.vocab (object) and model.merges (array)`);
    }
    if (model.type !== undefined && model.type !== 'BPE') throw new UsageError(`${path}: model.type is '${model.type}', expected 'BPE'`);
    const merges = model.merges.map((m, i): [string, string] => {
      if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
      if (typeof m === 'string') return splitMerge(m, `${path}: model.merges[${i}]`);
      throw new UsageError(`${path}: model.merges[${i}] must be "a b" or ["a", "b"]`);
    });
    return new ClipTokenizer(vocabMap(model.vocab as Record<string, unknown>, `${path}: model.vocab`), merges);
  }

  /** Load from a folder holding vocab.json + merges.txt or tokenizer.json; null when it holds neither. */
  static fromFolder(dir: string): ClipTokenizer | null {
    const vocab = join(dir, 'vocab.json');
    const merges = join(dir, 'merges.txt');
    if (existsSync(vocab) && existsSync(merges)) return ClipTokenizer.fromFiles(vocab, merges);
    const fast = join(dir, 'tokenizer.json');
    if (existsSync(fast)) return ClipTokenizer.fromTokenizerJson(fast);
    return null;
  }

  /** BPE ids of the cleaned text, without SOT/EOT. */
  tokenize(text: string): number[] {
    const out: number[] = [];
    for (const match of clipClean(text).matchAll(PRETOKENIZE)) {
      const piece = match[0];
      if (piece === CLIP_SOT_TOKEN) out.push(this.sotId);
      else if (piece === CLIP_EOT_TOKEN) out.push(this.eotId);
      else out.push(...this.bpe(this.byteLevel(piece)));
    }
    return out;
  }

  /** [SOT, …tokens, EOT], untruncated. */
  encode(text: string): number[] {
    return [this.sotId, ...this.tokenize(text), this.eotId];
  }

  /** Batch to fixed length: truncated or padded, with an attention mask. */
  call(texts: string[], opts: ClipCallOptions = {}): TokenBatch {
    const length = opts.contextLength ?? 77;
    if (!Number.isInteger(length) || length < 2) throw new UsageError(`contextLength must be an integer ≥ 2, got ${length}`);
    const truncate = opts.truncate ?? true;
    const padId = (opts.pad ?? 'eot') === 'eot' ? this.eotId : 0;
    const ids = new Int32Array(texts.length * length).fill(padId);
    const mask = new Int32Array(texts.length * length);
    texts.forEach((text, b) => {
      let row = this.encode(text);
      if (row.length > length) {
        if (!truncate) throw new UsageError(`text ${b} is ${row.length} tokens, longer than the context length ${length}: "${text.slice(0, 60)}…"`);
        row = [...row.slice(0, length - 1), this.eotId];
      }
      ids.set(row, b * length);
      mask.fill(1, b * length, b * length + row.length);
    });
    return { ids, mask, batch: texts.length, length };
  }

  /** Token strings back to text: byte-decoded, `</w>` read as a space. */
  decode(ids: number[]): string {
    const inverse = this.inverseVocab();
    const byteDecoder = new Map(this.byteEncoder.map((c, b) => [c, b]));
    const bytes: number[] = [];
    for (const id of ids) {
      const token = inverse[id];
      if (token === undefined) continue;
      for (const ch of token) {
        const b = byteDecoder.get(ch);
        if (b !== undefined) bytes.push(b);
      }
    }
    const text = new TextDecoder('utf-8', { fatal: false }).decode(new Uint8Array(bytes));
    return text.replaceAll('</w>', ' ').trim();
  }

  private inverseCache: string[] | null = null;
  private inverseVocab(): string[] {
    if (!this.inverseCache) {
      this.inverseCache = [];
      for (const [t, id] of this.vocab) this.inverseCache[id] = t;
    }
    return this.inverseCache;
  }

  private byteLevel(piece: string): string {
    let s = '';
    for (const b of this.utf8.encode(piece)) s += this.byteEncoder[b];
    return s;
  }

  private bpe(token: string): number[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    // The byte-level alphabet is all BMP, so string units are symbols.
    let word = [...token];
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(pairKey(word[i]!, word[i + 1]!));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      // Merge every non-overlapping occurrence left to right, as the reference does for the chosen pair.
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i]!);
          i += 1;
        }
      }
      word = merged;
    }
    const ids = word.map((sym) => this.vocab.get(sym) ?? this.eotId);
    if (this.cache.size >= ClipTokenizer.CACHE_LIMIT) this.cache.clear();
    this.cache.set(token, ids);
    return ids;
  }
}

function pairKey(a: string, b: string): string {
  return `${a} ${b}`;
}

function splitMerge(line: string, where: string): [string, string] {
  const parts = line.split(' ');
  if (parts.length !== 2 || !parts[0] || !parts[1]) throw new UsageError(`${where}: expected two symbols separated by one space, got "${line}"`);
  return [parts[0], parts[1]];
}

export function parseMergesText(text: string, path: string): [string, string][] {
  const lines = text.split('\n');
  const merges: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    merges.push(splitMerge(line, `${path}:${i + 1}`));
  });
  return merges;
}

function vocabMap(obj: Record<string, unknown>, where: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const [token, id] of Object.entries(obj)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new UsageError(`${where}: id of token "${token}" must be a non-negative integer`);
    map.set(token, id);
  }
  return map;
}

function readText(path: string): string {
  if (!existsSync(path)) throw new UsageError(`tokenizer file not found: ${path}`);
  return readFileSync(path, 'utf8');
}

function readJson(path: string): unknown {
  const text = readText(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}
