import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { DTYPE_INFO, byteSize, type SafetensorsDtype } from '../../io/dtypes.js';
import { ShardedSafetensors, isShardIndexPath, numelOf, readSafetensorsHeader } from '../../io/safetensors.js';
import { CHECKSUM_METADATA_KEY, verifyChecksum } from '../../train/checkpoint.js';
import { JobError, UsageError } from '../../util/errors.js';
import { isPyTorchPath } from '../../io/pytorch_file.js';
import { inspectPyTorch } from './inspect_pytorch.js';

export interface InspectedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  numel: number;
  bytes: number;
  /** Shard file name, for sharded checkpoints. */
  shard?: string;
}

export interface InspectReport {
  file: string;
  kind: 'single' | 'sharded' | 'pytorch';
  fileBytes: number;
  metadata: Record<string, string>;
  tensors: InspectedTensor[];
  totals: { tensors: number; params: number; bytes: number };
  byDtype: Record<string, { tensors: number; params: number; bytes: number }>;
}

/** Everything `inspect` shows, from headers only: no tensor data is read, so multi-GB files are instant. */
export function inspectSafetensors(file: string): InspectReport {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new UsageError(`${file}: no such file (expected a .safetensors file or a *.safetensors.index.json)`);
  }
  if (!stat.isFile()) throw new UsageError(`${file}: not a file (expected a .safetensors file or a *.safetensors.index.json)`);

  const tensors: InspectedTensor[] = [];
  let metadata: Record<string, string>;
  let fileBytes = stat.size;
  const add = (name: string, dtype: SafetensorsDtype, shape: number[], shard?: string) => {
    const numel = numelOf(shape);
    tensors.push({ name, dtype, shape, numel, bytes: byteSize(dtype, numel) ?? 0, ...(shard ? { shard } : {}) });
  };

  if (isShardIndexPath(file)) {
    const index = ShardedSafetensors.open(file);
    metadata = index.metadata;
    const byShard = new Map<string, string[]>();
    for (const name of index.names()) {
      const shard = index.shardFileOf(name);
      byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
    }
    for (const [shard, names] of byShard) {
      const shardPath = path.join(path.dirname(file), shard);
      if (!fs.existsSync(shardPath)) throw new JobError(`${file}: shard ${shard} listed in weight_map does not exist`);
      const h = readSafetensorsHeader(shardPath);
      fileBytes += h.fileSize;
      for (const name of names) {
        const t = h.tensors[name];
        if (!t) throw new JobError(`${file}: weight_map puts '${name}' in ${shard}, which does not contain it`);
        add(name, t.dtype, t.shape, shard);
      }
    }
    index.close();
  } else {
    const h = readSafetensorsHeader(file);
    metadata = h.metadata;
    const order = Object.entries(h.tensors).sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
    for (const [name, t] of order) add(name, t.dtype, t.shape);
  }

  const byDtype: InspectReport['byDtype'] = {};
  for (const t of tensors) {
    const d = (byDtype[t.dtype] ??= { tensors: 0, params: 0, bytes: 0 });
    d.tensors++;
    d.params += t.numel;
    d.bytes += t.bytes;
  }
  const totals = {
    tensors: tensors.length,
    params: tensors.reduce((s, t) => s + t.numel, 0),
    bytes: tensors.reduce((s, t) => s + t.bytes, 0),
  };
  return { file, kind: isShardIndexPath(file) ? 'sharded' : 'single', fileBytes, metadata, tensors, totals, byDtype };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

const count = (n: number) => n.toLocaleString('en-US');

export function formatInspectReport(r: InspectReport): string {
  const lines: string[] = [];
  lines.push(`${r.file} (${r.kind === 'sharded' ? 'sharded checkpoint, ' : ''}${formatBytes(r.fileBytes)} on disk)`);
  const metaKeys = Object.keys(r.metadata).sort();
  lines.push(metaKeys.length ? 'metadata:' : 'metadata: (none)');
  for (const k of metaKeys) {
    const v = r.metadata[k]!;
    // Long values (kohya embeds whole JSON documents) would drown the table.
    lines.push(`  ${k}: ${v.length > 200 ? `${v.slice(0, 200)}… (${v.length} chars)` : v}`);
  }
  const header = ['name', 'dtype', 'shape', 'numel', 'bytes', ...(r.kind === 'sharded' ? ['shard'] : [])];
  const rows = r.tensors.map((t) => [
    t.name,
    t.dtype,
    `[${t.shape.join(', ')}]`,
    count(t.numel),
    count(t.bytes),
    ...(t.shard ? [t.shard] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const numeric = new Set([3, 4]);
  const fmt = (row: string[]) => row.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  lines.push(`tensors (${r.tensors.length}):`);
  lines.push(`  ${fmt(header)}`);
  for (const row of rows) lines.push(`  ${fmt(row)}`);
  const dtypes = Object.entries(r.byDtype).map(([d, s]) => `${d} ${count(s.params)} (${formatBytes(s.bytes)})`);
  lines.push(`total: ${count(r.totals.tensors)} tensors, ${count(r.totals.params)} params, ${formatBytes(r.totals.bytes)}${dtypes.length ? ` — ${dtypes.join(', ')}` : ''}`);
  const packed = Object.keys(r.byDtype).filter((d) => !DTYPE_INFO[d as SafetensorsDtype].convertible);
  if (packed.length) lines.push(`note: ${packed.join(', ')} can be read raw but not converted to float32`);
  return lines.join('\n');
}

interface InspectArgs {
  file: string;
  json: boolean;
  verify: boolean;
}

/** `--verify`: recompute the checksum a checkpoint records of its tensor data; a mismatch or no checksum fails (exit 1). */
export function verifyReport(file: string): string {
  const r = verifyChecksum(file);
  if (r.status === 'missing') throw new JobError(`${file}: records no checksum (${CHECKSUM_METADATA_KEY}); only Scaleforge training checkpoints carry one`);
  if (r.status === 'mismatch') throw new JobError(`${file}: checksum MISMATCH: tensor data hashes to sha256 ${r.actual}, the file records ${r.expected}; the file is corrupt`);
  return `${file}: checksum ok (sha256 ${r.actual} of the tensor data)`;
}

export const inspectCommand: CommandModule<object, InspectArgs> = {
  command: 'inspect <file>',
  describe: 'Show the metadata and tensors (dtype, shape, size) of a .safetensors file, sharded index or PyTorch .pth/.pt/.bin',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'model.safetensors or model.safetensors.index.json' })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object instead of text' })
      .option('verify', { type: 'boolean', default: false, describe: "check a checkpoint's tensor data against its recorded checksum" }),
  handler: (args) => {
    const report = isPyTorchPath(args.file) ? inspectPyTorch(args.file) : inspectSafetensors(args.file);
    if (args.verify) {
      process.stdout.write(`${verifyReport(args.file)}\n`);
      return;
    }
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInspectReport(report)}\n`);
  },
};
