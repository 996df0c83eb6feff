import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { curateConfigFromArgs } from '../src/cli/commands/curate.js';
import { main } from '../src/cli/main.js';
import { loadRecipe, parseRecipe } from '../src/config/recipe.js';
import { mergeShards } from '../src/curate/merge.js';
import { MANIFEST_FILE, runCurate, type CurateResult } from '../src/curate/pipeline.js';
import { shardOf, shardOutputDir } from '../src/curate/scan.js';
import { CurateRecipeSchema, curateConfig, type CurateConfig } from '../src/curate/schema.js';
import { ImageFolderDataset } from '../src/data/image_folder.js';
import { makeFixtureFolder, tempDir, type FixtureSet } from './curate_fixtures.js';

let fx: FixtureSet;
const quiet = { write: () => true };

function config(over: Partial<Parameters<typeof curateConfig>[0]> = {}): CurateConfig {
  return curateConfig({
    input: { paths: [fx.dir] },
    resize: { size: 32, mode: 'border' },
    filters: { min_brightness: 0.1, min_entropy: 1 },
    output: { image_format: 'png' },
    concurrency: 2,
    ...over,
  });
}

const decisions = (r: CurateResult) => Object.fromEntries(r.rows.map((row) => [row.source, row.decision.stage ?? row.decision.status]));

/** key → (image bytes, caption) of a folder output. */
function folderContents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(join(dir, 'images')).sort()) out[f] = readFileSync(join(dir, 'images', f)).toString('base64');
  return out;
}

beforeAll(async () => {
  fx = await makeFixtureFolder();
});

