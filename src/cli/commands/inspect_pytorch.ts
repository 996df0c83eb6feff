import fs from 'node:fs';
import { byteSize } from '../../io/dtypes.js';
import { TORCH_TO_SAFETENSORS, checkpointScalars, flattenTensors, readPyTorchFile } from '../../io/pytorch_file.js';
import { UsageError } from '../../util/errors.js';
import type { InspectReport, InspectedTensor } from './inspect.js';

/**
 * `inspect` for PyTorch `.pth`/`.pt`/`.bin` files: every tensor reachable through the checkpoint's
 * dicts by dotted path, with torch dtypes shown under their safetensors names; the checkpoint's
 * scalar entries (epoch, step…) and the file format as metadata. Only the pickle is read.
 */
export function inspectPyTorch(file: string): InspectReport {
  if (!fs.existsSync(file)) throw new UsageError(`${file}: no such file (expected a PyTorch .pth/.pt/.bin file)`);
  const f = readPyTorchFile(file);
  try {
    const tensors: InspectedTensor[] = [];
    for (const [name, t] of flattenTensors(f.root)) {
      const dtype = TORCH_TO_SAFETENSORS[t.dtype];
      tensors.push({ name, dtype, shape: [...t.shape], numel: t.numel, bytes: byteSize(dtype, t.numel) ?? 0 });
    }
    const byDtype: InspectReport['byDtype'] = {};
    for (const t of tensors) {
      const d = (byDtype[t.dtype] ??= { tensors: 0, params: 0, bytes: 0 });
      d.tensors++;
      d.params += t.numel;
      d.bytes += t.bytes;
    }
    const metadata = { format: `torch.save (${f.format === 'zip' ? 'zip archive' : 'legacy pickle stream'}, ${f.byteorder}-endian)`, ...checkpointScalars(f.root) };
    return {
      file,
      kind: 'pytorch',
      fileBytes: fs.statSync(file).size,
      metadata,
      tensors,
      totals: { tensors: tensors.length, params: tensors.reduce((s, t) => s + t.numel, 0), bytes: tensors.reduce((s, t) => s + t.bytes, 0) },
      byDtype,
    };
  } finally {
    f.close();
  }
}
