import { UsageError } from '../util/errors.js';
import type { Rng } from '../util/rng.js';

/**
 * Per-step caption transforms of kohya's sd-scripts (train_util.BaseDataset.process_caption):
 * caption dropout (the whole caption becomes ""), tag shuffle keeping the first `keepTokens` tags
 * (or everything before `keepTokensSeparator`) in place, and tag dropout of the shuffled part.
 * Deterministic for a given Rng state.
 */
export interface CaptionOpsOptions {
  /** Probability the whole caption is replaced by "" (unconditional); kohya caption_dropout_rate. */
  captionDropout?: number;
  shuffleTags?: boolean;
  /** Leading tags that never move or drop (kohya keep_tokens). */
  keepTokens?: number;
  /** Tags before this marker are kept in place instead (kohya keep_tokens_separator, e.g. "|||"). */
  keepTokensSeparator?: string;
  /** Probability each movable tag is dropped (kohya caption_tag_dropout_rate). */
  tagDropout?: number;
  /** Tag separator (kohya caption_separator), default ",". */
  separator?: string;
}

function checkRate(name: string, p: number | undefined): void {
  if (p !== undefined && !(p >= 0 && p <= 1)) throw new UsageError(`${name} must be in [0, 1], got ${p}`);
}

export function validateCaptionOps(o: CaptionOpsOptions): void {
  checkRate('caption_dropout', o.captionDropout);
  checkRate('tag_dropout', o.tagDropout);
  if (o.keepTokens !== undefined && !(Number.isInteger(o.keepTokens) && o.keepTokens >= 0)) throw new UsageError(`keep_tokens must be a non-negative integer, got ${o.keepTokens}`);
}

function splitTags(text: string, sep: string): string[] {
  return text
    .split(sep)
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}

/**
 * One draw of the caption for this step. Rng consumption is fixed per call shape (dropout draw first,
 * then the shuffle, then one draw per movable tag), so a restored Rng state reproduces it exactly.
 */
export function applyCaptionOps(caption: string, o: CaptionOpsOptions, rng: Rng): string {
  if ((o.captionDropout ?? 0) > 0 && rng.uniform() < o.captionDropout!) return '';
  const sep = o.separator ?? ',';
  const joiner = `${sep} `;
  let fixed: string[];
  let flex: string[];
  if (o.keepTokensSeparator && caption.includes(o.keepTokensSeparator)) {
    const at = caption.indexOf(o.keepTokensSeparator);
    fixed = splitTags(caption.slice(0, at), sep);
    flex = splitTags(caption.slice(at + o.keepTokensSeparator.length), sep);
  } else {
    const tags = splitTags(caption, sep);
    const keep = o.keepTokens ?? 0;
    fixed = tags.slice(0, keep);
    flex = tags.slice(keep);
  }
  if (o.shuffleTags) rng.shuffle(flex);
  if ((o.tagDropout ?? 0) > 0) flex = flex.filter(() => rng.uniform() >= o.tagDropout!);
  return [...fixed, ...flex].join(joiner);
}

/**
 * The trigger word checked for use: it must survive tokenisation — hold at least one letter or digit
 * and, when the model's tokenizer is given, give at least one token (special tokens excluded by the
 * caller) — and must not contain the tag separator (it would split into several tags).
 */
export function checkTriggerWord(trigger: string, separator = ',', tokenize?: (text: string) => readonly number[]): string {
  const t = trigger.trim();
  if (!/[\p{L}\p{N}]/u.test(t) || (tokenize && tokenize(t).length === 0)) {
    throw new UsageError(`trigger word ${JSON.stringify(trigger)} has no letter or digit: it would tokenise to nothing; choose a word such as "brandx"`);
  }
  if (t.includes(separator)) throw new UsageError(`trigger word ${JSON.stringify(trigger)} contains the tag separator '${separator}'`);
  return t;
}

/** Whether `caption` carries `trigger` as one of its tags or words (kohya captions put it first, but tag shuffle may move it). */
export function mentionsTrigger(caption: string, trigger: string, separator = ','): boolean {
  const t = trigger.trim().toLowerCase();
  return caption.split(separator).some((tag) => tag.trim().toLowerCase().split(/\s+/).includes(t));
}
