import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, f16BitsToF32 } from '../src/io/dtypes.js';
import { PickleError, pyAttributes } from '../src/io/pickle.js';
import { TorchTensor, checkpointScalars, convertPyTorchToSafetensors, findStateDict, flattenTensors, readPyTorchFile } from '../src/io/pytorch_file.js';
import { readSafetensorsHeader, loadSafetensors } from '../src/io/safetensors.js';

import { writeZip } from '../src/io/zip.js';

interface Expected {
  dtype: string;
  shape: number[];
  stride: number[];
  storage_offset: number;
  values: number[];
}

const ROOT = path.join(__dirname, 'fixtures', 'pth');
const versions = fs.readdirSync(ROOT).filter((d) => fs.existsSync(path.join(ROOT, d, 'expected.json')));

function asNumbers(t: TorchTensor): number[] {
  const a = t.toTypedArray();
  if (t.dtype === 'float16') return Array.from(a as Uint16Array, f16BitsToF32);
  if (t.dtype === 'bfloat16') return Array.from(a as Uint16Array, bf16BitsToF32);
  if (a instanceof BigInt64Array) return Array.from(a, Number);
  return Array.from(a as ArrayLike<number>);
}

describe.each(versions)('PyTorch files saved by %s', (version) => {
  const dir = path.join(ROOT, version);
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Record<string, Record<string, Expected>>;

  it.each(['state.pth', 'dtypes.pth', 'views.pth', 'nested.pth', 'views_legacy.pth'])('%s: every tensor matches torch (dtype, shape, strides, offset, values)', (name) => {
    const f = readPyTorchFile(path.join(dir, name));
    try {
      expect(f.format).toBe(name.includes('legacy') ? 'legacy' : 'zip');
      const tensors = flattenTensors(f.root);
      const want = expected[name]!;
      expect([...tensors.keys()].sort()).toEqual(Object.keys(want).sort());
      for (const [key, w] of Object.entries(want)) {
        const t = tensors.get(key)!;
        expect(t.dtype, key).toBe(w.dtype);
        expect(t.shape, key).toEqual(w.shape);
        expect(t.stride, key).toEqual(w.stride);
        expect(t.storageOffset, key).toBe(w.storage_offset);
        expect(asNumbers(t), key).toEqual(w.values);
      }
    } finally {
      f.close();
    }
  });

  it('views of one tensor share one storage object', () => {
    for (const name of ['views.pth', 'views_legacy.pth']) {
      const f = readPyTorchFile(path.join(dir, name));
      const t = flattenTensors(f.root);
      expect(t.get('grid')!.storage).toBe(t.get('base')!.storage);
      expect(t.get('strided')!.storage).toBe(t.get('base')!.storage);
      expect(t.get('param')!.requiresGrad).toBe(true);
      f.close();
    }
  });

  it('a module state dict keeps its _metadata and finds the nested state dict', () => {
    const f = readPyTorchFile(path.join(dir, 'state.pth'));
    expect(pyAttributes.get(f.root as object)?.has('_metadata')).toBe(true);
    f.close();
    const n = readPyTorchFile(path.join(dir, 'nested.pth'));
    const sd = findStateDict(n.root);
    expect([...sd.keys()]).toEqual(Object.keys(expected['state.pth']!));
    expect([...findStateDict(n.root, 'ema').keys()].sort()).toEqual(['fc.bias', 'fc.weight']);
    expect(() => findStateDict(n.root, 'nope')).toThrow(/no 'nope'.*state_dict, ema, epoch/);
    const scalars = checkpointScalars(n.root);
    expect(scalars).toMatchObject({ epoch: '3', lr: '0.125', name: 'tiny <b>run</b>', device: 'cpu' });
    n.close();
  });

  it('converts a nested checkpoint to safetensors that reads back to the same values', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-pth-'));
    const out = path.join(tmp, 'state.safetensors');
    const r = await convertPyTorchToSafetensors(path.join(dir, 'nested.pth'), out);
    expect(r.tensors).toBe(Object.keys(expected['state.pth']!).length);
    const h = readSafetensorsHeader(out);
    expect(h.tensors['conv.weight']!.dtype).toBe('F32');
    expect(h.tensors['norm.num_batches_tracked']!.dtype).toBe('I64');
    expect(h.metadata.source_format).toBe('pytorch');
    const loaded = loadSafetensors(out, ['conv.weight']);
    expect(Array.from(loaded.get('conv.weight')!.data as Float32Array)).toEqual(expected['state.pth']!['conv.weight']!.values.map(Math.fround));
    fs.rmSync(tmp, { recursive: true });
  });
});

