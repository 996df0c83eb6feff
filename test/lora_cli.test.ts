import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/main.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../src/io/safetensors.js';
import { applyLoraFiles, loraDelta, readLoraFile, writeLoraFile } from '../src/lora/index.js';
import type { HostTensor } from '../src/nn/module.js';
import { ditState, loadFixtureDit } from './dit_fixture.js';
import { maxRelDiff, randomLora, tinyDitLoraSpec } from './helpers/lora.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-lora-cli-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const basePath = path.join(dir, 'base.safetensors');
const loraPath = path.join(dir, 'brand.safetensors');

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const so = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const se = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  process.exitCode = undefined;
  try {
    const code = await main(args);
    return { code, stdout: so.mock.calls.map((c) => String(c[0])).join(''), stderr: se.mock.calls.map((c) => String(c[0])).join('') };
  } finally {
    so.mockRestore();
    se.mockRestore();
    process.exitCode = undefined;
  }
}

describe('scaleforge lora', () => {
  const lora = randomLora(tinyDitLoraSpec(4, 2), 11);

  it('inspect prints format, fit, rank/alpha per module, targets and metadata', async () => {
    await saveSafetensors(basePath, ditState);
    await writeLoraFile(loraPath, lora, 'kohya', { baseModel: 'DiT-tiny/2', outputName: 'brand' });
    const r = await run(['lora', 'inspect', loraPath, '--base', basePath]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/kohya LoRA/);
    expect(r.stdout).toMatch(/8 modules, 4,096 parameters/);
    expect(r.stdout).toMatch(/fits: DiT, hidden 32, ≥ 2 blocks \(DiT-tiny\/\*\)/);
    expect(r.stdout).toMatch(/fits every module/);
    expect(r.stdout).toMatch(/targets: attn\.proj, attn\.qkv, mlp\.fc1, mlp\.fc2/);
    expect(r.stdout).toMatch(/blocks\.0\.attn\.qkv\s+4\s+2\.000\s+0\.5000\s+\[4, 32\] \/ \[96, 4\]/);
    expect(r.stdout).toMatch(/ss_output_name: brand/);
  });

  it('convert → every layout and back keeps the update; merge folds LoRAs at strengths into the base', async () => {
    for (const to of ['peft', 'comfy', 'diffusers', 'kohya']) {
      const o = path.join(dir, `c-${to}.safetensors`);
      const r = await run(['lora', 'convert', loraPath, o, '--to', to]);
      expect(r.code, r.stderr).toBe(0);
      const back = readLoraFile(o);
      expect(back.format.name).toBe(to);
      // kohya's training record travels; stale hashes do not (kohya recomputes its own).
      expect(back.lora.metadata.ss_output_name).toBe('brand');
      if (to !== 'kohya') expect(back.lora.metadata.sshs_model_hash).toBeUndefined();
      for (const [n, m] of lora.modules) expect(maxRelDiff(loraDelta(back.lora.modules.get(n)!), loraDelta(m))).toBeLessThan(1e-6);
    }
    const merged = path.join(dir, 'merged.safetensors');
    const r = await run(['lora', 'merge', '--base', basePath, '--lora', `${loraPath}:0.5`, '--lora', path.join(dir, 'c-diffusers.safetensors:0.25'), '--out', merged]);
    expect(r.code, r.stderr).toBe(0);
    const m = loadSafetensors(merged);
    const w0 = ditState.get('blocks.1.mlp.fc1.weight')!;
    const d = loraDelta(lora.modules.get('blocks.1.mlp.fc1')!);
    const w1 = m.get('blocks.1.mlp.fc1.weight')!;
    for (let i = 0; i < w0.data.length; i += 13) expect(w1.data[i]!).toBeCloseTo(w0.data[i]! + 0.75 * d[i]!, 5);
    expect(m.get('pos_embed')!.data).toEqual(ditState.get('pos_embed')!.data);
    expect(JSON.parse(readSafetensorsHeader(merged).metadata.merged_loras!)).toHaveLength(2);
  });

  it('resize prints the energy kept per module; extract recovers the merged difference', async () => {
    const small = path.join(dir, 'small.safetensors');
    let r = await run(['lora', 'resize', loraPath, small, '--rank', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/blocks\.0\.attn\.qkv\s+rank 4 → 2\s+energy kept \d+\.\d{3}%/);
    expect(readLoraFile(small).lora.modules.get('blocks.0.mlp.fc2')!.down.shape).toEqual([2, 128]);
    const merged = path.join(dir, 'merged1.safetensors');
    expect((await run(['lora', 'merge', '--base', basePath, '--lora', loraPath, '--out', merged])).code).toBe(0);
    const ex = path.join(dir, 'extracted.safetensors');
    r = await run(['lora', 'extract', '--base', basePath, '--tuned', merged, '--rank', '4', '--clamp-quantile', '1', '--out', ex]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/energy kept 100\.000%/);
    const got = readLoraFile(ex).lora;
    expect([...got.modules.keys()].sort()).toEqual([...lora.modules.keys()].sort());
    for (const [n, m] of lora.modules) expect(maxRelDiff(loraDelta(got.modules.get(n)!), loraDelta(m)), n).toBeLessThan(1e-4);
  });

  it('applyLoraFiles (sample --lora FILE[:strength]) applies files of any layout and removes them exactly', async () => {
    const model = loadFixtureDit();
    const w0 = new Map([...model.namedParameters()].map(([k, v]) => [k, v.dataSync().slice()]));
    const applied = applyLoraFiles(model, [`${loraPath}:0.5`, path.join(dir, 'c-diffusers.safetensors:0.5')]);
    const w = [...model.namedParameters()].find(([k]) => k === 'blocks.0.mlp.fc2.weight')![1].dataSync();
    const d = loraDelta(lora.modules.get('blocks.0.mlp.fc2')!);
    const base = w0.get('blocks.0.mlp.fc2.weight')!;
    for (let i = 0; i < base.length; i += 11) expect(w[i]!).toBeCloseTo(base[i]! + d[i]!, 5);
    applied.remove();
    for (const [k, v] of model.namedParameters()) expect(v.dataSync(), k).toEqual(w0.get(k));
    expect(() => applyLoraFiles(model, [`${loraPath}:abc`])).toThrow(/no such LoRA file/);
    model.dispose();
  });

  it('usage errors exit 2 and write nothing: LoRA that does not fit, unknown layout, missing file', async () => {
    const bad = path.join(dir, 'bad.safetensors');
    await writeLoraFile(bad, randomLora({ 'blocks.0.attn.qkv': [96, 32, 4, 4], 'blocks.5.mlp.fc1': [128, 32, 4, 4] }), 'comfy');
    const o = path.join(dir, 'never.safetensors');
    let r = await run(['lora', 'merge', '--base', basePath, '--lora', bad, '--out', o]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.safetensors does not fit the base model \(1 problem\):\n\s+blocks\.5\.mlp\.fc1: no such module/);
    expect(fs.existsSync(o)).toBe(false);
    r = await run(['lora', 'convert', loraPath, o, '--to', 'onnx']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/onnx/);
    const notLora = path.join(dir, 'plain.safetensors');
    const plain = new Map<string, HostTensor>([['w', { shape: [2], data: Float32Array.of(1, 2) }]]);
    await saveSafetensors(notLora, plain);
    r = await run(['lora', 'inspect', notLora]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/plain\.safetensors: not a LoRA file in a known layout/);
    r = await run(['lora', 'resize', path.join(dir, 'missing.safetensors'), o, '--rank', '2']);
    expect(r.code).toBe(2);
    expect(fs.existsSync(o)).toBe(false);
    r = await run(['lora', 'convert', loraPath, loraPath, '--to', 'kohya']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/would overwrite an input/);
  });
});
