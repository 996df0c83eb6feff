import { UsageError } from '../../util/errors.js';
import type { TokenBatch } from './clip_tokenizer.js';

/**
 * Word-level vocabulary built from a dataset's own captions, for the built-in text encoder (no
 * pretrained tokenizer can be fetched offline). Words are maximal runs of letters or digits after
 * lower-casing (digits are kept because counts such as "3 circles" matter in captions). Ids 0–3 are
 * pad/bos/eos/unk; words follow by descending frequency, ties broken by code-unit order so the
 * vocabulary does not depend on caption order or locale. It serialises to JSON for checkpoints.
 */

export const WORD_VOCAB_VERSION = 1;
const SPECIALS = ['<pad>', '<bos>', '<eos>', '<unk>'] as const;
const WORD = /[\p{L}\p{N}]+/gu;

export interface WordVocabJson {
  type: 'word-vocab';
  version: number;
  specials: string[];
  words: string[];
}

export interface WordVocabOptions {
  /** Words seen fewer times map to unk. */
  minCount?: number;
  /** Keep at most this many words (the most frequent). */
  maxWords?: number;
}

export function splitWords(text: string): string[] {
  return text.normalize('NFC').toLowerCase().match(WORD) ?? [];
}

export class WordTokenizer {
  readonly padId = 0;
  readonly bosId = 1;
  readonly eosId = 2;
  readonly unkId = 3;
  private readonly ids: Map<string, number>;

  private constructor(readonly words: readonly string[]) {
    this.ids = new Map(words.map((w, i) => [w, SPECIALS.length + i]));
  }

  get vocabSize(): number {
    return SPECIALS.length + this.words.length;
  }

  static build(captions: Iterable<string>, opts: WordVocabOptions = {}): WordTokenizer {
    const minCount = opts.minCount ?? 1;
    const counts = new Map<string, number>();
    for (const caption of captions) for (const w of splitWords(caption)) counts.set(w, (counts.get(w) ?? 0) + 1);
    let ranked = [...counts.entries()]
      .filter(([, n]) => n >= minCount)
      .sort(([a, na], [b, nb]) => nb - na || (a < b ? -1 : a > b ? 1 : 0))
      .map(([w]) => w);
    if (opts.maxWords !== undefined) ranked = ranked.slice(0, opts.maxWords);
    return new WordTokenizer(ranked);
  }

  static fromJSON(json: unknown, where = 'word vocabulary'): WordTokenizer {
    const o = json as Partial<WordVocabJson> | null;
    if (typeof o !== 'object' || o === null || o.type !== 'word-vocab') throw new UsageError(`${where}: expected an object with type "word-vocab"`);
    if (o.version !== WORD_VOCAB_VERSION) throw new UsageError(`${where}: version ${o.version} is not supported (expected ${WORD_VOCAB_VERSION})`);
    if (!Array.isArray(o.specials) || o.specials.join() !== SPECIALS.join()) throw new UsageError(`${where}: specials must be ${JSON.stringify(SPECIALS)}`);
    if (!Array.isArray(o.words) || !o.words.every((w) => typeof w === 'string' && w.length > 0)) {
      throw new UsageError(`${where}: words must be an array of non-empty strings`);
    }
    if (new Set(o.words).size !== o.words.length) throw new UsageError(`${where}: words contain duplicates`);
    return new WordTokenizer(o.words);
  }

  toJSON(): WordVocabJson {
    return { type: 'word-vocab', version: WORD_VOCAB_VERSION, specials: [...SPECIALS], words: [...this.words] };
  }

  tokenize(text: string): number[] {
    return splitWords(text).map((w) => this.ids.get(w) ?? this.unkId);
  }

  encode(text: string): number[] {
    return [this.bosId, ...this.tokenize(text), this.eosId];
  }

  /** Fixed-length batch padded with pad id 0; too-long captions keep their first length−1 ids and end with eos. */
  call(texts: string[], contextLength: number): TokenBatch {
    if (!Number.isInteger(contextLength) || contextLength < 2) throw new UsageError(`contextLength must be an integer ≥ 2, got ${contextLength}`);
    const ids = new Int32Array(texts.length * contextLength).fill(this.padId);
    const mask = new Int32Array(texts.length * contextLength);
    texts.forEach((text, b) => {
      let row = this.encode(text);
      if (row.length > contextLength) row = [...row.slice(0, contextLength - 1), this.eosId];
      ids.set(row, b * contextLength);
      mask.fill(1, b * contextLength, b * contextLength + row.length);
    });
    return { ids, mask, batch: texts.length, length: contextLength };
  }

  decode(ids: number[]): string {
    return ids
      .filter((id) => id !== this.padId && id !== this.bosId && id !== this.eosId)
      .map((id) => (id === this.unkId ? SPECIALS[3] : (this.words[id - SPECIALS.length] ?? SPECIALS[3])))
      .join(' ');
  }
}
