import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { BuiltinTextEncoder } from '../src/models/text/builtin_text_encoder.js';
import { bytesToUnicode } from '../src/models/text/clip_tokenizer.js';
import { ClipTextEncoder } from '../src/models/text/clip_text_encoder.js';
import { disposeClipTextOutput } from '../src/models/text/clip_text_model.js';
import { createTextEncoder } from '../src/models/text/registry.js';
import { disposeTextEncoding, type TextEncoderSpec } from '../src/models/text/text_encoder.js';
import { WordTokenizer } from '../src/models/text/word_tokenizer.js';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

const captions = [
  'A red circle on a blue background',
  'a blue square, top-left',
  'Two red circles; a green triangle',
  '3 circles',
  'a green square',
];

describe('WordTokenizer', () => {
  const tok = WordTokenizer.build(captions);

  it('orders words by frequency, then alphabetically, after the four reserved ids', () => {
    // Counts by hand: a 5; blue, circles, green, red, square 2; the other eight words 1.
    expect(tok.words).toEqual(['a', 'blue', 'circles', 'green', 'red', 'square', '3', 'background', 'circle', 'left', 'on', 'top', 'triangle', 'two']);
    expect(tok.vocabSize).toBe(4 + 14);
    expect(tok.encode('A RED, red circle!')).toEqual([1, 4, 8, 8, 12, 2]);
  });

  it('does not depend on caption order', () => {
    expect(WordTokenizer.build([...captions].reverse()).words).toEqual(tok.words);
  });

  it('maps unknown words to unk and honours minCount / maxWords', () => {
    expect(tok.tokenize('a purple circle')).toEqual([4, 3, 12]);
    expect(WordTokenizer.build(captions, { minCount: 2 }).words).toEqual(['a', 'blue', 'circles', 'green', 'red', 'square']);
    expect(WordTokenizer.build(captions, { maxWords: 2 }).words).toEqual(['a', 'blue']);
  });

  it('round-trips through JSON and rejects a malformed one by name', () => {
    const back = WordTokenizer.fromJSON(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(back.words).toEqual(tok.words);
    expect(back.encode('two green triangles')).toEqual(tok.encode('two green triangles'));
    expect(() => WordTokenizer.fromJSON({ ...tok.toJSON(), words: ['a', 'a'] }, 'ckpt/text.json')).toThrow(/ckpt\/text.json: words contain duplicates/);
  });

  it('pads with 0, masks padding and truncates ending with eos', () => {
    const b = tok.call(['a red circle', 'a b c d e f'], 5);
    expect([...b.ids]).toEqual([1, 4, 8, 12, 2, 1, 4, 3, 3, 2]);
    expect([...b.mask]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    const c = tok.call(['red'], 5);
    expect([...c.ids]).toEqual([1, 8, 2, 0, 0]);
    expect([...c.mask]).toEqual([1, 1, 1, 0, 0]);
  });
});

describe('BuiltinTextEncoder', () => {
  it('encodes to [B, L, D] tokens, [B, L] mask and [B, D] pooled at the eos position', () => {
    const enc = createTextEncoder({ kind: 'builtin', hiddenSize: 32, numAttentionHeads: 4, contextLength: 8 }, { captions, rng: new Rng(1) });
    expect(enc.dim).toBe(32);
    expect(enc.contextLength).toBe(8);
    const e = enc.encode(['a red circle', 'two green triangles on a blue background']);
    expect(e.tokens.shape).toEqual([2, 8, 32]);
    expect(e.mask.shape).toEqual([2, 8]);
    expect(e.pooled.shape).toEqual([2, 32]);
    expect([...e.mask.dataSync().slice(0, 8)]).toEqual([1, 1, 1, 1, 1, 0, 0, 0]);
    // Row 0: bos a red circle eos → eos at index 4; pooled must be that token's state.
    const tokens = e.tokens.arraySync();
    expect([...e.pooled.dataSync().slice(0, 32)]).toEqual(tokens[0]![4]);
    // Row 1 is truncated to 8: eos lands on the last position.
    expect([...e.pooled.dataSync().slice(32)]).toEqual(tokens[1]![7]);
    disposeTextEncoding(e);
    enc.dispose();
  });

  it('saves its spec (with vocabulary) and weights, and rebuilds an identical encoder', () => {
    const a = createTextEncoder({ kind: 'builtin', hiddenSize: 16, numAttentionHeads: 2, numHiddenLayers: 1 }, { captions, rng: new Rng(2) });
    const saved = JSON.parse(JSON.stringify(a.spec())) as TextEncoderSpec;
    const b = createTextEncoder(saved, { rng: new Rng(99) });
    const keys = [...a.stateDict().keys()];
    expect(keys).toContain('text_model.embeddings.token_embedding.weight');
    expect([...b.stateDict().keys()]).toEqual(keys);
    b.loadStateDict(a.stateDict());
    const ea = a.encode(['a green square', 'unseen words here']);
    const eb = b.encode(['a green square', 'unseen words here']);
    expect(eb.tokens.dataSync()).toEqual(ea.tokens.dataSync());
    expect(eb.pooled.dataSync()).toEqual(ea.pooled.dataSync());
    [ea, eb].forEach(disposeTextEncoding);
    a.dispose();
    b.dispose();
  });

  it('passes gradients into every one of its weights when trainable, none when frozen', () => {
    const enc = createTextEncoder({ kind: 'builtin', hiddenSize: 16, numAttentionHeads: 2 }, { captions, rng: new Rng(3) });
    const trainable = enc.trainableParameters();
    expect(trainable.size).toBe(enc.parameters().length);
    const { value, grads } = tf.variableGrads(() => {
      const e = enc.encode(['a red circle', 'a blue square']);
      return e.tokens.square().mean().add(e.pooled.mean()) as tf.Scalar;
    });
    const names = new Map([...enc.namedParameters()].map(([n, p]) => [p.name, n]));
    const zeroGrad: string[] = [];
    for (const [varName, g] of Object.entries(grads)) {
      if (tf.abs(g).max().dataSync()[0] === 0) zeroGrad.push(names.get(varName) ?? varName);
    }
    expect(Object.keys(grads)).toHaveLength(trainable.size);
    expect(zeroGrad).toEqual([]);
    // Only the rows of words actually used receive gradient.
    const embedGrad = grads[new Map(enc.namedParameters()).get('text_model.embeddings.token_embedding.weight')!.name]!;
    const rowNorms = embedGrad.abs().sum(1).dataSync();
    const tok = (enc as BuiltinTextEncoder).tokenizer;
    const usedIds = new Set(tok.call(['a red circle', 'a blue square'], enc.contextLength).ids);
    expect(usedIds.size).toBe(8); // pad, bos, eos, a, red, circle, blue, square
    for (const id of usedIds) expect(rowNorms[id]).toBeGreaterThan(0);
    expect(rowNorms[tok.tokenize('triangle')[0]!]).toBe(0);
    value.dispose();
    Object.values(grads).forEach((g) => g.dispose());

    enc.freeze();
    expect(enc.trainableParameters().size).toBe(0);
    enc.dispose();
  });

  it('rejects a bad spec by key, and needs captions or a vocab', () => {
    expect(() => createTextEncoder({ kind: 'builtin', hiddenSize: 30, numAttentionHeads: 4 }, { captions })).toThrow(/hiddenSize 30 is not divisible/);
    expect(() => createTextEncoder({ kind: 'builtin' })).toThrow(/needs either a saved vocab or the dataset captions/);
    expect(() => createTextEncoder({ kind: 'nope' } as unknown as TextEncoderSpec)).toThrow(UsageError);
    expect(() => createTextEncoder({ kind: 'clip' } as unknown as TextEncoderSpec)).toThrow(/path must name/);
  });
});

// A CLIP folder whose tokenizer fits the tiny fixture model: the 512 byte symbols, a few merges,
// and the special tokens at the ids the tiny config uses (bos 998, eos 900).
const FIXTURE = fileURLToPath(new URL('./fixtures/clip/tiny-clip-text/', import.meta.url));
const tmpRoots: string[] = [];
afterAll(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tinyClipFolder(): string {
  const root = mkdtempSync(join(tmpdir(), 'clip-enc-'));
  tmpRoots.push(root);
  mkdirSync(join(root, 'text_encoder'));
  copyFileSync(join(FIXTURE, 'config.json'), join(root, 'text_encoder', 'config.json'));
  copyFileSync(join(FIXTURE, 'model.safetensors'), join(root, 'text_encoder', 'model.safetensors'));
  const vocab: Record<string, number> = {};
  const symbols = bytesToUnicode();
  symbols.forEach((s, i) => (vocab[s] = i));
  symbols.forEach((s, i) => (vocab[`${s}</w>`] = 256 + i));
  const merges = ['c a', 'ca t</w>', 'r e', 're d</w>'];
  merges.forEach((m, i) => (vocab[m.replace(' ', '')] = 512 + i));
  vocab['<|startoftext|>'] = 998;
  vocab['<|endoftext|>'] = 900;
  mkdirSync(join(root, 'tokenizer'));
  writeFileSync(join(root, 'tokenizer', 'vocab.json'), JSON.stringify(vocab));
  writeFileSync(join(root, 'tokenizer', 'merges.txt'), `#version: 0.2\n${merges.join('\n')}\n`);
  return root;
}

describe('ClipTextEncoder', () => {
  it('wraps a HF folder: frozen, HF keys, projected pooled vector, penultimate layer on request', () => {
    const path = tinyClipFolder();
    const last = createTextEncoder({ kind: 'clip', path }) as ClipTextEncoder;
    const pen = createTextEncoder({ kind: 'clip', path, layer: 'penultimate' }) as ClipTextEncoder;
    expect(last.trainableParameters().size).toBe(0);
    expect(last.contextLength).toBe(16);
    expect(last.dim).toBe(32);
    expect(last.pooledDim).toBe(24);
    const stored = Object.keys(readSafetensorsHeader(join(FIXTURE, 'model.safetensors')).tensors).filter((k) => !k.endsWith('position_ids'));
    expect([...last.stateDict().keys()].sort()).toEqual(stored.sort());
    expect(last.stateDict().has('text_projection.weight')).toBe(true);
    expect(last.tokenizer.encode('red cat')).toEqual([998, 515, 513, 900]);

    const e = last.encode(['red cat', 'cat']);
    const p = pen.encode(['red cat', 'cat']);
    expect(e.tokens.shape).toEqual([2, 16, 32]);
    expect(e.pooled.shape).toEqual([2, 24]);
    expect([...e.mask.dataSync().slice(0, 6)]).toEqual([1, 1, 1, 1, 0, 0]);

    // Independent path: the bare model on the same ids (HF pads with eos).
    const model = (last as unknown as { model: import('../src/models/text/clip_text_model.js').ClipTextModel }).model;
    const ids = tf.tensor2d([[998, 515, 513, 900, ...Array(12).fill(900)], [998, 513, 900, ...Array(13).fill(900)]], undefined, 'int32');
    const ref = model.forward(ids, { outputHiddenStates: true });
    expect(e.tokens.dataSync()).toEqual(ref.lastHiddenState.dataSync());
    expect(e.pooled.dataSync()).toEqual(ref.textEmbeds!.dataSync());
    expect(p.tokens.dataSync()).toEqual(ref.hiddenStates![1]!.dataSync());
    disposeClipTextOutput(ref);
    [e, p].forEach(disposeTextEncoding);
    ids.dispose();
    last.dispose();
    pen.dispose();
  });

  it('refuses a tokenizer whose ids do not fit the model', () => {
    const path = tinyClipFolder();
    const cfg = JSON.parse(readFileSync(join(path, 'text_encoder', 'config.json'), 'utf8'));
    writeFileSync(join(path, 'text_encoder', 'config.json'), JSON.stringify({ ...cfg, eos_token_id: 901 }));
    expect(() => createTextEncoder({ kind: 'clip', path })).toThrow(/eos_token_id 901 differs from the tokenizer's <\|endoftext\|> id 900/);
  });
});
