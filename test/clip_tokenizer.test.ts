import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesToUnicode, ClipTokenizer } from '../src/models/text/clip_tokenizer.js';
import { clipClean, htmlUnescape, LATIN1_ENTITY_COUNT } from '../src/models/text/text_clean.js';
import { UsageError } from '../src/util/errors.js';

const cases = readFileSync(new URL('./fixtures/clip/tokenizer-cases.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as { text: string; ids: number[] });

const tok = ClipTokenizer.default();

describe('ClipTokenizer against the reference tokenizer', () => {
  it('has the CLIP vocabulary and special ids', () => {
    expect(tok.vocabSize).toBe(49408);
    expect(tok.sotId).toBe(49406);
    expect(tok.eotId).toBe(49407);
    expect(cases.length).toBeGreaterThanOrEqual(16);
  });

  it.each(cases.map((c) => [c.text, c.ids] as const))('encodes %j', (text, ids) => {
    expect(tok.encode(text)).toEqual(ids);
  });
});

describe('bytesToUnicode', () => {
  it('is a bijection onto printable characters that keeps printable ASCII', () => {
    const t = bytesToUnicode();
    expect(new Set(t).size).toBe(256);
    expect(t[0x41]).toBe('A');
    // Byte 0 is the first non-printable byte, so it takes 256; space (0x20) is the 33rd → 256+32.
    expect(t[0]).toBe('\u0100');
    expect(t[0x20]).toBe(String.fromCodePoint(256 + 32));
    for (const c of t) expect(/\s/.test(c)).toBe(false);
  });
});

describe('cleaning', () => {
  it('unescapes HTML like Python html.unescape', () => {
    expect(LATIN1_ENTITY_COUNT).toBe(96);
    expect(htmlUnescape('&amp;&lt;&gt;&quot;&#39;&#x41;')).toBe('&<>"\'A');
    expect(htmlUnescape('&eacute; &eacute &yuml;')).toBe('é é ÿ');
    // Bare legacy prefix followed by more letters: Python takes the longest known prefix.
    expect(htmlUnescape('&ampfoo;')).toBe('&foo;');
    expect(htmlUnescape('&#150;&#0;&#xD800;&#1;')).toBe('\u2013\ufffd\ufffd');
    expect(htmlUnescape('&nosuch; & x')).toBe('&nosuch; & x');
  });
  it('unescapes twice, collapses whitespace and lower-cases', () => {
    expect(clipClean('  A&amp;amp;B \u3000\t C\u2019s  ')).toBe("a&b c's");
  });
});

describe('call (batch to context length)', () => {
  it('pads with EOT (HF) or zero (OpenAI) and masks padding', () => {
    const hf = tok.call(['a photo of a cat', ''], { contextLength: 10 });
    expect(hf.batch).toBe(2);
    expect([...hf.ids.slice(0, 10)]).toEqual([49406, 320, 1125, 539, 320, 2368, 49407, 49407, 49407, 49407]);
    expect([...hf.mask.slice(0, 10)]).toEqual([1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
    expect([...hf.ids.slice(10, 13)]).toEqual([49406, 49407, 49407]);
    expect([...hf.mask.slice(10, 13)]).toEqual([1, 1, 0]);
    const oa = tok.call(['a photo of a cat'], { contextLength: 10, pad: 'zero' });
    expect([...oa.ids]).toEqual([49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, 0]);
  });

  it('truncates to the first length−1 ids plus EOT, or refuses', () => {
    const long = cases.reduce((a, c) => (c.ids.length > a.ids.length ? c : a));
    const L = 5;
    const out = tok.call([long.text], { contextLength: L });
    expect([...out.ids]).toEqual([...long.ids.slice(0, L - 1), 49407]);
    expect([...out.mask]).toEqual([1, 1, 1, 1, 1]);
    expect(() => tok.call([long.text], { contextLength: L, truncate: false })).toThrow(UsageError);
  });

  it('defaults to 77 tokens', () => {
    const words = Array.from({ length: 100 }, () => 'cat').join(' ');
    const out = tok.call([words]);
    expect(out.length).toBe(77);
    expect(out.ids[76]).toBe(49407);
    expect(out.ids[75]).toBe(2368);
  });

  it('decodes back to the cleaned text', () => {
    expect(tok.decode(tok.tokenize('A photo of a café, 3.14!'))).toBe('a photo of a café , 3 . 1 4 !');
  });
});

describe('loading', () => {
  it('reads tokenizer.json with either merge format and gives the same ids', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cliptok-'));
    const vocab = JSON.parse(readFileSync(new URL('../assets/clip/vocab.json', import.meta.url), 'utf8'));
    const merges = readFileSync(new URL('../assets/clip/merges.txt', import.meta.url), 'utf8')
      .split('\n')
      .slice(1)
      .filter(Boolean);
    const asPairs = merges.map((m) => m.split(' '));
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: asPairs } }));
    const fast = ClipTokenizer.fromFolder(dir)!;
    for (const c of cases) expect(fast.encode(c.text)).toEqual(c.ids);
  });

  it('names the file in errors', () => {
    expect(() => ClipTokenizer.fromFiles('/nonexistent/vocab.json', '/nonexistent/merges.txt')).toThrow(/\/nonexistent\/vocab.json/);
    const dir = mkdtempSync(join(tmpdir(), 'cliptok-'));
    writeFileSync(join(dir, 'vocab.json'), '{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}');
    writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b\nbad\n');
    expect(() => ClipTokenizer.fromFiles(join(dir, 'vocab.json'), join(dir, 'merges.txt'))).toThrow(/merges.txt:3/);
  });
});
