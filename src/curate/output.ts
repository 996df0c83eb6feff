import { createHash } from 'node:crypto';
import { copyFile, link, lstat, mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { writeSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { JobError } from '../util/errors.js';
import { checkSampleKey, sampleMembers, shardName, tarEnd, tarMemberChunks } from './webdataset.js';

/**
 * Writers for the two output layouts. Both are idempotent: a re-run rewrites only what differs, and removes
 * outputs of images that are no longer kept, so the output always mirrors the latest decisions.
 *
 * Folder layout (readable by the training image-folder dataset): `images/<key>.<ext>` + `images/<key>.txt`.
 * WebDataset layout: `00000.tar`, `00001.tar`, … with `<key>.<ext>`, `<key>.json`, `<key>.txt` per sample.
 */

export interface OutputSample {
  key: string;
  /** Absolute path of the encoded image to publish. */
  imagePath: string;
  imageBytes: number;
  caption: string;
  /** Metadata stored as `<key>.json` in WebDataset shards. */
  meta: Record<string, unknown>;
}

export interface WriteStats {
  written: number;
  unchanged: number;
  removed: number;
}

export const IMAGES_DIR = 'images';

/**
 * Size of a regular file at `path`; undefined for anything else. A symbolic link planted in the output folder
 * counts as absent, so it is replaced (rename replaces the link itself) and never written through.
 */
async function sizeOf(path: string): Promise<number | undefined> {
  const info = await lstat(path).catch(() => null);
  return info?.isFile() ? info.size : undefined;
}

/** Creates `dir` if needed and refuses a symbolic link there: writes and clean-up deletions would follow it. */
export async function ensureRealDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if ((await lstat(dir)).isSymbolicLink()) {
    throw new JobError(`${dir} is a symbolic link; curate writes (and removes stale files) only in a real folder inside the output`);
  }
}

/** Bytes to `to` via a new temporary file renamed over it: never through a link, never partial. */
async function replaceFile(to: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${to}.${process.pid}.tmp`;
  await unlink(tmp).catch(() => undefined);
  await writeFile(tmp, bytes, { flag: 'wx' });
  await rename(tmp, to);
}

/** Hard link when possible (no extra disk), else a copy; via a temporary name so the target is never partial. */
async function publish(from: string, to: string): Promise<void> {
  const tmp = `${to}.${process.pid}.tmp`;
  await unlink(tmp).catch(() => undefined);
  try {
    await link(from, tmp);
  } catch {
    await copyFile(from, tmp);
  }
  await rename(tmp, to);
}

export async function writeFolderOutput(outDir: string, samples: readonly OutputSample[], imageExt: string): Promise<WriteStats> {
  const dir = join(outDir, IMAGES_DIR);
  await ensureRealDir(dir);
  const stats: WriteStats = { written: 0, unchanged: 0, removed: 0 };
  const wanted = new Set<string>();
  for (const s of samples) {
    checkSampleKey(s.key);
    const image = `${s.key}.${imageExt}`;
    const text = `${s.key}.txt`;
    wanted.add(image).add(text);
    const imagePath = join(dir, image);
    const textPath = join(dir, text);
    const captionBytes = Buffer.from(s.caption, 'utf8');
    const sameImage = (await sizeOf(imagePath)) === s.imageBytes;
    const oldCaption = (await sizeOf(textPath)) === undefined ? null : await readFile(textPath).catch(() => null);
    const sameCaption = oldCaption !== null && captionBytes.equals(oldCaption);
    if (sameImage && sameCaption) {
      stats.unchanged++;
      continue;
    }
    if (!sameImage) await publish(s.imagePath, imagePath);
    if (!sameCaption) await replaceFile(textPath, captionBytes);
    stats.written++;
  }
  for (const name of await readdir(dir)) {
    if (wanted.has(name)) continue;
    await unlink(join(dir, name));
    if (!name.endsWith('.txt')) stats.removed++;
  }
  return stats;
}

const SHARDS_STATE = '.curate/shards.json';

/** Identity of a shard's content: the same samples in the same order give the same digest. */
function shardDigest(samples: readonly OutputSample[]): string {
  const h = createHash('sha256');
  for (const s of samples) h.update(JSON.stringify([s.key, s.imagePath, s.imageBytes, s.caption, s.meta])).update('\n');
  return h.digest('hex');
}

export async function writeWebDatasetOutput(
  outDir: string,
  samples: readonly OutputSample[],
  perShard: number,
  imageExt: string,
): Promise<WriteStats & { shards: string[] }> {
  await ensureRealDir(join(outDir, '.curate'));
  const statePath = join(outDir, SHARDS_STATE);
  const previous: Record<string, string> = JSON.parse((await readFile(statePath, 'utf8').catch(() => '{}')) || '{}');
  const current: Record<string, string> = {};
  const stats = { written: 0, unchanged: 0, removed: 0, shards: [] as string[] };
  for (let start = 0, index = 0; start < samples.length; start += perShard, index++) {
    const chunk = samples.slice(start, start + perShard);
    const name = shardName(index);
    const digest = shardDigest(chunk);
    current[name] = digest;
    stats.shards.push(name);
    const target = join(outDir, name);
    if (previous[name] === digest && (await sizeOf(target)) !== undefined) {
      stats.unchanged += chunk.length;
      continue;
    }
    await writeFileAtomic(target, async (fd) => {
      for (const s of chunk) {
        const fields: Record<string, Uint8Array> = {
          [imageExt]: await readFile(s.imagePath),
          txt: Buffer.from(s.caption, 'utf8'),
          json: Buffer.from(JSON.stringify(s.meta), 'utf8'),
        };
        for (const m of sampleMembers({ key: s.key, fields })) for (const c of tarMemberChunks(m)) writeSync(fd, c);
      }
      writeSync(fd, tarEnd());
    });
    stats.written += chunk.length;
    // Recorded after every shard, so a crash re-writes only the shard it was in.
    await writeFileAtomic(statePath, JSON.stringify({ ...previous, ...current }, null, 1));
  }
  for (const name of await readdir(outDir)) {
    if (/^\d{5}\.tar$/.test(name) && !(name in current)) {
      await unlink(join(outDir, name));
      stats.removed++;
    }
  }
  await writeFileAtomic(statePath, JSON.stringify(current, null, 1));
  return stats;
}
