import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mergeShards } from '../../src/curate/merge.js';
import { MANIFEST_FILE, runCurate } from '../../src/curate/pipeline.js';
import { curateConfig, type CurateConfig } from '../../src/curate/schema.js';
import { sampleMembers } from '../../src/curate/webdataset.js';
import { JobError } from '../../src/util/errors.js';
import { patternRaw } from './broken_inputs.js';

/**
 * Nothing a dataset, a manifest or a caption says can make curation write outside its output folder (or publish
 * a file from elsewhere into it), and the HTML report shows every name and caption as text, never as markup.
 */
const tmp = mkdtempSync(join(tmpdir(), 'sf-escape-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const MARKUP_NAMES = ['<script>alert(1).png', '"onerror=alert(2) x.png', "<img src=x onerror='alert(3)'>.png", 'plain & simple.png'];
const MARKUP_CAPTION = 'a cat, <script>alert(4)</script>, "onerror=alert(5), <img src=x onerror=alert(6)>';
const input = join(tmp, 'in');

async function png(width: number, height: number, shift = 0): Promise<Buffer> {
  const raw = patternRaw(width, height).map((v, i) => (i % 3 === 0 ? (v + shift) & 255 : v));
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

beforeAll(async () => {
  mkdirSync(input);
  // Distinct pictures so some are kept, one rejected by a filter (too small), one an exact duplicate.
  for (const [k, name] of MARKUP_NAMES.entries()) {
    writeFileSync(join(input, name), await png(48, 40, k * 60));
    writeFileSync(join(input, name.replace(/\.png$/, '.txt')), MARKUP_CAPTION);
  }
  writeFileSync(join(input, '<b>tiny.png'), await png(8, 8));
  writeFileSync(join(input, '<i>copy.png'), await png(48, 40, 0));
});

const config = (out: string, over: Partial<Parameters<typeof curateConfig>[0]> = {}): CurateConfig =>
  curateConfig({ input: { paths: [input] }, resize: { size: 32, mode: 'border' }, filters: { min_side: 16 }, output: { dir: out, image_format: 'png' }, concurrency: 2, ...over });

describe('HTML report', () => {
  it('escapes every file name and caption', async () => {
    const out = join(tmp, 'report');
    const r = await runCurate(config(out), { outDir: out });
    expect(r.counts.kept).toBeGreaterThan(0);
    expect(r.counts.rejected.filter).toBe(1);
    expect(r.groups.length).toBeGreaterThan(0);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    // The only tags are the report's own, with no event-handler attribute and images only from data: URIs.
    const tags = [...html.matchAll(/<\/?([a-zA-Z][\w-]*)([^>]*)>/g)];
    const own = new Set(['html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'table', 'tr', 'td', 'th', 'p', 'div', 'img', 'br', 'figure', 'figcaption', 'svg', 'rect', 'text']);
    expect(tags.map((t) => t[1]!.toLowerCase()).filter((t) => !own.has(t))).toEqual([]);
    expect(tags.filter((t) => /\son\w+\s*=/i.test(t[2]!)).map((t) => t[0])).toEqual([]);
    expect(tags.filter((t) => t[1] === 'img' && !/^ src="data:image\/jpeg;base64,[A-Za-z0-9+/=]+" alt=""$/.test(t[2]!)).map((t) => t[0])).toEqual([]);
    expect(html).not.toMatch(/<script|"onerror/i);
    // …and the names are all there, as text.
    expect(html).toContain('&#60;b&#62;tiny.png'); // rejected by the filter
    expect(html).toContain('&#60;i&#62;copy.png'); // in a duplicate group
    expect(html).toContain('&#60;script&#62;alert(4)&#60;/script&#62;'); // a caption tag
    expect(html).toContain('&#34;onerror=alert(5)');
  });
});

describe('output folder containment', () => {
  it('sample keys and tar member names cannot name a path: ../, absolute, NUL, Windows ..\\', () => {
    const data = new Uint8Array(1);
    for (const key of ['../x', '/abs', 'a\0b', '..\\..\\w', 'a/b', '', '.', '..', 'a\nb']) {
      expect(() => sampleMembers({ key, fields: { png: data } }), JSON.stringify(key)).toThrow(JobError);
    }
    for (const ext of ['png/../../x', '../x', 'a\\b', 'a\0', '..', 'a..b']) {
      expect(() => sampleMembers({ key: 'k', fields: { [ext]: data } }), JSON.stringify(ext)).toThrow(JobError);
    }
    expect(sampleMembers({ key: 'k', fields: { 'seg.png': data, _hidden: data } }).map((m) => m.name)).toEqual(['k.seg.png']);
  });

  it('curate merge refuses manifest rows whose key or cached path would leave the folder', async () => {
    const shard = join(tmp, 'shard');
    await runCurate(config(shard), { outDir: shard });
    const manifest = join(shard, MANIFEST_FILE);
    const original = readFileSync(manifest, 'utf8');
    const lines = original.trim().split('\n');
    const k = lines.findIndex((l) => JSON.parse(l).analysis.ok);
    const tamper = (edit: (row: { analysis: { pixelHash: string; cached: { path: string } } }) => void) => {
      const row = JSON.parse(lines[k]!);
      edit(row);
      writeFileSync(manifest, [...lines.slice(0, k), JSON.stringify(row), ...lines.slice(k + 1)].join('\n'));
    };
    const victimDir = join(tmp, 'victim');
    mkdirSync(victimDir);
    writeFileSync(join(victimDir, 'secret.txt'), 'secret');
    const attempts: [string, (row: { analysis: { pixelHash: string; cached: { path: string } } }) => void][] = [
      ['pixelHash', (row) => (row.analysis.pixelHash = `../../../${victimDir}/pwned`)],
      ['cached.path', (row) => (row.analysis.cached.path = '../victim/secret.txt')],
      ['cached.path', (row) => (row.analysis.cached.path = '/etc/passwd')],
      ['cached.path', (row) => (row.analysis.cached.path = `../../../../../../..${victimDir}/secret.txt`)],
    ];
    for (const [field, edit] of attempts) {
      tamper(edit);
      const err = await mergeShards([shard], join(tmp, 'merged')).catch((e: unknown) => e);
      expect(err, field).toBeInstanceOf(JobError);
      expect((err as Error).message).toContain(`${manifest}:${k + 1}: not a curate manifest row: analysis.`);
    }
    expect(readdirSync(victimDir)).toEqual(['secret.txt']);
    writeFileSync(manifest, original);
    const merged = await mergeShards([shard], join(tmp, 'merged'));
    expect(merged.counts.kept).toBeGreaterThan(0);
  });

  it('a state file naming a cached image outside the cache is not trusted: the file is analysed again', async () => {
    const out = join(tmp, 'state');
    await runCurate(config(out), { outDir: out });
    const state = join(out, '.curate', readdirSync(join(out, '.curate')).find((f) => f.startsWith('state-'))!);
    const lines = readFileSync(state, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    writeFileSync(join(tmp, 'outside.png'), await png(48, 40, 99));
    for (const l of lines) if (l.analysis.ok) l.analysis.cached.path = '../outside.png';
    writeFileSync(state, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const again = await runCurate(config(out), { outDir: out });
    // Every distinct file is decoded again (a byte-identical copy then reuses that fresh analysis).
    expect(again.counts.analysed).toBe(lines.filter((l) => l.analysis.ok).length);
    expect(again.counts.analysed + again.counts.reused).toBe(again.rows.length);
    const fresh = readFileSync(state, 'utf8').trim().split('\n').slice(lines.length).map((l) => JSON.parse(l));
    expect(fresh.every((l) => l.analysis.cached.path.startsWith('.curate/cache/'))).toBe(true);
  });

  it('a symlinked images/ or .curate/ folder is refused; symlinked files in the output are replaced, not written through', async () => {
    const victimDir = join(tmp, 'victim2');
    mkdirSync(victimDir);
    writeFileSync(join(victimDir, 'keep.txt'), 'precious');

    const linkedImages = join(tmp, 'linked-images');
    mkdirSync(linkedImages);
    symlinkSync(victimDir, join(linkedImages, 'images'));
    await expect(runCurate(config(linkedImages), { outDir: linkedImages })).rejects.toThrow(/images is a symbolic link/);

    const linkedState = join(tmp, 'linked-state');
    mkdirSync(linkedState);
    symlinkSync(victimDir, join(linkedState, '.curate'));
    await expect(runCurate(config(linkedState), { outDir: linkedState })).rejects.toThrow(/\.curate is a symbolic link/);
    expect(readdirSync(victimDir)).toEqual(['keep.txt']);

    // Folder output: every caption file and image replaced by a link to the victim; a re-run writes real files.
    const out = join(tmp, 'links');
    await runCurate(config(out), { outDir: out });
    const images = join(out, 'images');
    for (const f of readdirSync(images)) {
      unlinkSync(join(images, f));
      symlinkSync(join(victimDir, 'keep.txt'), join(images, f));
    }
    await runCurate(config(out), { outDir: out });
    for (const f of readdirSync(images)) expect(lstatSync(join(images, f)).isFile(), f).toBe(true);
    expect(readFileSync(join(victimDir, 'keep.txt'), 'utf8')).toBe('precious');

    // WebDataset output: a shard replaced by a link is rewritten as a file of its own.
    const wds = join(tmp, 'wds');
    const cfg = config(wds, { output: { dir: wds, image_format: 'png', format: 'webdataset' } });
    await runCurate(cfg, { outDir: wds });
    unlinkSync(join(wds, '00000.tar'));
    symlinkSync(join(victimDir, 'keep.txt'), join(wds, '00000.tar'));
    await runCurate(cfg, { outDir: wds });
    expect(lstatSync(join(wds, '00000.tar')).isFile()).toBe(true);
    expect(readFileSync(join(victimDir, 'keep.txt'), 'utf8')).toBe('precious');
    expect(existsSync(join(victimDir, 'images'))).toBe(false);
  });

  it('caption-manifest names with ../, absolute paths and ..\\ match nothing outside the inputs', async () => {
    const out = join(tmp, 'manifest-names');
    const manifest = join(tmp, 'captions.jsonl');
    const outsider = join(tmp, 'outsider.png');
    writeFileSync(outsider, await png(48, 40, 7));
    writeFileSync(
      manifest,
      [
        { file_name: 'in/plain & simple.png', text: 'from the manifest' },
        { file_name: '../../../../etc/passwd', text: 'x' },
        { file_name: outsider, text: 'x' },
        { file_name: 'in\\..\\..\\outsider.png', text: 'x' },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );
    const r = await runCurate(config(out, { captions: { manifest, sidecar: [] } }), { outDir: out });
    expect(r.rows.map((x) => x.source).sort()).toEqual(readdirSync(input).filter((f) => f.endsWith('.png')).sort());
    expect(r.rows.find((x) => x.source === 'plain & simple.png')!.caption).toBe('from the manifest');
    expect(readdirSync(join(out, 'images')).every((f) => /^[0-9a-f]{16}\.(png|txt)$/.test(f))).toBe(true);
  });
});
