import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CONFIG_LIMITS } from '../../src/config/config_tree.js';
import { loadRecipe, PROJECT_ROOT } from '../../src/config/recipe.js';
import { decodeImage, isRejection } from '../../src/curate/decode.js';
import '../../src/curate/schema.js';
import { ImageFolderDataset } from '../../src/data/image_folder.js';
import { readImageRgb8 } from '../../src/io/image.js';
import { readSafetensorsHeader, SafetensorsError, SafetensorsFile } from '../../src/io/safetensors.js';
import { JobError, UsageError } from '../../src/util/errors.js';
import { brokenYaml, safetensorsRaw } from './broken_inputs.js';

/**
 * Resource bombs are refused before the resources are spent: the refusal is a typed error (or a rejected item)
 * naming the numbers, and memory does not grow by what the file claims. (No timings are asserted; the limits
 * are counts and sizes.)
 */
const tmp = mkdtempSync(join(tmpdir(), 'sf-bombs-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const BROKEN = join(import.meta.dirname, '..', 'fixtures', 'broken');

function heapGrowth(fn: () => unknown): number {
  const before = process.memoryUsage();
  try {
    fn();
  } catch {
    // the error itself is checked by the caller
  }
  const after = process.memoryUsage();
  return after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
}

describe('safetensors bombs', () => {
  const file = (name: string, bytes: Uint8Array) => {
    const p = join(tmp, name);
    writeFileSync(p, bytes);
    return p;
  };

  it.each([
    ['2^63', 2n ** 63n],
    ['2^64 - 1', 2n ** 64n - 1n],
    ['100 MB + 1', 100_000_001n],
  ])('a header length of %s is refused from the 8 length bytes', (_, n) => {
    const p = file(`len-${n}.safetensors`, safetensorsRaw('{}', undefined, n));
    expect(() => readSafetensorsHeader(p)).toThrow(new RegExp(`header length ${n} exceeds the 100000000-byte limit`));
  });

  it('tensors claiming terabytes in a small file: refused by the size check, nothing allocated', () => {
    const header = JSON.stringify({
      a: { dtype: 'F64', shape: [1 << 20, 1 << 20], data_offsets: [0, 8 * 2 ** 40] },
      b: { dtype: 'F32', shape: [1 << 20, 1 << 20], data_offsets: [8 * 2 ** 40, 12 * 2 ** 40] },
    });
    const p = file('tb.safetensors', safetensorsRaw(header, new Uint8Array(64)));
    let err: unknown;
    const grew = heapGrowth(() => {
      try {
        SafetensorsFile.open(p);
      } catch (e) {
        err = e;
        throw e;
      }
    });
    expect(err).toBeInstanceOf(SafetensorsError);
    expect((err as Error).message).toBe(`${p}: file is ${readFileSync(p).length} bytes but header + tensors account for ${13_194_139_533_312 + 8 + header.length} (file truncated)`);
    expect(grew).toBeLessThan(64 * 2 ** 20);
  });

  it('element counts past 2^53 are refused as overflowing, not rounded', () => {
    const p = file('overflow.safetensors', safetensorsRaw(JSON.stringify({ w: { dtype: 'U8', shape: [2 ** 27, 2 ** 27], data_offsets: [0, 0] } })));
    expect(() => SafetensorsFile.open(p)).toThrow(/shape \[134217728,134217728\] overflows/);
  });

  it('a hostile field is quoted in the error cut short, not echoed in full', () => {
    const p = file('long.safetensors', safetensorsRaw(JSON.stringify({ w: { dtype: 'x'.repeat(1_000_000), shape: [1], data_offsets: [0, 1] } }), new Uint8Array(1)));
    const err = (() => {
      try {
        SafetensorsFile.open(p);
      } catch (e) {
        return e as Error;
      }
      throw new Error('expected an error');
    })();
    expect(err.message).toMatch(/unknown dtype "x{70,}\.\.\.$/);
    expect(err.message.length).toBeLessThan(200 + p.length);
  });
});

describe('image bombs (declared sizes far beyond the pixels present)', () => {
  const images = ['bomb.png', 'bomb_121mp.png', 'bomb.jpg', 'bomb.webp', 'bomb.gif'];
  const declared: Record<string, string> = { 'bomb.png': '100000x100000', 'bomb_121mp.png': '11000x11000', 'bomb.jpg': '12000x12000', 'bomb.webp': '12000x12000', 'bomb.gif': '65535x65535' };

  it.each(images)('curation decoder: %s is a pixel_limit rejection stating its size', async (f) => {
    const d = await decodeImage(readFileSync(join(BROKEN, 'images', f)), { background: [255, 255, 255], maxPixels: 100_000_000 });
    expect(isRejection(d) && d.code).toBe('pixel_limit');
    expect(isRejection(d) && d.reason).toContain(`${declared[f]} = `);
  });

  it('curation decoder: max_pixels applies below sharp’s own limit too (a 40x32 image with max_pixels 1000)', async () => {
    const d = await decodeImage(readFileSync(join(BROKEN, 'images', 'good.png')), { background: [0, 0, 0], maxPixels: 1000 });
    expect(isRejection(d) && d.reason).toBe('40x32 = 1280 pixels exceeds max_pixels 1000 (possible decompression bomb)');
  });

  it('training image-folder loader: maxPixels skips before decoding, with the size', async () => {
    const ds = await ImageFolderDataset.load({ root: join(BROKEN, 'images'), size: 16, missingCaption: 'empty', maxPixels: 1300 });
    expect(Array.from({ length: ds.length }, (_, i) => ds.get(i).meta.file)).toContain('good.png'); // 40x32 = 1280
    const reasons = new Map(ds.skipped.map((s) => [s.path.split('/').pop(), s.reason]));
    expect(reasons.get('bomb.png')).toBe('100000x100000 exceeds max_pixels 1300 (possible decompression bomb); not decoded');
    expect(reasons.get('bomb.webp')).toBe('12000x12000 exceeds max_pixels 1300 (possible decompression bomb); not decoded');
  });

  it('readImageRgb8 (io/image): a JobError naming the file and size', async () => {
    const p = join(BROKEN, 'images', 'bomb.jpg');
    await expect(readImageRgb8(p)).rejects.toThrow(JobError);
    await expect(readImageRgb8(p)).rejects.toThrow(`${p}: 12000x12000 exceeds the 100000000-pixel limit`);
    expect((await readImageRgb8(join(BROKEN, 'images', 'good.png'))).width).toBe(40);
  });
});

describe('YAML bombs', () => {
  const recipe = (name: string, text: string | Buffer) => {
    const p = join(tmp, name);
    writeFileSync(p, text);
    return p;
  };
  const refusal = (p: string, sets: string[] = []) => {
    try {
      loadRecipe(p, { projectRoot: tmp, sets });
    } catch (e) {
      expect(e).toBeInstanceOf(UsageError);
      return (e as Error).message;
    }
    throw new Error('expected a UsageError');
  };

  it('billion laughs (lists, and mappings through merge keys) stop at the alias budget', () => {
    expect(refusal(recipe('lol.yaml', brokenYaml()['billion_laughs.yaml'] as string))).toMatch(/lol\.yaml:\d+:\d+: more than 1000 alias expansions/);
    const maps = ['kind: curate', 'a0: &a0 {x: 1, y: 2}'];
    for (let i = 1; i < 12; i++) maps.push(`a${i}: &a${i} {p: *a${i - 1}, q: *a${i - 1}, r: *a${i - 1}}`);
    expect(refusal(recipe('maps.yaml', maps.join('\n')))).toMatch(/maps\.yaml:\d+:\d+: (more than 1000 alias expansions|expands to more than 100000 values)/);
  });

  it('many plain values without aliases stop at the value budget', () => {
    const text = `kind: curate\nx: [${Array.from({ length: CONFIG_LIMITS.maxNodes + 10 }, () => '1').join(',')}]\n`;
    expect(refusal(recipe('wide.yaml', text))).toMatch(/expands to more than 100000 values/);
  });

  it('an alias inside its own anchor is refused instead of recursing forever', () => {
    expect(refusal(recipe('self.yaml', 'kind: curate\na: &a [1, [2, *a]]\n'))).toMatch(/self\.yaml:2:\d+: alias \*a refers to a value that contains it/);
  });

  it('deep nesting (flow and block) is refused at 64 levels', () => {
    expect(refusal(recipe('flow.yaml', `kind: curate\nx: ${'{a: '.repeat(100_000)}1${'}'.repeat(100_000)}\n`))).toMatch(/flow\.yaml:2:\d+: lists\/mappings nested more than 64 deep/);
    const block = Array.from({ length: 80 }, (_, i) => `${'  '.repeat(i)}- `).join('\n');
    expect(refusal(recipe('block.yaml', `kind: curate\nx:\n${block}1\n`))).toMatch(/nested more than 64 deep/);
  });

  it('files over 1 MiB are refused before parsing', () => {
    expect(refusal(recipe('big.yaml', `kind: curate\n# ${'x'.repeat(CONFIG_LIMITS.maxBytes)}\n`))).toMatch(/big\.yaml: \d+ bytes is too large for a config file \(limit 1048576 bytes\)/);
  });

  it('--set: deep key paths, deep values and aliases are refused the same way', () => {
    const curate = join(PROJECT_ROOT, 'recipes', 'curate.yaml');
    const usage = (sets: string[]) => {
      try {
        loadRecipe(curate, { sets });
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
      throw new Error('expected a UsageError');
    };
    expect(usage([`${Array.from({ length: 100_000 }, () => 'a').join('.')}=1`])).toMatch(/the key path has 100000 parts \(limit 64\)/);
    expect(usage([`resize.size=${'['.repeat(10_000)}`])).toMatch(/--set resize\.size: lists\/mappings nested more than 64 deep/);
    expect(usage(['resize.size=*nothing'])).toMatch(/--set resize\.size/);
    expect(usage(['__proto__.polluted=1'])).toMatch(/__proto__/);
    expect(Object.keys(Object.prototype)).toEqual([]);
  });
});
