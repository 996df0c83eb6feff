import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../backend/tf.js';
import { writeFileAtomic } from '../io/atomic.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors, serializeSafetensors, stateDictToEntries, type TensorEntry } from '../io/safetensors.js';
import { Module, type HostTensor } from '../nn/module.js';
import { JobError } from '../util/errors.js';
import type { EMA } from './ema.js';
import type { Optimizer } from './optim.js';

/**
 * Training checkpoints: one safetensors file per save, `step-000123.safetensors`, holding
 *   model.<name>   model parameters and persistent buffers
 *   ema.<name>     EMA shadow weights (if an EMA is given)
 *   optim.<key>    optimizer state (`exp_avg.<param>`, `step.<param>` …), always F32/I32
 * and, in `__metadata__` under `scaleforge.state`, a JSON document with the step, the EMA update
 * count and the caller's `extra` (stage, epoch, data position, RNG states, loss-scaler state, config
 * hash …). A text file `latest` names the newest complete checkpoint.
 *
 * Crash safety: the checkpoint file is written atomically (temp file + rename), then `latest` is
 * replaced atomically, then old checkpoints are pruned. A failure at any point leaves `latest`
 * naming a complete file.
 */

export const STATE_METADATA_KEY = 'scaleforge.state';
/** sha256 (hex) of the file's whole tensor data buffer, so corruption anywhere in the weights is caught. */
export const CHECKSUM_METADATA_KEY = 'scaleforge.data_sha256';
export const LATEST_POINTER = 'latest';
const FORMAT_VERSION = 1;

export type CheckpointDtype = 'F32' | 'BF16' | 'F16';
export type TensorMap = Map<string, tf.Tensor | HostTensor>;

export interface CheckpointContents {
  model: Module | TensorMap;
  ema?: EMA;
  optimizer?: Optimizer;
  /** Anything JSON can carry; it comes back from load() unchanged. */
  extra?: Record<string, unknown>;
}

export interface CheckpointSaveOptions {
  /**
   * Storage dtype of model and EMA weights. Optimizer state is always F32. Only F32 resumes bit-exactly;
   * BF16/F16 halve the file for snapshots that will be sampled from or fine-tuned, not resumed.
   */
  dtype?: CheckpointDtype;
}

/** How the manager touches the disk; replaceable so tests can inject a failing disk. */
export interface CheckpointIO {
  writeTensors(file: string, tensors: Map<string, TensorEntry>, metadata: Record<string, string>): Promise<void>;
  writeText(file: string, text: string): Promise<void>;
}

export const defaultCheckpointIO: CheckpointIO = {
  writeTensors: (file, tensors, metadata) => saveSafetensors(file, tensors, metadata),
  writeText: (file, text) => writeFileAtomic(file, text),
};

export interface CheckpointManagerOptions {
  /** How many checkpoints to keep (newest by step); the one just written is never removed. */
  keepLast?: number;
  io?: CheckpointIO;
}

export interface LoadedCheckpoint {
  file: string;
  step: number;
  model: Map<string, HostTensor>;
  /** null when the checkpoint was saved without an EMA. */
  ema: Map<string, HostTensor> | null;
  emaNumUpdates: number | null;
  optimizer: Map<string, HostTensor> | null;
  extra: Record<string, unknown>;
  /** Set when `latest` named a file that could not be read and an older checkpoint was used instead. */
  fellBackFrom?: string;
  /** Why `fellBackFrom` could not be used. */
  fallbackReason?: string;
}

interface StoredState {
  version: number;
  step: number;
  dtype: CheckpointDtype;
  ema: { numUpdates: number } | null;
  optimizer: boolean;
  extra: Record<string, unknown>;
}

export function checkpointFileName(step: number): string {
  return `step-${String(step).padStart(6, '0')}.safetensors`;
}

const FILE_PATTERN = /^step-(\d+)\.safetensors$/;

export class CheckpointManager {
  readonly keepLast: number;
  private readonly io: CheckpointIO;

  constructor(readonly dir: string, opts: CheckpointManagerOptions = {}) {
    this.keepLast = opts.keepLast ?? 3;
    if (!Number.isInteger(this.keepLast) || this.keepLast < 1) throw new RangeError(`keepLast must be an integer ≥ 1, got ${this.keepLast}`);
    this.io = opts.io ?? defaultCheckpointIO;
  }

