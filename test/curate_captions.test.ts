import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  captionStats,
  cleanCaption,
  findCaption,
  htmlUnescape,
  parseCsv,
  readCaptionManifest,
  withTrigger,
} from '../src/curate/captions.js';
import { resolveShard, scanInputs, shardOf, shardOutputDir } from '../src/curate/scan.js';
import { UsageError } from '../src/util/errors.js';
import { tempDir } from './curate_fixtures.js';

describe('curate captions', () => {
  it('unescapes HTML, collapses whitespace and drops repeated tags', () => {
    expect(htmlUnescape('Tom &amp; Jerry &lt;3 &#39;hi&#x27; &quot;x&quot; &bogus; &#0;')).toBe(`Tom & Jerry <3 'hi' "x" &bogus; &#0;`);
    expect(cleanCaption('  a \n photo\tof  a dog  ')).toBe('a photo of a dog');
    expect(cleanCaption('1girl, Solo, smile,, solo , 1girl,blue sky')).toBe('1girl, Solo, smile, blue sky');
    expect(cleanCaption('fish &amp; chips, Fish &amp; Chips')).toBe('fish & chips');
  });

  it('puts the trigger token first exactly once', () => {
    expect(withTrigger('a dog', 'sks')).toBe('sks, a dog');
    expect(withTrigger('sks, a dog', 'sks')).toBe('sks, a dog');
    expect(withTrigger('', 'sks')).toBe('sks');
    expect(withTrigger('a dog', undefined)).toBe('a dog');
  });

  it('parses quoted CSV and reads CSV and JSONL manifests relative to their folder', async () => {
    expect(parseCsv('file,text\r\n"a,b.png","say ""hi""\nthere"\nc.png,plain\n')).toEqual([
      ['file', 'text'],
      ['a,b.png', 'say "hi"\nthere'],
      ['c.png', 'plain'],
    ]);
    const dir = tempDir('caps');
    writeFileSync(join(dir, 'm.csv'), '\ufefffile_name,caption\nimg/x.png,an x\n');
    writeFileSync(join(dir, 'm.jsonl'), '{"file_name":"y.png","text":"a y"}\n\n{"path":"sub\\\\z.png","caption":"a z"}\n');
    expect([...(await readCaptionManifest(join(dir, 'm.csv'))).entries()]).toEqual([[resolve(dir, 'img/x.png'), 'an x']]);
    expect([...(await readCaptionManifest(join(dir, 'm.jsonl'))).entries()]).toEqual([
      [resolve(dir, 'y.png'), 'a y'],
      [resolve(dir, 'sub/z.png'), 'a z'],
    ]);
    writeFileSync(join(dir, 'bad.jsonl'), '{"file_name":"y.png"}\n');
    await expect(readCaptionManifest(join(dir, 'bad.jsonl'))).rejects.toThrow(/bad\.jsonl:1: expected a file column/);
    await expect(readCaptionManifest(join(dir, 'missing.csv'))).rejects.toBeInstanceOf(UsageError);
  });

  it('prefers sidecars in the configured order, then the manifest', async () => {
    const dir = tempDir('side');
    const src = (name: string) => ({ abs: join(dir, name), id: name });
    writeFileSync(join(dir, 'a.txt'), 'from txt');
    writeFileSync(join(dir, 'a.caption'), 'from caption');
    writeFileSync(join(dir, 'b.json'), JSON.stringify({ text: 'from json' }));
    writeFileSync(join(dir, 'c.txt'), Buffer.from([0xff, 0xfe, 0x00]));
    const manifest = new Map([[join(dir, 'd.png'), 'from manifest'], [join(dir, 'a.png'), 'ignored']]);
    expect(await findCaption(src('a.png'), ['txt', 'caption', 'json'], manifest)).toEqual({ text: 'from txt', source: 'sidecar' });
    expect(await findCaption(src('a.png'), ['caption', 'txt'], manifest)).toEqual({ text: 'from caption', source: 'sidecar' });
    expect(await findCaption(src('b.png'), ['txt', 'json'], manifest)).toEqual({ text: 'from json', source: 'sidecar' });
    expect((await findCaption(src('c.png'), ['txt'], manifest)).error).toMatch(/not valid UTF-8/);
    expect(await findCaption(src('d.png'), ['txt'], manifest)).toEqual({ text: 'from manifest', source: 'manifest' });
    expect(await findCaption(src('e.png'), ['txt'], manifest)).toEqual({ text: '', source: 'none' });
  });

  it('summarises captions', () => {
    const s = captionStats([
      { text: 'a, b, c', source: 'sidecar' },
      { text: 'a, b', source: 'manifest' },
      { text: '', source: 'none' },
    ]);
    expect(s.count).toBe(3);
    expect(s.empty).toBe(1);
    expect(s.bySource).toEqual({ sidecar: 1, manifest: 1, none: 1 });
    expect(s.words).toEqual({ mean: 5 / 3, min: 0, max: 3 });
    expect(s.topTokens).toEqual([
      { token: 'a', count: 2 },
      { token: 'b', count: 2 },
      { token: 'c', count: 1 },
    ]);
  });
});

