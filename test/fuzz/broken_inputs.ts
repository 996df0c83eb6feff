import { crc32 } from 'node:zlib';
import sharp, { type Sharp } from 'sharp';
import { serializeSafetensors } from '../../src/io/safetensors.js';
import { writeZip } from '../../src/io/zip.js';

/**
 * Broken and hostile inputs, built from real encoder output and then edited byte by byte: the committed corpus
 * under test/fixtures/broken/ is written from these by scripts/fixtures/make_broken.ts, and the bomb tests build
 * the larger ones at test time.
 */

/** A smooth 3-channel test pattern (survives re-encoding; not a solid colour, so filters have something to see). */
export function patternRaw(width: number, height: number, channels: 3 | 4 = 3): Buffer {
  const out = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      out[i] = (x * 255) / width;
      out[i + 1] = (y * 255) / height;
      out[i + 2] = 128 + 100 * Math.sin((x + y) / 5);
      if (channels === 4) out[i + 3] = x < width / 2 ? 255 : 64;
    }
  }
  return out;
}

function image(width: number, height: number, channels: 3 | 4 = 3): Sharp {
  return sharp(patternRaw(width, height, channels), { raw: { width, height, channels } });
}

/** PNG with the IHDR's declared size replaced (CRC recomputed, so only the size is a lie). */
export function pngDeclaring(png: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(png);
  out.writeUInt32BE(width, 16);
  out.writeUInt32BE(height, 20);
  out.writeUInt32BE(crc32(out.subarray(12, 29)), 29);
  return out;
}

/** JPEG with the baseline/progressive SOF's declared size replaced (16-bit fields: at most 65535 each). */
export function jpegDeclaring(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  for (let i = 2; i + 9 < out.length; ) {
    if (out[i] !== 0xff) throw new Error('jpegDeclaring: lost sync with the JPEG markers');
    const marker = out[i + 1]!;
    if (marker >= 0xc0 && marker <= 0xc2) {
      out.writeUInt16BE(height, i + 5);
      out.writeUInt16BE(width, i + 7);
      return out;
    }
    i += 2 + out.readUInt16BE(i + 2);
  }
  throw new Error('jpegDeclaring: no SOF marker');
}

/** Lossless WebP (VP8L) with the declared size replaced (14-bit fields: at most 16384 each). */
export function webpDeclaring(webp: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(webp);
  if (out.toString('latin1', 12, 16) !== 'VP8L' || out[20] !== 0x2f) throw new Error('webpDeclaring: expected a simple lossless WebP');
  const bits = out.readUInt32LE(21);
  const rest = bits & ~((1 << 28) - 1);
  out.writeUInt32LE(((width - 1) | ((height - 1) << 14) | rest) >>> 0, 21);
  return out;
}

/** GIF with the logical screen and first frame's declared size replaced (16-bit fields). */
export function gifDeclaring(gif: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(gif);
  out.writeUInt16LE(width, 6);
  out.writeUInt16LE(height, 8);
  let i = 13;
  if (out[10]! & 0x80) i += 3 * 2 ** ((out[10]! & 7) + 1);
  while (i < out.length) {
    if (out[i] === 0x2c) {
      out.writeUInt16LE(width, i + 5);
      out.writeUInt16LE(height, i + 7);
      return out;
    }
    if (out[i] !== 0x21) break;
    i += 2;
    while (out[i]! !== 0) i += out[i]! + 1;
    i++;
  }
  throw new Error('gifDeclaring: no image descriptor');
}