describe('PyTorch file errors', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-pthbad-'));
  const zipWith = (pkl: Uint8Array, extra: { name: string; data: Uint8Array }[] = []) => {
    const p = path.join(tmp, `f${Math.random().toString(36).slice(2)}.pth`);
    fs.writeFileSync(p, writeZip([{ name: 'archive/data.pkl', data: pkl }, ...extra]));
    return p;
  };

  it('refuses a .pth whose pickle calls os.system, naming the global, without running it', () => {
    const marker = path.join(tmp, 'pwned');
    const pkl = Buffer.from(`cos\nsystem\n(S'touch ${marker}'\ntR.`, 'latin1');
    const p = zipWith(pkl);
    expect(() => readPyTorchFile(p)).toThrow(PickleError);
    expect(() => readPyTorchFile(p)).toThrow(/refusing to load global 'os\.system'.*nothing was executed/);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('refuses a storage that claims more elements than its record holds', () => {
    // ('storage', torch.FloatStorage, '0', 'cpu', 1000) as a persistent id, record holds 8 bytes.
    const pkl = Buffer.concat([
      Buffer.from([0x80, 0x02]),
      Buffer.from('(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuM\xe8\x03tQ.', 'latin1'),
    ]);
    const p = zipWith(pkl, [{ name: 'archive/data/0', data: new Uint8Array(8) }]);
    expect(() => readPyTorchFile(p)).toThrow(/storage '0' holds 8 bytes, 1000 float32 elements need 4000/);
  });

  it('names the file for a zip without data.pkl, a non-torch pickle and the old tar format', () => {
    const p = path.join(tmp, 'x.pth');
    fs.writeFileSync(p, writeZip([{ name: 'a.txt', data: new Uint8Array(3) }]));
    expect(() => readPyTorchFile(p)).toThrow(/x\.pth: a zip archive without <prefix>\/data\.pkl/);
    fs.writeFileSync(p, Buffer.from([0x80, 0x02, 0x4b, 0x05, 0x2e]));
    expect(() => readPyTorchFile(p)).toThrow(/not a torch\.save file/);
    const tar = Buffer.alloc(1024);
    tar.write('ustar', 257, 'latin1');
    fs.writeFileSync(p, tar);
    expect(() => readPyTorchFile(p)).toThrow(/pre-0\.4 tar checkpoint format, which is not supported/);
    expect(() => readPyTorchFile(path.join(tmp, 'missing.pth'))).toThrow(/missing\.pth: cannot open/);
  });
});

describe('inspect on .pth files', () => {
  it('lists tensors by dotted path with safetensors dtype names and the checkpoint scalars', async () => {
    const { inspectPyTorch } = await import('../src/cli/commands/inspect_pytorch.js');
    const { formatInspectReport } = await import('../src/cli/commands/inspect.js');
    const dir = path.join(ROOT, versions[0]!);
    const r = inspectPyTorch(path.join(dir, 'nested.pth'));
    expect(r.kind).toBe('pytorch');
    expect(r.metadata.epoch).toBe('3');
    const w = r.tensors.find((t) => t.name === 'state_dict.conv.weight')!;
    expect(w).toMatchObject({ dtype: 'F32', shape: [4, 3, 3, 3], numel: 108, bytes: 432 });
    expect(r.tensors.find((t) => t.name === 'state_dict.norm.num_batches_tracked')!.dtype).toBe('I64');
    expect(formatInspectReport(r)).toMatch(/format: torch\.save \(zip archive, little-endian\)/);
    expect(inspectPyTorch(path.join(dir, 'dtypes.pth')).byDtype.BF16).toEqual({ tensors: 1, params: 5, bytes: 10 });
  });
});

describe('PyTorchTensorSource', () => {
  it('serves a .pth state dict to loaders as safetensors would: names, info, float32/int32 host tensors', async () => {
    const { PyTorchTensorSource, openWeightsSource } = await import('../src/io/pytorch_file.js');
    const dir = path.join(ROOT, versions[0]!);
    const want = (JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Record<string, Record<string, Expected>>)['state.pth']!;
    const src = openWeightsSource(path.join(dir, 'state.pth'));
    expect(src).toBeInstanceOf(PyTorchTensorSource);
    expect(src.names().sort()).toEqual(Object.keys(want).sort());
    expect(src.info('conv.weight')).toMatchObject({ dtype: 'F32', shape: [4, 3, 3, 3] });
    const w = src.read('conv.weight');
    expect(Array.from(w.data)).toEqual(want['conv.weight']!.values.map(Math.fround));
    const nbt = src.read('norm.num_batches_tracked');
    expect(nbt.data).toBeInstanceOf(Int32Array);
    expect(Array.from(nbt.data)).toEqual(want['norm.num_batches_tracked']!.values);
    src.close();
    const dt = new PyTorchTensorSource(path.join(dir, 'dtypes.pth'));
    const wantD = (JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Record<string, Record<string, Expected>>)['dtypes.pth']!;
    expect(Array.from(dt.read('bf16').data)).toEqual(wantD.bf16!.values);
    expect(() => dt.read('i64')).toThrow(/int64 value -1099511627776 at element 0 does not fit int32/);
    dt.close();
  });
});