describe('curate scan and shards', () => {
  it('follows include/exclude globs and names files relative to their input', async () => {
    const dir = tempDir('scan');
    mkdirSync(join(dir, 'keep/deep'), { recursive: true });
    mkdirSync(join(dir, 'thumbs'));
    for (const f of ['x.JPG', 'keep/deep/y.png', 'thumbs/t.png', 'notes.txt', 'keep/z.webp']) writeFileSync(join(dir, f), 'x');
    const found = await scanInputs({ paths: [dir], include: ['**/*.{jpg,png,webp}'], exclude: ['thumbs/**'] });
    expect(found.map((f) => f.id)).toEqual(['keep/deep/y.png', 'keep/z.webp', 'x.JPG']);
    const two = await scanInputs({ paths: [join(dir, 'keep'), join(dir, 'x.JPG')], include: ['**/*.png'], exclude: [] });
    expect(two.map((f) => f.id)).toEqual(['0/deep/y.png', '1/x.JPG']);
    const skipping = await scanInputs({ paths: [dir], include: ['**/*.{jpg,png,webp}'], exclude: [], skipDirs: [join(dir, 'keep'), '/elsewhere'] });
    expect(skipping.map((f) => f.id)).toEqual(['thumbs/t.png', 'x.JPG']);
    await expect(scanInputs({ paths: [join(dir, 'nope')], include: ['**/*'], exclude: [] })).rejects.toThrow(/nope does not exist/);
  });

  it('splits by a hash of the id: stable when files are added, roughly balanced', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `img/${i}.jpg`);
    const before = ids.map((id) => shardOf(id, 4));
    const counts = [0, 0, 0, 0];
    for (const s of before) counts[s]!++;
    for (const c of counts) expect(Math.abs(c - 500)).toBeLessThan(80);
    const more = [...ids, 'new/a.jpg', 'new/b.jpg'];
    expect(more.slice(0, 2000).map((id) => shardOf(id, 4))).toEqual(before);
  });

  it('takes the shard index from flags or array-job variables', () => {
    expect(resolveShard({})).toEqual({ index: 0, count: 1 });
    expect(resolveShard({ shardIndex: 2, numShards: 3 })).toEqual({ index: 2, count: 3 });
    expect(resolveShard({ numShards: 4 }, { JOB_COMPLETION_INDEX: '3' })).toEqual({ index: 3, count: 4 });
    expect(resolveShard({ numShards: 4 }, { SLURM_ARRAY_TASK_ID: '1' })).toEqual({ index: 1, count: 4 });
    expect(resolveShard({ numShards: 4 }, { AWS_BATCH_JOB_ARRAY_INDEX: '0' })).toEqual({ index: 0, count: 4 });
    expect(() => resolveShard({ numShards: 4 }, {})).toThrow(UsageError);
    expect(() => resolveShard({ numShards: 4 }, { JOB_COMPLETION_INDEX: '4' })).toThrow(/out of range/);
    expect(() => resolveShard({ numShards: 2 }, { SLURM_ARRAY_TASK_ID: 'x' })).toThrow(/SLURM_ARRAY_TASK_ID/);
    expect(shardOutputDir('/o', { index: 1, count: 3 })).toBe(resolve('/o/shard-00001-of-00003'));
    expect(shardOutputDir('/o', { index: 0, count: 1 })).toBe('/o');
  });
});