/** The image part of the corpus: file name → bytes. Every file is one way an image goes wrong (or right). */
export async function brokenImages(): Promise<Record<string, Buffer>> {
  const png = await image(40, 32).png().toBuffer();
  const jpeg = await image(40, 32).jpeg({ quality: 80 }).toBuffer();
  const webp = await image(40, 32).webp({ lossless: true }).toBuffer();
  const gif = await image(40, 32).gif().toBuffer();
  return {
    'good.png': png,
    'good.jpg': jpeg,
    'alpha.png': await image(40, 32, 4).png().toBuffer(),
    'cmyk.jpg': await image(40, 32).toColourspace('cmyk').jpeg({ quality: 80 }).toBuffer(),
    'rgb16.png': await image(40, 32).toColourspace('rgb16').png().toBuffer(),
    'exif_rotated.jpg': await image(40, 32).jpeg({ quality: 80 }).withMetadata({ orientation: 6 }).toBuffer(),
    'palette.gif': gif,
    'lossless.webp': webp,
    'truncated.jpg': jpeg.subarray(0, Math.floor(jpeg.length / 2)),
    'truncated.png': png.subarray(0, Math.floor(png.length * 0.6)),
    'zero_byte.png': Buffer.alloc(0),
    'not_an_image.jpg': Buffer.from('this is a text file with an image extension\n'),
    'random_bytes.webp': Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7919 + 13) % 256)),
    // Declared sizes above the default max_pixels (100 M); some also above sharp's own limit (2^28 = 268 M).
    'bomb.png': pngDeclaring(png, 100_000, 100_000),
    'bomb_121mp.png': pngDeclaring(png, 11_000, 11_000),
    'bomb.jpg': jpegDeclaring(jpeg, 12_000, 12_000),
    'bomb.webp': webpDeclaring(webp, 12_000, 12_000),
    'bomb.gif': gifDeclaring(gif, 65_535, 65_535),
  };
}

/**
 * Captions next to images of the corpus: a non-UTF-8 one (Latin-1 bytes) and markup that a report must escape.
 * Keyed by caption file name.
 */
export function brokenCaptions(): Record<string, Buffer> {
  return {
    'good.txt': Buffer.from('a smooth gradient, <script>alert(1)</script>, "onerror=alert(2)'),
    'good.caption': Buffer.from('ignored: good.txt comes first'),
    'alpha.txt': Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xe0, 0x20, 0x6c, 0x61, 0x20, 0x63, 0x72, 0xe8, 0x6d, 0x65]),
    'cmyk.txt': Buffer.from('\uFEFFcmyk photo with a BOM'),
    'rgb16.txt': Buffer.alloc(0),
    'exif_rotated.json': Buffer.from('{"caption": '),
  };
}

const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
/** A safetensors file from a raw header string and data bytes (length field = header length unless given). */
export function safetensorsRaw(header: string, data: Uint8Array = new Uint8Array(0), length?: bigint): Buffer {
  const json = Buffer.from(header, 'utf8');
  return Buffer.concat([u64(length ?? BigInt(json.length)), json, data]);
}

export function brokenSafetensors(): Record<string, Buffer> {
  const valid = Buffer.from(serializeSafetensors({ w: { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) } }, { note: 'ok' }));
  return {
    'valid.safetensors': valid,
    // Valid: tensors may be called anything, including names that are special in JavaScript objects.
    'proto_names.safetensors': Buffer.from(
      serializeSafetensors(
        new Map([
          ['__proto__', { shape: [1], data: new Float32Array([1]) }],
          ['constructor', { shape: [1], data: new Float32Array([2]) }],
        ]),
      ),
    ),
    'zero_byte.safetensors': Buffer.alloc(0),
    'short.safetensors': Buffer.from([1, 2, 3]),
    'header_len_2pow63.safetensors': safetensorsRaw('{}', undefined, 2n ** 63n),
    'header_len_past_end.safetensors': safetensorsRaw('{}', undefined, 4096n),
    'terabyte_tensor.safetensors': safetensorsRaw(JSON.stringify({ w: { dtype: 'F32', shape: [1_000_000, 1_000_000], data_offsets: [0, 4_000_000_000_000] } })),
    'shape_overflow.safetensors': safetensorsRaw(JSON.stringify({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 0] } })),
    'truncated_data.safetensors': valid.subarray(0, valid.length - 5),
    'trailing_bytes.safetensors': Buffer.concat([valid, Buffer.from('junk')]),
    'overlapping.safetensors': safetensorsRaw(
      JSON.stringify({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'U8', shape: [4], data_offsets: [2, 6] } }),
      new Uint8Array(6),
    ),
    'negative_shape.safetensors': safetensorsRaw(JSON.stringify({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }), new Uint8Array(4)),
    'unknown_dtype.safetensors': safetensorsRaw(JSON.stringify({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }), new Uint8Array(16)),
    'not_json.safetensors': safetensorsRaw('{"w": {"dtype": "F32", '),
    'bad_utf8_header.safetensors': Buffer.concat([u64(4n), Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]),
    'metadata_not_string.safetensors': safetensorsRaw(JSON.stringify({ __metadata__: { step: 10 } })),
    'deep_json.safetensors': safetensorsRaw(`{"w": ${'['.repeat(5000)}${']'.repeat(5000)}}`),
  };
}

