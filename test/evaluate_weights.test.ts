import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkWeightShapes, fetchWeights, listWeights, resolveWeights, sha256File } from '../src/eval/weights.js';
import { mirrorUrl } from '../src/cli/commands/weights.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { JobError, UsageError } from '../src/util/errors.js';

const PTH = path.join(__dirname, 'fixtures', 'pth', 'torch1', 'state.pth');
const expected = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'pth', 'torch1', 'expected.json'), 'utf8')) as Record<string, Record<string, { values: number[] }>>;

describe('weights fetch', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-weights-'));

  it('an unreachable URL fails with the URL and how to place the file by hand', async () => {
    const cacheDir = path.join(tmp, 'c1');
    const err = await fetchWeights('inception-fid', { cacheDir, urlOverride: mirrorUrl('http://127.0.0.1:9') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobError);
    const msg = (err as Error).message;
    expect(msg).toContain('http://127.0.0.1:9/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth');
    expect(msg).toContain('scaleforge weights fetch inception-fid --from pt_inception-2015-12-05-6726825d.pth');
    expect(msg).toContain(path.join(cacheDir, 'inception-fid', 'pt_inception-2015-12-05-6726825d.pth'));
    expect(fs.readdirSync(path.join(cacheDir, 'inception-fid')).filter((f) => f.endsWith('.part') || f.endsWith('.pth'))).toEqual([]);
  });

  it('a hand-placed file whose sha256 does not start with the published prefix is refused', async () => {
    const err = await fetchWeights('inception-fid', { cacheDir: path.join(tmp, 'c2'), from: PTH }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/sha256 [0-9a-f]{64} does not match the published prefix 6726825d/);
  });

  it('a hand-downloaded CLIP folder with pytorch_model.bin is converted to model.safetensors; list and resolve see it', async () => {
    const from = path.join(tmp, 'clip-download');
    fs.mkdirSync(from);
    fs.copyFileSync(PTH, path.join(from, 'pytorch_model.bin'));
    for (const f of ['config.json', 'vocab.json']) fs.writeFileSync(path.join(from, f), '{}');
    fs.writeFileSync(path.join(from, 'merges.txt'), '#version: 0.2\n');
    const cacheDir = path.join(tmp, 'c3');
    expect(() => resolveWeights('clip-vit-b32', { cacheDir })).toThrow(UsageError);
    expect(() => resolveWeights('clip-vit-b32', { cacheDir })).toThrow(/Get them with: scaleforge weights fetch clip-vit-b32/);
    const logs: string[] = [];
    const p = await fetchWeights('clip-vit-b32', { cacheDir, from, log: (l) => logs.push(l) });
    expect(p).toBe(path.join(cacheDir, 'clip-vit-b32', '.'));
    const st = loadSafetensors(path.join(cacheDir, 'clip-vit-b32', 'model.safetensors'), ['fc.weight']);
    expect(Array.from(st.get('fc.weight')!.data as Float32Array)).toEqual(expected['state.pth']!['fc.weight']!.values.map(Math.fround));
    const status = listWeights(cacheDir).find((w) => w.id === 'clip-vit-b32')!;
    expect(status.present).toBe(true);
    const r = resolveWeights('clip-vit-b32', { cacheDir });
    expect(r.sha256).toBe(await sha256File(path.join(cacheDir, 'clip-vit-b32', 'model.safetensors')));
    expect(listWeights(cacheDir).find((w) => w.id === 'inception-fid')!.present).toBe(false);
    await expect(fetchWeights('clip-vit-b32', { cacheDir, from: PTH })).rejects.toThrow(/several files .* give the folder/);
    await expect(fetchWeights('nope', { cacheDir })).rejects.toThrow(/unknown weights 'nope'; known: inception-fid, clip-vit-b32, clip-vit-l14/);
  });

  it('a weights file with the wrong names or shapes is refused naming the tensor and both shapes', async () => {
    const f = path.join(tmp, 'w.safetensors');
    await saveSafetensors(f, { 'fc.weight': { shape: [3, 4], data: new Float32Array(12) }, extra: { shape: [1], data: new Float32Array(1) } });
    const want = new Map<string, number[]>([
      ['fc.weight', [1008, 2048]],
      ['fc.bias', [1008]],
    ]);
    expect(() => checkWeightShapes(f, want)).toThrow(/tensor 'fc\.weight' has shape \[3, 4\], the network expects \[1008, 2048\]/);
    expect(() => checkWeightShapes(f, want)).toThrow(/missing tensor 'fc\.bias' \(expected shape \[1008\]\)/);
    expect(() => checkWeightShapes(f, want)).toThrow(/unexpected tensors: extra/);
  });
});