describe('curate pipeline', () => {
  let full: CurateResult;
  let fullDir: string;

  beforeAll(async () => {
    fullDir = tempDir('curate-out');
    full = await runCurate(config(), { outDir: fullDir, progressStream: quiet });
  });

  it('decides every file with the expected stage', () => {
    expect(decisions(full)).toEqual({
      'a.png': 'kept',
      'sub/a_lossless.webp': 'exact_duplicate',
      'a_small.jpg': 'near_duplicate',
      'b.png': 'kept',
      'b_crop.jpg': 'near_duplicate',
      'c_cmyk.jpg': 'kept',
      'd_rotated.jpg': 'kept',
      'e_alpha.png': 'kept',
      'corrupt.jpg': 'decode',
      'truncated.jpg': 'decode',
      'empty.png': 'decode',
      'notes.png': 'decode',
      'dark.png': 'filter',
      'flat.png': 'filter',
    });
    const byId = new Map(full.rows.map((r) => [r.source, r]));
    expect(byId.get('a_small.jpg')!.decision.duplicateOf).toBe('a.png');
    expect(byId.get('dark.png')!.decision.filters).toEqual(['too_dark']);
    expect(byId.get('flat.png')!.decision.filters).toEqual(['low_information']);
    const rotated = byId.get('d_rotated.jpg')!.analysis;
    expect(rotated.ok && [rotated.width, rotated.height]).toEqual([32, 64]);
    expect(full.groups).toEqual([
      { kind: 'near', kept: 'a.png', members: ['a.png', 'a_small.jpg', 'sub/a_lossless.webp'] },
      { kind: 'near', kept: 'b.png', members: ['b.png', 'b_crop.jpg'] },
    ]);
    expect(byId.get('sub/a_lossless.webp')!.decision).toMatchObject({ duplicateOf: 'a.png', group: 0, reasons: ['same pixels as a.png'] });
    expect(full.counts).toMatchObject({ scanned: 14, inShard: 14, analysed: 14, reused: 0, kept: 5 });
    expect(full.counts.rejected).toEqual({ decode: 4, filter: 2, exact_duplicate: 1, near_duplicate: 2 });
  });

  it('writes a folder the training image-folder dataset reads, with cleaned captions', async () => {
    const files = readdirSync(join(fullDir, 'images'));
    expect(files.filter((f) => f.endsWith('.png'))).toHaveLength(5);
    for (const f of files.filter((x) => x.endsWith('.png'))) {
      const m = await sharp(join(fullDir, 'images', f)).metadata();
      expect([m.width, m.height]).toEqual([32, 32]);
    }
    const ds = await ImageFolderDataset.load({ root: join(fullDir, 'images'), size: 32, missingCaption: 'empty' });
    expect(ds.length).toBe(5);
    expect(ds.skipped).toEqual([]);
    const captions = Array.from({ length: ds.length }, (_, i) => ds.get(i).caption).sort();
    expect(captions).toEqual(['', '', 'a photo & a test, sunset', 'cmyk <print>', 'second image']);
    // The alpha image's transparent left half was matted onto white before the resize.
    const alphaKey = full.rows.find((r) => r.source === 'e_alpha.png')!.decision.key!;
    const { data } = await sharp(join(fullDir, 'images', `${alphaKey}.png`)).raw().toBuffer({ resolveWithObject: true });
    expect([...data.subarray((16 * 32 + 2) * 3, (16 * 32 + 2) * 3 + 3)]).toEqual([255, 255, 255]);
  });

  it('writes manifest.jsonl and a report with thumbnails and histograms', () => {
    const lines = readFileSync(join(fullDir, MANIFEST_FILE), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(14);
    const a = lines.find((l) => l.source === 'a.png');
    expect(a.decision.status).toBe('kept');
    expect(a.analysis.pixelHash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.analysis.perceptualHash).toMatch(/^[0-9a-f]{16}$/);
    expect(a.caption).toBe('a photo & a test, sunset');
    const report = JSON.parse(readFileSync(join(fullDir, 'report.json'), 'utf8'));
    expect(report.reasons.decode).toEqual({ unsupported: 2, empty: 1, corrupt: 1 });
    expect(report.reasons.filter).toEqual({ too_dark: 1, low_information: 1 });
    expect(report.histograms[0].counts.reduce((s: number, c: number) => s + c, 0)).toBe(10);
    const html = readFileSync(join(fullDir, 'report.html'), 'utf8');
    // 5 duplicate-group members + the 2 filtered images; the 4 undecodable files get a placeholder.
    expect(html.match(/data:image\/jpeg;base64,/g)).toHaveLength(7);
    expect(html.match(/class="nothumb"/g)).toHaveLength(4);
    expect(html.match(/<svg /g)).toHaveLength(3);
    expect(html).toContain('b_crop.jpg');
  });

  it('resumes: a run stopped halfway plus a re-run equals one full run, and work is not redone', async () => {
    const dir = tempDir('curate-resume');
    const first = await runCurate(config(), { outDir: dir, progressStream: quiet, stopAfter: 6 });
    expect(first.complete).toBe(false);
    expect(first.counts.analysed).toBe(6);
    const stateFile = readdirSync(join(dir, '.curate')).find((f) => f.startsWith('state-'))!;
    appendFileSync(join(dir, '.curate', stateFile), '{"sha256":"torn li'); // a crash mid-append
    const second = await runCurate(config(), { outDir: dir, progressStream: quiet });
    expect(second.complete).toBe(true);
    expect(second.counts.reused).toBe(6);
    expect(second.counts.analysed).toBe(8);
    expect(decisions(second)).toEqual(decisions(full));
    expect(folderContents(dir)).toEqual(folderContents(fullDir));
    const third = await runCurate(config(), { outDir: dir, progressStream: quiet });
    expect([third.counts.analysed, third.counts.reused]).toEqual([0, 14]);
    expect(third.write).toEqual({ written: 0, unchanged: 5, removed: 0 });
    // Tightening a filter needs no decoding, and removes the newly rejected output.
    const stricter = await runCurate(config({ filters: { min_brightness: 0.1, min_entropy: 1, min_side: 48 } }), { outDir: dir, progressStream: quiet });
    expect(stricter.counts.analysed).toBe(0);
    expect(stricter.write.removed).toBeGreaterThan(0);
    expect(readdirSync(join(dir, 'images')).filter((f) => f.endsWith('.png'))).toHaveLength(stricter.counts.kept);
  });

  it('gives the same result sharded and merged as in one run', async () => {
    const ids = full.rows.map((r) => r.source);
    // Three shards put a duplicate pair in different shards, so only the merge can find it.
    expect(shardOf('a.png', 3)).not.toBe(shardOf('a_small.jpg', 3));
    const root = tempDir('curate-shards');
    const dirs: string[] = [];
    for (let index = 0; index < 3; index++) {
      const shard = { index, count: 3 };
      const dir = shardOutputDir(root, shard);
      const r = await runCurate(config(), { outDir: dir, shard, progressStream: quiet });
      expect(r.rows.every((row) => shardOf(row.source, 3) === index)).toBe(true);
      dirs.push(dir);
    }
    const merged = await mergeShards(dirs, join(root, 'merged'));
    expect(merged.rows.map((r) => r.source).sort()).toEqual([...ids].sort());
    expect(decisions(merged)).toEqual(decisions(full));
    expect(merged.groups).toEqual(full.groups);
    expect(folderContents(join(root, 'merged'))).toEqual(folderContents(fullDir));
    await expect(mergeShards(dirs.slice(1), join(root, 'm2'))).rejects.toThrow(/shards 0 of 3 are missing/);
  });

  it('writes WebDataset shards readable by tar', async () => {
    const dir = tempDir('curate-wds');
    const r = await runCurate(config({ output: { format: 'webdataset', image_format: 'jpg', samples_per_shard: 2 } }), { outDir: dir, progressStream: quiet });
    expect(readdirSync(dir).filter((f) => f.endsWith('.tar')).sort()).toEqual(['00000.tar', '00001.tar', '00002.tar']);
    const keys: string[] = [];
    for (const t of ['00000.tar', '00001.tar', '00002.tar']) {
      const names = execFileSync('tar', ['-tf', join(dir, t)], { encoding: 'utf8' }).trim().split('\n');
      const shardKeys = [...new Set(names.map((n) => n.split('.')[0]!))];
      for (const k of shardKeys) expect(names.filter((n) => n.startsWith(`${k}.`))).toEqual([`${k}.jpg`, `${k}.json`, `${k}.txt`]);
      keys.push(...shardKeys);
    }
    expect(keys).toEqual([...keys].sort());
    expect(keys).toHaveLength(5);
    const x = join(dir, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xf', join(dir, '00000.tar'), '-C', x]);
    const meta = JSON.parse(readFileSync(join(x, `${keys[0]}.json`), 'utf8'));
    const row = r.rows.find((row) => row.decision.key === keys[0])!;
    expect(meta).toMatchObject({ key: keys[0], source: row.source, width: 32, height: 32, caption: row.caption });
    expect(readFileSync(join(x, `${keys[0]}.txt`), 'utf8')).toBe(row.caption);
    expect((await sharp(join(x, `${keys[0]}.jpg`)).metadata()).format).toBe('jpeg');
    const again = await runCurate(config({ output: { format: 'webdataset', image_format: 'jpg', samples_per_shard: 2 } }), { outDir: dir, progressStream: quiet });
    expect(again.write).toEqual({ written: 0, unchanged: 5, removed: 0, shards: ['00000.tar', '00001.tar', '00002.tar'] });
  });

  it('never modifies the source folder', () => {
    const now = readdirSync(fx.dir, { recursive: true }).map(String).sort();
    expect(now).toEqual([...Object.keys(fx.files), 'a.txt', 'b.caption', 'c_cmyk.json', 'sub'].sort());
    expect(existsSync(join(fx.dir, '.curate'))).toBe(false);
  });
});

describe('curate command', () => {
  async function run(argv: string[]): Promise<{ code: number; err: string }> {
    let err = '';
    const origErr = process.stderr.write.bind(process.stderr);
    const origOut = process.stdout.write.bind(process.stdout);
    process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    process.exitCode = undefined;
    try {
      const code = await main(argv);
      return { code, err };
    } finally {
      process.stderr.write = origErr;
      process.stdout.write = origOut;
      process.exitCode = undefined;
    }
  }

  it('runs the flag form and the merge sub-command', async () => {
    const out = tempDir('curate-cli');
    const r = await run(['curate', fx.dir, '--out', out, '--size', '24', '--mode', 'center_crop', '--image-format', 'webp', '--concurrency', '2']);
    expect(r).toEqual({ code: 0, err: expect.any(String) });
    const imgs = readdirSync(join(out, 'images')).filter((f) => f.endsWith('.webp'));
    expect(imgs).toHaveLength(7); // no quality filters in the flag form: dark.png and flat.png stay
    const m = await sharp(join(out, 'images', imgs[0]!)).metadata();
    expect([m.width, m.height]).toEqual([24, 24]);
    const root = tempDir('curate-cli-shards');
    for (const i of ['0', '1']) {
      expect((await run(['curate', fx.dir, '--out', root, '--num-shards', '2', '--shard-index', i, '--concurrency', '2'])).code).toBe(0);
    }
    const merged = await run(['curate', 'merge', join(root, 'shard-00000-of-00002'), join(root, 'shard-00001-of-00002'), '--out', join(root, 'all')]);
    expect(merged.code).toBe(0);
    expect(readFileSync(join(root, 'all', MANIFEST_FILE), 'utf8').trim().split('\n')).toHaveLength(14);
  });

  it('loads the shipped recipe with its documented settings', () => {
    const cfg = parseRecipe(CurateRecipeSchema, loadRecipe('curate'));
    expect(cfg.resize).toEqual({ size: 512, mode: 'border', only_if_bigger: false, border_colour: '#ffffff' });
    expect(cfg.dedup).toEqual({ exact: true, near: true, hash: 'phash', threshold: 10 });
    expect(cfg.output.format).toBe('folder');
    const flags = curateConfigFromArgs({ recipe: 'curate', inputs: [fx.dir], size: 64, out: '/tmp/o', set: ['filters.min_side=0'] });
    expect([flags.input.paths, flags.resize.size, flags.resize.mode, flags.output.dir, flags.filters.min_side]).toEqual([[fx.dir], 64, 'border', '/tmp/o', 0]);
  });

  it('exits 2 with a clear message on bad usage', async () => {
    const missing = await run(['curate', join(fx.dir, 'no-such-folder'), '--out', tempDir('x')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/no-such-folder does not exist/);
    expect((await run(['curate', fx.dir])).err).toMatch(/needs an output folder/);
    const recipe = join(tempDir('recipe'), 'bad.yaml');
    writeFileSync(recipe, `kind: curate\ninput: { paths: [${JSON.stringify(fx.dir)}] }\nresize: { size: 32, mode: stretch }\n`);
    const bad = await run(['curate', '--recipe', recipe, '--out', tempDir('y')]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/bad\.yaml:3.*resize\.mode/s);
    expect((await run(['curate', 'merge', tempDir('empty'), '--out', tempDir('z')])).code).toBe(2);
  });
});
