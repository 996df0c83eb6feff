import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import sharp from 'sharp';
import { cleanCaption, findCaption, parseCsv, readCaptionManifest } from '../../../src/curate/captions.js';
import { parseManifest, readState } from '../../../src/curate/manifest.js';
import { ImageFolderDataset } from '../../../src/data/image_folder.js';
import { FuzzFailure, target } from '../harness.js';

/** Text that is JSON-lines-like more often than not: valid records, records with wrong types, junk, bad UTF-8. */
const fieldValue = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('a.png', '../a.png', '/etc/passwd', 'sub\\..\\..\\a.png', 'a.png\0.txt', '<script>alert(1)</script>'), fc.jsonValue({ maxDepth: 2 }));
const record = fc.dictionary(fc.constantFrom('file_name', 'file', 'path', 'image', 'text', 'caption', '__proto__', 'x'), fieldValue, { maxKeys: 4 });
const jsonLine = fc.oneof({ weight: 4, arbitrary: record.map((r) => JSON.stringify(r)) }, fc.json({ maxDepth: 2 }), fc.string({ maxLength: 20 }), fc.constantFrom('null', '[]', '"x"', '{', '1e999'));
const jsonlText = fc.array(jsonLine, { maxLength: 6 }).chain((lines) => fc.constantFrom('\n', '\r\n').map((nl) => lines.join(nl)));
const csvText = fc
  .array(fc.array(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('file_name', 'text', '"', '""', '"a,b"', '\r', '\n', 'a.png')), { maxLength: 4 }), { maxLength: 5 })
  .map((rows) => rows.map((r) => r.join(',')).join('\n'));
const invalidUtf8 = fc.uint8Array({ maxLength: 24 }).map((b) => Buffer.concat([Buffer.from('{"file_name": "a.png", "text": "'), Buffer.from([0xff, 0xfe, 0xc3]), b]));
const bytesOf = (s: string) => Buffer.from(s, 'utf8');

let tinyPng: Buffer | undefined;
async function png(): Promise<Buffer> {
  tinyPng ??= await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 9, g: 99, b: 199 } } }).png().toBuffer();
  return tinyPng;
}

export const captionTargets = [
  target({
    name: 'captions.manifest-jsonl',
    arbitrary: fc.oneof(jsonlText.map(bytesOf), invalidUtf8),
    async run(bytes, ctx) {
      const file = ctx.file('captions.jsonl');
      writeFileSync(file, bytes);
      const map = await readCaptionManifest(file);
      for (const [k, v] of map) if (typeof k !== 'string' || typeof v !== 'string') throw new FuzzFailure(`manifest gave ${typeof k} → ${typeof v}`);
    },
  }),
  target({
    name: 'captions.manifest-csv',
    arbitrary: fc.oneof(csvText, fc.string({ maxLength: 40 })),
    async run(text, ctx) {
      parseCsv(text);
      const file = ctx.file('captions.csv');
      writeFileSync(file, text);
      await readCaptionManifest(file);
    },
  }),
  target({
    name: 'captions.sidecar',
    arbitrary: fc.record({
      ext: fc.constantFrom('txt' as const, 'caption' as const, 'json' as const),
      bytes: fc.oneof(fc.string({ maxLength: 30 }).map(bytesOf), jsonLine.map(bytesOf), fc.uint8Array({ maxLength: 30 })),
    }),
    async run({ ext, bytes }, ctx) {
      const img = join(ctx.dir, 'a.png');
      writeFileSync(img, '');
      writeFileSync(join(ctx.dir, `a.${ext}`), bytes);
      // Never throws: an unreadable caption is reported on the image, so one bad file cannot stop a run.
      const found = await findCaption({ abs: img, id: 'a.png' }, ['txt', 'caption', 'json'], undefined);
      if (typeof found.text !== 'string') throw new FuzzFailure('caption text is not a string');
      cleanCaption(found.text);
    },
  }),
  target({
    name: 'captions.clean',
    arbitrary: fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.array(fc.constantFrom('&amp;', '&#0;', '&#x110000;', '&#99999999999999999999;', '&#xD800;', '&lt;', '&unknown;', ', ', ',,', ' ', 'a', '\u0000', '\uD800'), { maxLength: 12 }).map((t) => t.join('')),
    ),
    run(text) {
      const out = cleanCaption(text);
      if (typeof out !== 'string') throw new FuzzFailure('cleanCaption did not return a string');
    },
  }),
  target({
    name: 'data.image-folder-metadata',
    cost: 4,
    arbitrary: fc.record({
      manifest: fc.oneof(jsonlText.map(bytesOf), invalidUtf8),
      sidecar: fc.option(fc.oneof(fc.string({ maxLength: 12 }).map(bytesOf), fc.uint8Array({ maxLength: 12 }))),
      inSub: fc.boolean(),
    }),
    async run({ manifest, sidecar, inSub }, ctx) {
      const dir = inSub ? join(ctx.dir, 'sub') : ctx.dir;
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'a.png'), await png());
      if (sidecar) writeFileSync(join(dir, 'a.txt'), sidecar);
      writeFileSync(join(dir, 'metadata.jsonl'), manifest);
      const ds = await ImageFolderDataset.load({ root: ctx.dir, size: 8, missingCaption: 'skip', concurrency: 1 });
      if (ds.length + ds.skipped.filter((s) => s.path.endsWith('a.png')).length < 1) throw new FuzzFailure('the image was neither loaded nor reported as skipped');
    },
  }),
  target({
    name: 'curate.state-file',
    arbitrary: fc.oneof(jsonlText, fc.array(fc.record({ sha256: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string({ maxLength: 4 })), analysis: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant({ ok: true }), fc.constant({ ok: false })) }), { maxLength: 4 }).map((rs) => rs.map((r) => JSON.stringify(r)).join('\n'))),
    run(text, ctx) {
      const file = ctx.file('state.jsonl');
      writeFileSync(file, text);
      readState(file);
      parseManifest(text, file);
    },
  }),
];
