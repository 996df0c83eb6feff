import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { BucketSampler, assignBuckets, bucketResolutions, formatBucketReport, selectBucket } from '../src/data/buckets.js';
import { applyCaptionOps, checkTriggerWord, mentionsTrigger } from '../src/data/caption_ops.js';
import { kohyaBucketInfo, readBrandImage, scanBrandFolder, tagFrequency } from '../src/data/brand_folder.js';
import { sampleMembers, tarBytes } from '../src/curate/webdataset.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

interface BucketCase {
  max_area: number;
  min_side: number;
  max_side: number;
  step: number;
  resolutions: [number, number][];
  upscale: { size: [number, number]; bucket: [number, number]; resized: [number, number] }[];
  no_upscale: { size: [number, number]; bucket: [number, number]; resized: [number, number] }[];
}
const bucketCases = JSON.parse(fs.readFileSync(new URL('./fixtures/lora/buckets.json', import.meta.url), 'utf8')) as BucketCase[];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-lora-data-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('aspect-ratio buckets (kohya maths, fixture from scripts/fixtures/lora_buckets.py)', () => {
  it('resolutions and per-image buckets match kohya for upscale and no-upscale', () => {
    for (const c of bucketCases) {
      const opts = { maxArea: c.max_area, minSide: c.min_side, maxSide: c.max_side, step: c.step };
      expect(bucketResolutions(opts).map((b) => [b.width, b.height])).toEqual(c.resolutions);
      for (const [mode, list] of [['upscale', c.upscale], ['no_upscale', c.no_upscale]] as const) {
        for (const e of list) {
          const got = selectBucket(e.size[0], e.size[1], { ...opts, noUpscale: mode === 'no_upscale' });
          if ('reason' in got) {
            // Ours refuses what kohya would train at a side below min_side; the fixture shows that size.
            expect(Math.min(...e.bucket), `${mode} ${e.size}`).toBeLessThan(c.min_side);
            continue;
          }
          expect([got.bucket.width, got.bucket.height], `${mode} ${e.size}`).toEqual(e.bucket);
          expect([got.resized.width, got.resized.height], `${mode} ${e.size}`).toEqual(e.resized);
        }
      }
    }
  });

  it('never drops an image silently: every image is assigned or skipped with a reason', () => {
    const images = [
      { id: 'a', width: 1024, height: 768 },
      { id: 'tiny', width: 100, height: 90 },
      { id: 'zero', width: 0, height: 10 },
      { id: 'b', width: 600, height: 1200 },
    ];
    const r = assignBuckets(images, { maxArea: 512 * 512, noUpscale: true });
    expect(r.assigned.length + r.skipped.length).toBe(images.length);
    expect(r.skipped.map((s) => s.id)).toEqual(['tiny', 'zero']);
    expect(r.skipped[0]!.reason).toMatch(/100x90 is below the smallest bucket: without upscaling it gives 64x64, under min_side 256/);
    const text = formatBucketReport(r);
    expect(text).toMatch(/2 image\(s\) in 2 bucket\(s\), 2 skipped/);
    expect(text).toMatch(/SKIPPED tiny 100x90/);
    const lines = text.split('\n');
    const line = (id: string) => lines.find((l) => l.startsWith(`  ${id} `));
    const a = r.assigned.find((x) => x.id === 'a')!;
    expect(line('a')).toBe(`  a 1024x768 → ${a.bucket.width}x${a.bucket.height} (resized ${a.resized.width}x${a.resized.height}${a.resized.width === a.bucket.width && a.resized.height === a.bucket.height ? '' : ', centre-cropped'})`);
    const same = formatBucketReport(assignBuckets([{ id: 'fits', width: 16, height: 16 }], { minSide: 16, maxSide: 16, step: 8, maxArea: 256 }));
    expect(same.split('\n').at(-1)).toBe('  fits 16x16 → 16x16 (not resized)');
  });

  it('bucket batches: one bucket per batch, every item `repeats` times per epoch, partial batches kept, deterministic and resumable', () => {
    const items = [
      ...Array.from({ length: 5 }, () => ({ bucket: { width: 512, height: 512 }, repeats: 2 })),
      ...Array.from({ length: 3 }, () => ({ bucket: { width: 640, height: 384 }, repeats: 1 })),
    ];
    const s = new BucketSampler(items, 4, 7);
    const epoch0 = s.batchesOfEpoch(0);
    // 10 square items → 4+4+2, 3 wide → 3: five batches, nothing dropped.
    expect(epoch0.map((b) => b.items.length).sort()).toEqual([2, 3, 4, 4]);
    const counts = new Array(8).fill(0);
    for (const b of epoch0) {
      for (const i of b.items) {
        counts[i]++;
        expect(items[i]!.bucket).toEqual(b.bucket);
      }
    }
    expect(counts).toEqual([2, 2, 2, 2, 2, 1, 1, 1]);
    expect(new BucketSampler(items, 4, 7).batchesOfEpoch(0)).toEqual(epoch0);
    expect(JSON.stringify(s.batchesOfEpoch(1))).not.toBe(JSON.stringify(epoch0));
    const run = Array.from({ length: 7 }, () => s.next());
    const resumed = new BucketSampler(items, 4, 7);
    resumed.setState({ epoch: run[5]!.epoch, position: run[5]!.position });
    expect(resumed.next()).toEqual(run[5]);
    expect(resumed.next()).toEqual(run[6]);
    expect(run[4]!.epoch).toBe(1);
    expect(() => new BucketSampler([], 2, 0)).toThrow(/no items/);
  });
});

