import fc from 'fast-check';
import sharp from 'sharp';
import { decodeImage, isRejection } from '../../../src/curate/decode.js';
import { sampleMembers, tarBytes } from '../../../src/curate/webdataset.js';
import { FuzzFailure, target } from '../harness.js';

/** Reads back the member names of a ustar archive (prefix + name), to check what the writer stored. */
function ustarNames(tar: Uint8Array): string[] {
  const names: string[] = [];
  const field = (b: Uint8Array) => Buffer.from(b.subarray(0, b.indexOf(0) < 0 ? b.length : b.indexOf(0))).toString('utf8');
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const name = field(h.subarray(0, 100));
    const prefix = field(h.subarray(345, 500));
    const size = parseInt(field(h.subarray(124, 136)), 8);
    names.push(prefix ? `${prefix}/${name}` : name);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

const hostileName = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom('../x', '/abs', 'a/../../b', '..\\..\\w', 'a\0b', 'con', 'a\nb', ' ', '.hidden', 'x'.repeat(120), 'é'.repeat(60), '0000'),
);

let seeds: Buffer[] | undefined;
/** One small image per format the curation decoder reads, to mutate. */
async function seedImages(): Promise<Buffer[]> {
  if (!seeds) {
    const base = sharp({ create: { width: 12, height: 10, channels: 4, background: { r: 200, g: 30, b: 60, alpha: 0.5 } } });
    seeds = await Promise.all([base.clone().png().toBuffer(), base.clone().jpeg().toBuffer(), base.clone().webp().toBuffer(), base.clone().gif().toBuffer(), base.clone().tiff().toBuffer()]);
  }
  return seeds;
}

/** Edits that break image files the way disks, downloads and hostile uploads do. */
const imageEdit = fc.record({
  which: fc.nat(4),
  truncateTo: fc.option(fc.double({ min: 0, max: 1, noNaN: true })),
  flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
  // Declared dimensions overwritten (PNG IHDR at 16..24; other formats get random bytes there).
  bigDims: fc.option(fc.tuple(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }))),
});

export const mediaTargets = [
  target({
    name: 'webdataset.sample',
    arbitrary: fc.record({ key: hostileName, fields: fc.dictionary(hostileName, fc.uint8Array({ maxLength: 600 }), { maxKeys: 3 }) }),
    run(sample) {
      const members = sampleMembers(sample);
      const tar = tarBytes(members);
      if (tar.length % 512 !== 0) throw new FuzzFailure(`archive of ${tar.length} bytes is not whole blocks`);
      const names = ustarNames(tar);
      const want = members.map((m) => m.name);
      if (JSON.stringify(names) !== JSON.stringify(want)) throw new FuzzFailure(`stored names ${JSON.stringify(names)} for ${JSON.stringify(want)}`);
      for (const n of names) {
        if (n.startsWith('/') || n.split(/[\\/]/).includes('..') || n.includes('\0')) throw new FuzzFailure(`member name ${JSON.stringify(n)} escapes the extraction folder`);
      }
    },
  }),
  target({
    name: 'curate.decode-image',
    cost: 4,
    arbitrary: imageEdit,
    async run(edit) {
      const src = (await seedImages())[edit.which]!;
      const bytes = Buffer.from(src);
      for (const [at, v] of edit.flips) bytes[at % bytes.length] = v;
      if (edit.bigDims) {
        bytes.writeUInt32BE(edit.bigDims[0], 16);
        bytes.writeUInt32BE(edit.bigDims[1], 20);
      }
      const input = edit.truncateTo === null ? bytes : bytes.subarray(0, Math.floor(bytes.length * edit.truncateTo));
      // decodeImage never throws: every failure is a rejection with a code and a reason.
      const d = await decodeImage(input, { background: [255, 255, 255], maxPixels: 4096 });
      if (isRejection(d)) {
        if (!d.reason) throw new FuzzFailure(`rejection ${d.code} without a reason`);
      } else if (d.rgb.length !== d.width * d.height * 3 || d.width * d.height > 4096) {
        throw new FuzzFailure(`decoded ${d.width}x${d.height} with ${d.rgb.length} bytes under max_pixels 4096`);
      }
    },
  }),
];
