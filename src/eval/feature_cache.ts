import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Per-image network outputs, keyed by the sha256 of the image file's bytes under a folder per
 * extractor configuration (network, weights hash, preprocessing). A second evaluation of a grown
 * folder computes only the images it has not seen; renaming or moving files costs nothing.
 * One small file per image: features then logits, float32 little-endian.
 */
export class FeatureCache {
  private readonly dir: string;

  constructor(
    root: string,
    /** Everything that changes the outputs: network, weights sha256, resize mode. */
    readonly extractorKey: string,
    private readonly featureDim: number,
    private readonly logitDim: number,
  ) {
    this.dir = path.join(root, createHash('sha256').update(extractorKey).digest('hex').slice(0, 16));
  }

  static defaultRoot(env: NodeJS.ProcessEnv = process.env): string {
    return env.SCALEFORGE_CACHE ? path.join(env.SCALEFORGE_CACHE, 'features') : path.join(os.homedir(), '.cache', 'scaleforge', 'features');
  }

  private fileFor(contentHash: string): string {
    return path.join(this.dir, contentHash.slice(0, 2), `${contentHash}.f32`);
  }

  get(contentHash: string): { features: Float32Array; logits?: Float32Array } | undefined {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(this.fileFor(contentHash));
    } catch {
      return undefined;
    }
    const total = this.featureDim + this.logitDim;
    // A file of the wrong length (another version, a torn write) is a miss, recomputed and replaced.
    if (buf.byteLength !== total * 4) return undefined;
    const all = new Float32Array(total);
    new Uint8Array(all.buffer).set(buf);
    return { features: all.subarray(0, this.featureDim), ...(this.logitDim ? { logits: all.subarray(this.featureDim) } : {}) };
  }

  put(contentHash: string, features: Float32Array, logits?: Float32Array): void {
    const file = this.fileFor(contentHash);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (!fs.existsSync(path.join(this.dir, 'key.txt'))) fs.writeFileSync(path.join(this.dir, 'key.txt'), `${this.extractorKey}\n`);
    const all = new Float32Array(this.featureDim + this.logitDim);
    all.set(features.subarray(0, this.featureDim));
    if (this.logitDim && logits) all.set(logits.subarray(0, this.logitDim), this.featureDim);
    // Rename from a temp file so a reader never sees half a file; no fsync: a lost entry is only recomputed.
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, new Uint8Array(all.buffer));
    fs.renameSync(tmp, file);
  }
}

export function sha256Bytes(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