describe('caption ops', () => {
  it('mentionsTrigger finds the trigger as a tag or a word wherever shuffling put it, and nowhere else', () => {
    expect(mentionsTrigger('sfbrand, a red circle', 'sfbrand')).toBe(true);
    expect(mentionsTrigger('a red circle, SFBrand', 'sfbrand')).toBe(true);
    expect(mentionsTrigger('a photo in sfbrand style', 'sfbrand')).toBe(true);
    expect(mentionsTrigger('a red circle', 'sfbrand')).toBe(false);
    expect(mentionsTrigger('sfbrands, sfbrandx logo', 'sfbrand')).toBe(false);
    expect(mentionsTrigger('', 'sfbrand')).toBe(false);
  });

  const caption = 'brandx, logo, red, on white, flat, vector';

  it('tag shuffle keeps the first keep_tokens tags in place and is deterministic per Rng state', () => {
    const rng = new Rng(3);
    const state = rng.getState();
    const a = applyCaptionOps(caption, { shuffleTags: true, keepTokens: 1 }, rng);
    expect(a.startsWith('brandx, ')).toBe(true);
    expect(a.split(', ').sort()).toEqual(caption.split(', ').sort());
    const again = new Rng(0);
    again.setState(state);
    expect(applyCaptionOps(caption, { shuffleTags: true, keepTokens: 1 }, again)).toBe(a);
    const seen = new Set(Array.from({ length: 20 }, () => applyCaptionOps(caption, { shuffleTags: true, keepTokens: 2 }, rng)));
    expect(seen.size).toBeGreaterThan(5);
    for (const s of seen) expect(s.startsWith('brandx, logo, ')).toBe(true);
    expect(applyCaptionOps('brandx, logo ||| a, b, c', { shuffleTags: true, keepTokensSeparator: '|||' }, rng).startsWith('brandx, logo, ')).toBe(true);
  });

  it('caption dropout empties the caption at its rate, reproducibly; tag dropout never drops kept tags', () => {
    const rng = new Rng(9);
    const out = Array.from({ length: 4000 }, () => applyCaptionOps(caption, { captionDropout: 0.1 }, rng));
    const rate = out.filter((s) => s === '').length / out.length;
    expect(rate).toBeGreaterThan(0.085);
    expect(rate).toBeLessThan(0.115);
    const rng2 = new Rng(9);
    expect(Array.from({ length: 4000 }, () => applyCaptionOps(caption, { captionDropout: 0.1 }, rng2))).toEqual(out);
    for (let i = 0; i < 50; i++) expect(applyCaptionOps(caption, { tagDropout: 0.5, keepTokens: 1 }, rng).startsWith('brandx')).toBe(true);
  });

  it('a trigger word that tokenises to nothing (or holds the separator) is a usage error', () => {
    expect(checkTriggerWord('  brandx ')).toBe('brandx');
    expect(() => checkTriggerWord(' , ')).toThrow(UsageError);
    expect(() => checkTriggerWord('...')).toThrow(/would tokenise to nothing/);
    expect(() => checkTriggerWord('a,b')).toThrow(/contains the tag separator/);
    expect(() => checkTriggerWord('brandx', ',', () => [])).toThrow(/would tokenise to nothing/);
    expect(checkTriggerWord('brandx', ',', () => [42])).toBe('brandx');
  });
});

