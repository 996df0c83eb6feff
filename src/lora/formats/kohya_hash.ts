import { createHash } from 'node:crypto';
import { serializeSafetensors, type TensorEntry } from '../../io/safetensors.js';

/**
 * The two hashes kohya's sd-scripts put in a LoRA's header for sd-webui-additional-networks
 * (train_util.precalculate_safetensors_hashes): the file is serialised with only the `ss_*`
 * metadata, then
 *   sshs_model_hash  = SHA-256 of every byte after the header (the tensor data),
 *   sshs_legacy_hash = first 8 hex digits of SHA-256 of the 0x10000 bytes at file offset 0x100000
 *                      (an empty read, hence SHA-256 of nothing, for files under 1 MiB).
 * Our writer lays out header and data exactly as the safetensors reference does, so the bytes match.
 */
export function kohyaHashes(tensors: Map<string, TensorEntry>, metadata: Record<string, string>): { modelHash: string; legacyHash: string } {
  const training = Object.fromEntries(Object.entries(metadata).filter(([k]) => k.startsWith('ss_')));
  const bytes = serializeSafetensors(tensors, training);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const modelHash = createHash('sha256').update(bytes.subarray(8 + headerLength)).digest('hex');
  const legacyHash = createHash('sha256').update(bytes.subarray(0x100000, 0x100000 + 0x10000)).digest('hex').slice(0, 8);
  return { modelHash, legacyHash };
}
