import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadRecipe } from '../../src/config/recipe.js';
import { readCaptionManifest } from '../../src/curate/captions.js';
import type { ManifestRow } from '../../src/curate/manifest.js';
import '../../src/curate/schema.js';
import { ImageFolderDataset, IMAGE_EXTENSIONS } from '../../src/data/image_folder.js';
import { extractFolder, type FeatureExtractor } from '../../src/eval/evaluate_features.js';
import { UsageError } from '../../src/util/errors.js';
import { crashSigns, runCli } from './run_cli.js';

/**
 * Every data-reading command against the committed broken-input corpus (test/fixtures/broken, written by
 * scripts/fixtures/make_broken.ts): every item is reported by name, nothing crashes, exit codes are right.
 */
const CORPUS = join(import.meta.dirname, '..', 'fixtures', 'broken');
const IMAGES = join(CORPUS, 'images');
const imageFiles = readdirSync(IMAGES).filter((f) => !/\.(txt|caption|json)$/.test(f));
const tmp = mkdtempSync(join(tmpdir(), 'sf-broken-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Expected curation outcome of each corpus image: kept (or a duplicate of a kept one), or rejected at this stage/code. */
const EXPECTED_REJECTION: Record<string, { stage: string; code?: string; reason: RegExp }> = {
  'zero_byte.png': { stage: 'decode', code: 'empty', reason: /0 bytes/ },
  'truncated.jpg': { stage: 'decode', reason: /premature end|corrupt|truncat/i },
  'truncated.png': { stage: 'decode', reason: /read error|truncat|corrupt/i },
  'not_an_image.jpg': { stage: 'decode', code: 'unsupported', reason: /unsupported image format/ },
  'random_bytes.webp': { stage: 'decode', code: 'unsupported', reason: /unsupported image format/ },
  'bomb.png': { stage: 'decode', code: 'pixel_limit', reason: /100000x100000 = 10000000000 pixels exceeds max_pixels 100000000/ },
  'bomb_121mp.png': { stage: 'decode', code: 'pixel_limit', reason: /11000x11000 .* exceeds max_pixels/ },
  'bomb.jpg': { stage: 'decode', code: 'pixel_limit', reason: /12000x12000 .* exceeds max_pixels/ },
  'bomb.webp': { stage: 'decode', code: 'pixel_limit', reason: /12000x12000 .* exceeds max_pixels/ },
  'bomb.gif': { stage: 'decode', code: 'pixel_limit', reason: /65535x65535 .* exceeds max_pixels/ },
  'alpha.png': { stage: 'caption', reason: /alpha\.txt is not valid UTF-8/ },
  'exif_rotated.jpg': { stage: 'caption', reason: /exif_rotated\.json is not valid JSON/ },
};

describe('broken-input corpus', () => {
  it('is small and complete', () => {
    let total = 0;
    for (const sub of readdirSync(CORPUS)) for (const f of readdirSync(join(CORPUS, sub))) total += readFileSync(join(CORPUS, sub, f)).length;
    expect(total).toBeLessThan(1024 * 1024);
    expect(imageFiles).toEqual(expect.arrayContaining(Object.keys(EXPECTED_REJECTION)));
  });

  it('scaleforge curate: exit 0, every file in the manifest by name with its reason, report escapes captions', async () => {
    const out = join(tmp, 'curated');
    const r = await runCli(['curate', IMAGES, '--out', out, '--size', '32', '--concurrency', '2']);
    expect(crashSigns(r.stdout + r.stderr)).toEqual([]);
    expect(r.code, r.stderr).toBe(0);
    const rows = readFileSync(join(out, 'manifest.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as ManifestRow);
    expect(rows.map((x) => x.source).sort()).toEqual([...imageFiles].sort());
    for (const row of rows) {
      const want = EXPECTED_REJECTION[row.source];
      if (want) {
        expect(row.decision, row.source).toMatchObject({ status: 'rejected', stage: want.stage });
        expect(row.decision.reasons?.join(' '), row.source).toMatch(want.reason);
        if (want.code) expect(row.analysis.ok ? undefined : row.analysis.code, row.source).toBe(want.code);
      } else {
        // The readable images (alpha/CMYK/16-bit/palette/lossless/EXIF-rotated) decode; they share one pattern,
        // so all but one are near duplicates of the one kept.
        expect(row.analysis.ok, row.source).toBe(true);
        expect(['kept', 'rejected'], row.source).toContain(row.decision.status);
        if (row.decision.status === 'rejected') expect(row.decision.stage, row.source).toMatch(/duplicate/);
      }
    }
    const rotated = rows.find((x) => x.source === 'exif_rotated.jpg')!;
    expect(rotated.analysis.ok && [rotated.analysis.width, rotated.analysis.height]).toEqual([32, 40]);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).not.toMatch(/<script>alert|"onerror=/);
    expect(r.stdout).toMatch(new RegExp(`kept \\d+ of ${imageFiles.length};`));
  });

  it('the training image-folder loader: every image loaded or skipped with its reason', async () => {
    const ds = await ImageFolderDataset.load({ root: IMAGES, size: 16, missingCaption: 'empty' });
    const loaded = Array.from({ length: ds.length }, (_, i) => ds.get(i).meta.file);
    const skipped = new Map(ds.skipped.map((s) => [s.path.slice(IMAGES.length + 1), s.reason]));
    const readable = imageFiles.filter((f) => (IMAGE_EXTENSIONS as readonly string[]).includes(f.split('.').pop()!));
    expect([...loaded, ...skipped.keys()].sort()).toEqual(readable.sort());
    for (const f of ['bomb.png', 'bomb_121mp.png', 'bomb.jpg', 'bomb.webp']) expect(skipped.get(f), f).toMatch(/exceeds max_pixels 100000000 \(possible decompression bomb\); not decoded/);
    expect(skipped.get('alpha.png')).toMatch(/alpha\.txt is not valid UTF-8/);
    for (const f of ['zero_byte.png', 'truncated.jpg', 'truncated.png', 'not_an_image.jpg', 'random_bytes.webp']) expect(skipped.get(f), f).toMatch(/cannot decode/);
    expect(loaded).toEqual(expect.arrayContaining(['good.png', 'good.jpg', 'cmyk.jpg', 'rgb16.png', 'exif_rotated.jpg', 'lossless.webp']));
  });

  it('scaleforge curate preview-aug: exit 0 and names every skipped file', async () => {
    const r = await runCli(['curate', 'preview-aug', '--input', IMAGES, '--size', '16', '--n', '2', '--out', join(tmp, 'aug.png')]);
    expect(crashSigns(r.stdout + r.stderr)).toEqual([]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['bomb.png', 'zero_byte.png', 'truncated.jpg', 'alpha.png', 'random_bytes.webp']) expect(r.stdout).toContain(`skipped ${join(IMAGES, f)}: `);
  });

  it('evaluation feature extraction (evaluate fid/kid/is/features on a folder): every image featured or skipped with its reason', async () => {
    // No network weights exist here: a stand-in extractor (mean colour) exercises the same folder reading.
    const meanColour: FeatureExtractor = {
      name: 'mean-colour',
      cacheKey: 'mean-colour',
      featureDim: 3,
      logitDim: 0,
      settings: {},
      async extract(images) {
        const out = new Float32Array(images.length * 3);
        images.forEach((im, i) => {
          for (let p = 0; p < im.width * im.height; p++) for (let c = 0; c < 3; c++) out[3 * i + c]! += im.rgb[3 * p + c]! / (im.width * im.height);
        });
        return { features: out };
      },
      dispose() {},
    };
    const set = await extractFolder(IMAGES, meanColour, { cache: null, progress: { write: () => true } });
    const skipped = new Map(set.skipped.map((s) => [s.file, s.reason]));
    const readable = imageFiles.filter((f) => (IMAGE_EXTENSIONS as readonly string[]).includes(f.split('.').pop()!));
    expect([...set.files, ...skipped.keys()].sort()).toEqual(readable.sort());
    for (const f of ['bomb.png', 'bomb_121mp.png', 'bomb.jpg', 'bomb.webp']) expect(skipped.get(f), f).toMatch(/exceeds the 100000000-pixel limit \(possible decompression bomb\); not decoded/);
    for (const f of ['zero_byte.png', 'truncated.jpg', 'truncated.png', 'not_an_image.jpg', 'random_bytes.webp']) expect(skipped.get(f), f).toMatch(/^cannot decode: /);
    expect(set.n).toBe(set.files.length);
    expect(Array.from(set.features).every(Number.isFinite)).toBe(true);
  });

  it('scaleforge inspect (.safetensors and .pth): exit 0 for valid files, an error naming the file for every broken one', async () => {
    for (const f of readdirSync(join(CORPUS, 'safetensors'))) {
      const file = join(CORPUS, 'safetensors', f);
      const r = await runCli(['inspect', file]);
      expect(crashSigns(r.stdout + r.stderr), f).toEqual([]);
      if (f === 'valid.safetensors' || f === 'proto_names.safetensors') {
        expect(r.code, `${f}: ${r.stderr}`).toBe(0);
      } else {
        expect(r.code, f).toBe(1);
        expect(r.stderr, f).toContain(`error: ${file}: `);
      }
    }
    for (const f of readdirSync(join(CORPUS, 'pytorch'))) {
      const file = join(CORPUS, 'pytorch', f);
      const r = await runCli(['inspect', file]);
      expect(crashSigns(r.stdout + r.stderr), f).toEqual([]);
      if (f === 'valid.pth') expect(r.code, `${f}: ${r.stderr}`).toBe(0);
      else {
        expect(r.code, `${f}: ${r.stderr}`).toBeGreaterThanOrEqual(1);
        expect(r.stderr, f).toContain(`error: ${file}: `);
      }
    }
    const refused = await runCli(['inspect', join(CORPUS, 'pytorch', 'os_system.pth')]);
    expect(refused.stderr).toMatch(/refusing to load global 'os\.system'/);
    const names = await runCli(['inspect', join(CORPUS, 'safetensors', 'proto_names.safetensors'), '--json']);
    expect(JSON.parse(names.stdout).tensors.map((t: { name: string }) => t.name)).toEqual(['__proto__', 'constructor']);
  });

  it('recipes: every malformed YAML is a usage error (exit 2) naming the file, refused before any work', async () => {
    for (const f of readdirSync(join(CORPUS, 'yaml'))) {
      const file = join(CORPUS, 'yaml', f);
      expect(() => loadRecipe(file), f).toThrow(UsageError);
      const r = await runCli(['curate', '--recipe', file, '--out', join(tmp, 'never')]);
      expect(crashSigns(r.stdout + r.stderr), f).toEqual([]);
      expect(r.code, f).toBe(2);
      expect(r.stderr, f).toContain(`broken/yaml/${f}`);
    }
    expect(Object.keys(Object.prototype)).toEqual([]);
  });

  it('caption manifests: a clear error naming file:line, or captions that never point outside the folder', async () => {
    const dir = join(CORPUS, 'manifests');
    for (const f of readdirSync(dir)) {
      const file = join(dir, f);
      let result: Map<string, string> | undefined;
      try {
        result = await readCaptionManifest(file);
      } catch (e) {
        expect(e, f).toBeInstanceOf(UsageError);
        expect((e as Error).message, f).toContain(file);
        continue;
      }
      // Names outside the manifest's folder are only keys that match no image in it; nothing is read or written there.
      expect(f).toBe('traversal.jsonl');
      expect([...result.keys()].every((k) => !k.startsWith(dir))).toBe(true);
    }
  });

  it('metadata.jsonl in a training folder: a broken line stops loading with file:line (exit 2)', async () => {
    for (const f of ['null_line.jsonl', 'not_json.jsonl', 'wrong_types.jsonl', 'not_utf8.jsonl']) {
      const dir = mkdtempSync(join(tmp, 'meta-'));
      copyFileSync(join(IMAGES, 'good.png'), join(dir, 'good.png'));
      copyFileSync(join(CORPUS, 'manifests', f), join(dir, 'metadata.jsonl'));
      const r = await runCli(['curate', 'preview-aug', '--input', dir, '--size', '16', '--n', '1', '--out', join(dir, 'aug.png')]);
      expect(crashSigns(r.stdout + r.stderr), f).toEqual([]);
      expect(r.code, `${f}: ${r.stderr}`).toBe(2);
      expect(r.stderr, f).toContain(join(dir, 'metadata.jsonl'));
    }
  });
});