async function png(file: string, width: number, height: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp({ create: { width, height, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toFile(file);
}

describe('brand training folder (kohya N_name layout)', () => {
  it('repeats per folder, sidecar / metadata.jsonl / folder-name captions, trigger first, buckets, and a report of every skip', async () => {
    const root = path.join(tmp, 'brand');
    await png(path.join(root, '10_brandx logo', 'a.png'), 640, 480);
    fs.writeFileSync(path.join(root, '10_brandx logo', 'a.txt'), 'logo, red\n');
    await png(path.join(root, '10_brandx logo', 'b.png'), 480, 640);
    await png(path.join(root, '10_brandx logo', 'c.png'), 512, 512);
    fs.writeFileSync(path.join(root, '10_brandx logo', 'c.txt'), Buffer.from([0xff, 0xfe, 0x41]));
    await png(path.join(root, '10_brandx logo', 'tiny.png'), 64, 64);
    await png(path.join(root, '1_reg', 'r.png'), 512, 512);
    fs.writeFileSync(path.join(root, '1_reg', 'metadata.jsonl'), `${JSON.stringify({ file_name: 'r.png', text: 'a generic logo' })}\n`);
    fs.mkdirSync(path.join(root, '5_empty'));
    fs.writeFileSync(path.join(root, '10_brandx logo', 'broken.png'), 'not a png');
    const { items, report } = await scanBrandFolder({ root, trigger: 'brandx', buckets: { maxArea: 256 * 256, minSide: 128, maxSide: 512, step: 64, noUpscale: true } });
    const byId = new Map(items.map((i) => [i.id, i]));
    expect([...byId.keys()].sort()).toEqual(['10_brandx logo/a.png', '10_brandx logo/b.png', '1_reg/r.png']);
    expect(byId.get('10_brandx logo/a.png')).toMatchObject({ repeats: 10, caption: 'brandx, logo, red', captionSource: 'sidecar', bucket: { width: 256, height: 192 } });
    // No caption file: kohya's fallback, the folder's class words (already starting with the trigger).
    expect(byId.get('10_brandx logo/b.png')).toMatchObject({ caption: 'brandx logo', captionSource: 'folder', bucket: { width: 192, height: 256 } });
    expect(byId.get('1_reg/r.png')).toMatchObject({ repeats: 1, caption: 'brandx, a generic logo', captionSource: 'manifest' });
    const reasons = new Map(report.skipped.map((s) => [path.basename(s.file), s.reason]));
    expect(reasons.get('c.png')).toMatch(/c\.txt is not valid UTF-8/);
    expect(reasons.get('tiny.png')).toMatch(/below the smallest bucket/);
    expect(reasons.get('broken.png')).toMatch(/cannot read the image/);
    expect(report.folders.find((f) => f.folder === '5_empty')).toMatchObject({ images: 0, note: expect.stringMatching(/no images/) });
    expect(tagFrequency(items)).toEqual({ '10_brandx logo': { brandx: 1, logo: 1, red: 1, 'brandx logo': 1 }, '1_reg': { brandx: 1, 'a generic logo': 1 } });
    const info = JSON.parse(kohyaBucketInfo(report.buckets)) as { buckets: Record<string, { resolution: number[]; count: number }>; mean_img_ar_error: number };
    expect(Object.values(info.buckets).map((b) => [b.resolution, b.count])).toEqual([[[192, 256], 1], [[256, 192], 1], [[256, 256], 1]]);
    expect(info.mean_img_ar_error).toBeCloseTo((Math.abs(256 / 192 - 640 / 480) + Math.abs(192 / 256 - 480 / 640)) / 3, 12);
    await expect(scanBrandFolder({ root: path.join(root, '5_empty'), buckets: { maxArea: 65536 } })).rejects.toThrow(/no usable training images \(0 found/);
    await expect(scanBrandFolder({ root, trigger: ' ', buckets: { maxArea: 65536 } })).rejects.toThrow(/tokenise to nothing/);
  });
});

describe('brand training data from WebDataset shards (curate --format webdataset)', () => {
  it('reads samples from shards in N_name folders, captions from txt/json, and reports samples without an image', async () => {
    const root = path.join(tmp, 'shards');
    const dir = path.join(root, '3_brandx mark');
    fs.mkdirSync(dir, { recursive: true });
    const img = async (w: number, h: number) => new Uint8Array(await sharp({ create: { width: w, height: h, channels: 3, background: { r: 9, g: 9, b: 200 } } }).png().toBuffer());
    const enc = (t: string) => new TextEncoder().encode(t);
    const a = await img(480, 320);
    const members = [
      ...sampleMembers({ key: 'a', fields: { png: a, txt: enc('mark on blue') } }),
      ...sampleMembers({ key: 'b', fields: { png: await img(320, 480), json: enc(JSON.stringify({ caption: 'tall mark' })) } }),
      ...sampleMembers({ key: 'c', fields: { txt: enc('orphan caption') } }),
      ...sampleMembers({ key: 'd', fields: { png: await img(512, 512) } }),
    ];
    fs.writeFileSync(path.join(dir, '00000.tar'), tarBytes(members));
    const { items, report } = await scanBrandFolder({ root, trigger: 'brandx', buckets: { maxArea: 256 * 256, minSide: 128, maxSide: 512, step: 64 } });
    expect(items.map((i) => [i.id, i.caption, i.repeats, i.bucket.width, i.bucket.height])).toEqual([
      ['3_brandx mark/00000.tar#a', 'brandx, mark on blue', 3, 320, 192],
      ['3_brandx mark/00000.tar#b', 'brandx, tall mark', 3, 192, 320],
      ['3_brandx mark/00000.tar#d', 'brandx mark', 3, 256, 256],
    ]);
    expect(report.skipped).toEqual([{ file: `${path.join(dir, '00000.tar')}#c`, reason: expect.stringMatching(/no image field/) }]);
    expect(await readBrandImage(items[0]!)).toEqual(a);
    fs.writeFileSync(path.join(dir, '00000.tar'), tarBytes(members).subarray(0, 1500));
    await expect(scanBrandFolder({ root, buckets: { maxArea: 65536 } })).rejects.toThrow(/00000\.tar at byte \d+: member 'a\.png' runs past the end/);
  });
});