  /** Write a checkpoint for `step`, point `latest` at it, prune old ones; returns the file path. */
  async save(step: number, contents: CheckpointContents, opts: CheckpointSaveOptions = {}): Promise<string> {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`checkpoint step must be an integer ≥ 0, got ${step}`);
    const dtype = opts.dtype ?? 'F32';
    const tensors = new Map<string, TensorEntry>();
    const modelState = contents.model instanceof Module ? contents.model.stateDict() : contents.model;
    addNamespaced(tensors, 'model', modelState, dtype);
    if (contents.ema) addNamespaced(tensors, 'ema', contents.ema.stateDict(), dtype);
    if (contents.optimizer) addNamespaced(tensors, 'optim', contents.optimizer.stateDict(), 'F32');
    const state: StoredState = {
      version: FORMAT_VERSION,
      step,
      dtype,
      ema: contents.ema ? { numUpdates: contents.ema.numUpdates } : null,
      optimizer: contents.optimizer !== undefined,
      extra: contents.extra ?? {},
    };
    const json = JSON.stringify(state);
    if (JSON.stringify(JSON.parse(json).extra) !== JSON.stringify(state.extra)) {
      throw new Error('checkpoint extra state must be plain JSON data');
    }
    fs.mkdirSync(this.dir, { recursive: true });
    const name = checkpointFileName(step);
    const file = path.join(this.dir, name);
    await this.io.writeTensors(file, tensors, { format: 'pt', [STATE_METADATA_KEY]: json, [CHECKSUM_METADATA_KEY]: dataChecksum(tensors) });
    await this.io.writeText(path.join(this.dir, LATEST_POINTER), `${name}\n`);
    this.prune(name);
    return file;
  }

  /** Checkpoint files in the directory, oldest step first. */
  list(): { step: number; file: string }[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: { step: number; file: string }[] = [];
    for (const n of names) {
      const m = FILE_PATTERN.exec(n);
      if (m) out.push({ step: Number(m[1]), file: path.join(this.dir, n) });
    }
    return out.sort((a, b) => a.step - b.step);
  }

  /** The file `latest` names, or null if there is no pointer yet. */
  latestPath(): string | null {
    const pointer = path.join(this.dir, LATEST_POINTER);
    let text: string;
    try {
      text = fs.readFileSync(pointer, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    const name = text.trim();
    if (!FILE_PATTERN.test(name)) throw new JobError(`${pointer}: expected a checkpoint file name like step-000123.safetensors, got ${JSON.stringify(name)}`);
    return path.join(this.dir, name);
  }

  /**
   * Load the checkpoint `latest` names; if that file is unreadable, the newest older one that reads
   * (reported in `fellBackFrom`). Without a pointer, the newest readable checkpoint. null if there is none.
   */
  loadLatest(): LoadedCheckpoint | null {
    const named = this.latestPath();
    const candidates = this.list().reverse().map((c) => c.file);
    const problems: string[] = [];
    // The named file first, then older ones; a newer file the pointer does not name was never completed.
    const order = named ? [named, ...candidates.filter((f) => stepOf(f) < stepOf(named))] : candidates;
    for (const f of order) {
      try {
        const loaded = this.load(f);
        return named && f !== named ? { ...loaded, fellBackFrom: named, fallbackReason: problems[0] ?? '' } : loaded;
      } catch (e) {
        problems.push(`${path.basename(f)}: ${(e as Error).message}`);
      }
    }
    if (problems.length === 0) return null;
    throw new JobError(`${this.dir}: no readable checkpoint (${problems.length} tried):\n  ${problems.join('\n  ')}`);
  }

  load(file: string): LoadedCheckpoint {
    const header = readSafetensorsHeader(file);
    const raw = header.metadata[STATE_METADATA_KEY];
    if (raw === undefined) throw new JobError(`${file}: not a scaleforge checkpoint (no '${STATE_METADATA_KEY}' in __metadata__)`);
    let state: StoredState;
    try {
      state = JSON.parse(raw) as StoredState;
    } catch (e) {
      throw new JobError(`${file}: '${STATE_METADATA_KEY}' metadata is not valid JSON: ${(e as Error).message}`);
    }
    if (state.version !== FORMAT_VERSION) throw new JobError(`${file}: checkpoint format version ${state.version}, this build reads ${FORMAT_VERSION}`);
    const check = verifyChecksum(file);
    if (check.status === 'mismatch') throw new JobError(`${file}: tensor data does not match its checksum (sha256 ${check.actual}, recorded ${check.expected}): the file is corrupt`);
    const all = loadSafetensors(file);
    const model = new Map<string, HostTensor>();
    const ema = new Map<string, HostTensor>();
    const optimizer = new Map<string, HostTensor>();
    for (const [key, t] of all) {
      const dot = key.indexOf('.');
      const ns = key.slice(0, dot);
      const name = key.slice(dot + 1);
      if (ns === 'model') model.set(name, t);
      else if (ns === 'ema') ema.set(name, t);
      else if (ns === 'optim') optimizer.set(name, t);
      else throw new JobError(`${file}: tensor '${key}' is outside the model./ema./optim. namespaces`);
    }
    return {
      file,
      step: state.step,
      model,
      ema: state.ema ? ema : null,
      emaNumUpdates: state.ema?.numUpdates ?? null,
      optimizer: state.optimizer ? optimizer : null,
      extra: state.extra,
    };
  }

  /**
   * Put a loaded checkpoint's tensors back into live objects (strictly: every name must match).
   * The caller restores `extra` itself (RNG states, loss scaler, data position).
   */
  restore(ckpt: LoadedCheckpoint, into: { model: Module; ema?: EMA; optimizer?: Optimizer }): void {
    into.model.loadStateDict(ckpt.model, { strict: true });
    if (into.ema) {
      if (!ckpt.ema) throw new JobError(`${ckpt.file}: has no EMA weights to restore`);
      into.ema.loadStateDict(ckpt.ema, ckpt.emaNumUpdates ?? 0);
    }
    if (into.optimizer) {
      if (!ckpt.optimizer) throw new JobError(`${ckpt.file}: has no optimizer state to restore`);
      into.optimizer.loadStateDict(ckpt.optimizer);
    }
  }

  /** Remove all but the newest keepLast checkpoints, never `justWritten`. Best effort: a failed unlink is not fatal. */
  private prune(justWritten: string): void {
    const all = this.list();
    const keep = new Set(all.slice(-this.keepLast).map((c) => path.basename(c.file)));
    keep.add(justWritten);
    for (const c of all) {
      if (keep.has(path.basename(c.file))) continue;
      try {
        fs.unlinkSync(c.file);
      } catch {
        // left for the next prune
      }
    }
  }
}

function stepOf(file: string): number {
  const m = FILE_PATTERN.exec(path.basename(file));
  return m ? Number(m[1]) : -1;
}

function addNamespaced(out: Map<string, TensorEntry>, ns: string, state: Map<string, tf.Tensor | HostTensor>, floatDtype: CheckpointDtype): void {
  const live = new Map<string, tf.Tensor>();
  for (const [name, t] of state) {
    if (t instanceof tf.Tensor) live.set(name, t);
    else out.set(`${ns}.${name}`, { shape: [...t.shape], data: t.data, dtype: t.data instanceof Int32Array ? 'I32' : floatDtype });
  }
  for (const [name, entry] of stateDictToEntries(live, floatDtype)) out.set(`${ns}.${name}`, entry);
}

/** sha256 of the data buffer a safetensors file of `tensors` holds (independent of the metadata). */
function dataChecksum(tensors: Map<string, TensorEntry>): string {
  const bytes = serializeSafetensors(tensors);
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return createHash('sha256').update(bytes.subarray(8 + headerLen)).digest('hex');
}

export interface ChecksumReport {
  /** 'missing': the file records no checksum (not a checkpoint, or written before checksums). */
  status: 'ok' | 'mismatch' | 'missing';
  expected?: string;
  actual?: string;
}

/** Recomputes the checksum of a safetensors file's data buffer and compares it with the recorded one. */
export function verifyChecksum(file: string): ChecksumReport {
  const header = readSafetensorsHeader(file);
  const expected = header.metadata[CHECKSUM_METADATA_KEY];
  if (expected === undefined) return { status: 'missing' };
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let pos = header.dataStart; pos < header.fileSize; ) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, header.fileSize - pos), pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const actual = h.digest('hex');
  return { status: actual === expected ? 'ok' : 'mismatch', expected, actual };
}