/** Recipes that must be refused with a clear message, file name → text (or bytes). */
export function brokenYaml(): Record<string, string | Buffer> {
  const laughs = ['kind: curate', 'l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
  for (let i = 1; i <= 9; i++) laughs.push(`l${i}: &l${i} [${Array.from({ length: 10 }, () => `*l${i - 1}`).join(', ')}]`);
  return {
    'billion_laughs.yaml': `${laughs.join('\n')}\n`,
    'self_alias.yaml': 'kind: curate\ninput: &a { paths: [*a] }\n',
    'deep_flow.yaml': `kind: curate\nx: ${'['.repeat(3000)}${']'.repeat(3000)}\n`,
    'deep_block.yaml': `kind: curate\n${Array.from({ length: 100 }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n')} 1\n`,
    'tab_indent.yaml': 'kind: curate\ninput:\n\tpaths: [a]\n',
    'duplicate_keys.yaml': 'kind: curate\nkind: curate\n',
    'unclosed.yaml': 'kind: curate\ninput: { paths: [a\n',
    'binary_tag.yaml': 'kind: curate\ninput: !!binary aGVsbG8=\n',
    'top_level_list.yaml': '- kind: curate\n',
    'proto_key.yaml': 'kind: curate\n__proto__: { polluted: true }\ninput: { paths: [a] }\noutput: { dir: out }\n',
    'not_utf8.yaml': Buffer.from([0x6b, 0x69, 0x6e, 0x64, 0x3a, 0x20, 0xff, 0xfe, 0x0a]),
    'unknown_kind.yaml': 'kind: curat\n',
  };
}

/** Caption manifests for the curation `captions.manifest` option and the image-folder `metadata.jsonl`. */
export function brokenManifests(): Record<string, string | Buffer> {
  return {
    'null_line.jsonl': '{"file_name": "good.png", "text": "ok"}\nnull\n',
    'not_json.jsonl': '{"file_name": "good.png", "text": "ok"}\n{"file_name": \n',
    'wrong_types.jsonl': '{"file_name": 7, "text": ["a"]}\n',
    'traversal.jsonl': '{"file_name": "../../../etc/passwd", "text": "x"}\n{"file_name": "/etc/passwd", "text": "x"}\n{"file_name": "..\\\\..\\\\w.png", "text": "x"}\n',
    'not_utf8.jsonl': Buffer.concat([Buffer.from('{"file_name": "good.png", "text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]),
    'unterminated_quote.csv': 'file_name,text\ngood.png,"never closed\n',
  };
}

/** PyTorch files (`inspect x.pth`, `weights fetch --from`): a code-execution attempt, a lying tensor, broken archives. */
export function brokenPytorch(validPth: Buffer): Record<string, Buffer> {
  const zip = (pkl: string, storage = new Uint8Array(16)) =>
    Buffer.from(
      writeZip([
        { name: 'archive/data.pkl', data: Buffer.from(pkl, 'latin1') },
        { name: 'archive/byteorder', data: Buffer.from('little') },
        { name: 'archive/data/0', data: storage },
        { name: 'archive/version', data: Buffer.from('3\n') },
      ]),
    );
  const int32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return `J${b.toString('latin1')}`;
  };
  const tensor = (size: number[], stride: number[]) =>
    '\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(' +
    `(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu${int32(4)}tQ${int32(0)}` +
    `(${size.map(int32).join('')}t(${stride.map(int32).join('')}t\x89ccollections\nOrderedDict\n)RtRu.`;
  return {
    'valid.pth': validPth,
    'os_system.pth': zip("cos\nsystem\n(S'echo pwned'\ntR."),
    'builtins_eval.pth': zip("\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print('hi')\x85R."),
    'huge_view.pth': zip(tensor([2 ** 31 - 1, 2 ** 31 - 1], [0, 0])),
    'view_past_storage.pth': zip(tensor([4, 4], [4, 1])),
    'truncated.pth': validPth.subarray(0, Math.floor(validPth.length / 2)),
    'legacy_garbage.pth': Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0xff, 0xff, 0x00, 0x01]),
    'not_a_pth.pth': Buffer.from('hello\n'),
  };
}
