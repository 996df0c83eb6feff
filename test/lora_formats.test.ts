import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSafetensorsHeader, loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import {
  LORA_FORMAT_NAMES,
  kohyaFlatToModule,
  kohyaHashes,
  loraFormat,
  loraDelta,
  readLoraFile,
  writeLoraFile,
  type LoraFormatName,
  type LoraWeights,
} from '../src/lora/index.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { deltas, maxRelDiff, randomLora, tinyDitLoraSpec } from './helpers/lora.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-lora-fmt-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** r 4 alpha 2 (scale 0.5) everywhere, but fc2 of block 1 at r 2 alpha 8 (scale 4): alpha ≠ rank, mixed ranks. */
function trainedLora(): LoraWeights {
  const spec = tinyDitLoraSpec(4, 2);
  spec['blocks.1.mlp.fc2'] = [32, 128, 2, 8];
  spec['blocks.0.adaLN_modulation.1'] = [192, 32, 4, 2];
  const lora = randomLora(spec, 7);
  // The patch-embedding conv (LoCon / PEFT Conv2d shapes): down [r, in, kh, kw], up [out, r, 1, 1].
  const rng = new Rng(70);
  lora.modules.set('x_embedder.proj', {
    down: { shape: [3, 4, 2, 2], data: rng.fillNormal(new Float32Array(48)) },
    up: { shape: [32, 3, 1, 1], data: rng.fillNormal(new Float32Array(96)) },
    alpha: 6,
  });
  return lora;
}

/**
 * How an ecosystem loader applies a file, written independently of src/lora: ComfyUI scales by
 * alpha / r when an `.alpha` key exists, else 1; diffusers uses the lora_adapter_metadata config
 * (lora_alpha, alpha_pattern) when present, else 1. Returns file module stem → scale·up·down.
 */
function ecosystemDeltas(file: string, loader: 'comfyui' | 'diffusers'): Map<string, Float64Array> {
  const t = loadSafetensors(file);
  const meta = readSafetensorsHeader(file).metadata;
  const config = meta.lora_adapter_metadata ? (JSON.parse(meta.lora_adapter_metadata) as Record<string, unknown>) : undefined;
  const out = new Map<string, Float64Array>();
  for (const [key, down] of t) {
    const m = /^(.*)\.(lora_down|lora_A)\.weight$/.exec(key);
    if (!m) continue;
    const stem = m[1]!;
    const up = t.get(`${stem}.${m[2] === 'lora_down' ? 'lora_up' : 'lora_B'}.weight`)!;
    const r = down.shape[0]!;
    const alpha = t.get(`${stem}.alpha`);
    let scale = 1;
    if (alpha) scale = alpha.data[0]! / r;
    else if (loader === 'diffusers' && config) {
      const name = stem.replace(/^transformer\./, '');
      const pattern = (config['transformer.alpha_pattern'] ?? {}) as Record<string, number>;
      const hit = Object.keys(pattern).find((k) => new RegExp(`(.*\\.)?(${k})$`).test(name));
      scale = (hit ? pattern[hit]! : (config['transformer.lora_alpha'] as number)) / r;
    }
    const out_ = up.shape[0]!;
    const n = down.shape.slice(1).reduce((a, b) => a * b, 1);
    const d = new Float64Array(out_ * n);
    for (let o = 0; o < out_; o++) for (let k = 0; k < r; k++) for (let i = 0; i < n; i++) d[o * n + i]! += scale * up.data[o * r + k]! * down.data[k * n + i]!;
    out.set(stem, d);
  }
  return out;
}

const fileStem: Record<Exclude<LoraFormatName, 'diffusers'>, (module: string) => string> = {
  peft: (m) => `transformer.${m}`,
  kohya: (m) => `lora_unet_${m.replace(/\./g, '_')}`,
  comfy: (m) => `diffusion_model.${m}`,
};

describe('LoRA file formats', () => {
  const lora = trainedLora();
  const want = deltas(lora);

  it('every format writes the exact keys and shapes the ecosystem expects, and reads back (auto-detected) to the same update', async () => {
    for (const format of LORA_FORMAT_NAMES) {
      const file = path.join(dir, `rt-${format}.safetensors`);
      await writeLoraFile(file, lora, format, { baseModel: 'DiT-tiny/2', outputName: 'brand' });
      const h = readSafetensorsHeader(file);
      const keys = Object.keys(h.tensors).sort();
      if (format === 'kohya') {
        expect(keys).toContain('lora_unet_blocks_0_attn_qkv.lora_down.weight');
        expect(h.tensors['lora_unet_blocks_0_attn_qkv.lora_down.weight']!.shape).toEqual([4, 32]);
        expect(h.tensors['lora_unet_blocks_0_attn_qkv.lora_up.weight']!.shape).toEqual([96, 4]);
        expect(h.tensors['lora_unet_blocks_0_attn_qkv.alpha']!.shape).toEqual([]);
        expect(h.tensors['lora_unet_blocks_0_adaLN_modulation_1.alpha']).toBeDefined();
        expect(keys.length).toBe(3 * lora.modules.size);
        expect(h.tensors['lora_unet_x_embedder_proj.lora_down.weight']!.shape).toEqual([3, 4, 2, 2]);
        expect(h.tensors['lora_unet_x_embedder_proj.lora_up.weight']!.shape).toEqual([32, 3, 1, 1]);
        expect(h.metadata.ss_network_module).toBe('networks.lora');
        expect(h.metadata.ss_network_dim).toBe('4');
        expect(h.metadata.ss_network_alpha).toBe('2');
        expect(h.metadata.ss_base_model_version).toBe('DiT-tiny/2');
        expect(h.metadata.ss_output_name).toBe('brand');
        expect(h.metadata.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
      } else if (format === 'comfy') {
        expect(keys).toContain('diffusion_model.blocks.0.attn.qkv.lora_A.weight');
        expect(h.tensors['diffusion_model.blocks.1.mlp.fc2.lora_B.weight']!.shape).toEqual([32, 2]);
        expect(h.tensors['diffusion_model.blocks.1.mlp.fc2.alpha']!.shape).toEqual([]);
        expect(keys.length).toBe(3 * lora.modules.size);
      } else if (format === 'peft') {
        expect(keys).toContain('transformer.blocks.0.attn.qkv.lora_A.weight');
        expect(keys.some((k) => k.endsWith('.alpha'))).toBe(false);
        expect(keys.length).toBe(2 * lora.modules.size);
        expect(h.metadata.format).toBe('pt');
        const config = JSON.parse(h.metadata.lora_adapter_metadata!) as Record<string, unknown>;
        expect(config['transformer.r']).toBe(4);
        expect(config['transformer.lora_alpha']).toBe(4);
        expect(config['transformer.rank_pattern']).toEqual({ 'blocks\\.1\\.mlp\\.fc2': 2, 'x_embedder\\.proj': 3 });
        expect(config['transformer.alpha_pattern']).toEqual(config['transformer.rank_pattern']);
        expect(config['transformer.target_modules']).toEqual(['adaLN_modulation.1', 'attn.proj', 'attn.qkv', 'mlp.fc1', 'mlp.fc2', 'x_embedder.proj']);
        // diffusers writes json.dumps(indent=2, sort_keys=True).
        expect(h.metadata.lora_adapter_metadata!.startsWith('{\n  "transformer.alpha_pattern": {')).toBe(true);
      } else {
        expect(keys).toContain('transformer.transformer_blocks.0.attn1.to_q.lora_A.weight');
        expect(keys).toContain('transformer.transformer_blocks.0.attn1.to_out.0.lora_B.weight');
        expect(keys).toContain('transformer.transformer_blocks.1.ff.net.0.proj.lora_A.weight');
        expect(keys).toContain('transformer.transformer_blocks.1.ff.net.2.lora_B.weight');
        expect(keys).toContain('transformer.transformer_blocks.0.norm1.linear.lora_A.weight');
        expect(h.tensors['transformer.pos_embed.proj.lora_A.weight']!.shape).toEqual([3, 4, 2, 2]);
        expect(h.tensors['transformer.transformer_blocks.0.attn1.to_k.lora_B.weight']!.shape).toEqual([32, 4]);
        expect(keys.some((k) => k.includes('qkv'))).toBe(false);
      }
      const back = readLoraFile(file);
      expect(back.format.name).toBe(format);
      expect([...back.lora.modules.keys()].sort()).toEqual([...lora.modules.keys()].sort());
      for (const [name, d] of want) expect(maxRelDiff(loraDelta(back.lora.modules.get(name)!), d), `${format} ${name}`).toBeLessThan(1e-6);
    }
  });

  it('alpha ≠ rank: ComfyUI and diffusers apply every written format at the trained strength (scale folded into B where there is no alpha)', async () => {
    for (const format of LORA_FORMAT_NAMES) {
      const file = path.join(dir, `rt-${format}.safetensors`);
      await writeLoraFile(file, lora, format);
      for (const loader of ['comfyui', 'diffusers'] as const) {
        const got = ecosystemDeltas(file, loader);
        for (const [name, d] of want) {
          if (format === 'diffusers') {
            if (!name.endsWith('attn.qkv')) continue;
            const b = name.split('.')[1];
            ['to_q', 'to_k', 'to_v'].forEach((p, k) => {
              const part = got.get(`transformer.transformer_blocks.${b}.attn1.${p}`)!;
              expect(maxRelDiff(part, d.subarray(k * 32 * 32, (k + 1) * 32 * 32)), `${loader} ${format} ${p}`).toBeLessThan(1e-6);
            });
            continue;
          }
          expect(maxRelDiff(got.get(fileStem[format](name))!, d), `${loader} reading ${format}: ${name}`).toBeLessThan(1e-6);
        }
      }
    }
  });

  it('cross-attention adapters map to diffusers attn2 and back', async () => {
    const x = randomLora({ 'blocks.0.cross_attn.to_q': [32, 32, 2, 2], 'blocks.0.cross_attn.to_out.0': [32, 32, 2, 4] }, 8);
    const file = path.join(dir, 'xattn.safetensors');
    await writeLoraFile(file, x, 'diffusers');
    expect(Object.keys(readSafetensorsHeader(file).tensors)).toContain('transformer.transformer_blocks.0.attn2.to_out.0.lora_B.weight');
    const back = readLoraFile(file).lora;
    for (const [n, m] of x.modules) expect(maxRelDiff(loraDelta(back.modules.get(n)!), loraDelta(m)), n).toBeLessThan(1e-6);
  });

  it('diffusers: a fused qkv adapter is split exactly (shared A, B by rows) and q/k/v adapters with different A fuse exactly', async () => {
    const file = path.join(dir, 'split.safetensors');
    await writeLoraFile(file, lora, 'diffusers');
    const t = loadSafetensors(file);
    const a = (p: string) => t.get(`transformer.transformer_blocks.0.attn1.${p}.lora_A.weight`)!.data;
    expect(a('to_k')).toEqual(a('to_q'));
    expect(a('to_v')).toEqual(a('to_q'));
    const qkv = lora.modules.get('blocks.0.attn.qkv')!;
    const bk = t.get('transformer.transformer_blocks.0.attn1.to_k.lora_B.weight')!.data;
    // Row 0 of to_k is row 32 of the fused B, times the folded scale 0.5.
    for (let k = 0; k < 4; k++) expect(bk[k]).toBeCloseTo(qkv.up.data[32 * 4 + k]! * 0.5, 6);
    // Three independent adapters (as diffusers trains them) fuse into one of rank 4+4+2.
    const parts = randomLora({ q: [32, 32, 4, 4], k: [32, 32, 4, 4], v: [32, 32, 2, 2] }, 3);
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [p, m] of parts.modules) {
      tensors.set(`transformer.transformer_blocks.0.attn1.to_${p}.lora_A.weight`, { shape: m.down.shape, data: m.down.data as Float32Array });
      tensors.set(`transformer.transformer_blocks.0.attn1.to_${p}.lora_B.weight`, { shape: m.up.shape, data: m.up.data as Float32Array });
    }
    const sep = path.join(dir, 'separate-qkv.safetensors');
    await saveSafetensors(sep, tensors);
    const fused = readLoraFile(sep).lora.modules.get('blocks.0.attn.qkv')!;
    expect(fused.down.shape).toEqual([10, 32]);
    const d = loraDelta(fused);
    ['q', 'k', 'v'].forEach((p, k) => expect(maxRelDiff(d.subarray(k * 1024, (k + 1) * 1024), loraDelta(parts.modules.get(p)!))).toBeLessThan(1e-6));
  });

  it('kohya sshs_model_hash / sshs_legacy_hash equal the values hashlib computes (fixture), including past 1 MiB', () => {
    const fixture = JSON.parse(fs.readFileSync(new URL('./fixtures/lora/kohya_hash.json', import.meta.url), 'utf8')) as {
      cases: { modules: Record<string, { r: number; in: number; out: number; alpha: number }>; metadata: Record<string, string>; sshs_model_hash: string; sshs_legacy_hash: string }[];
    };
    const value = (i: number, k: number) => (((i * 7919 + k * 104729) % 2001) - 1000) / 1024;
    for (const c of fixture.cases) {
      const tensors = new Map<string, { shape: number[]; data: Float32Array; dtype: 'F32' }>();
      let k = 0;
      for (const [name, m] of Object.entries(c.modules)) {
        const key = `lora_unet_${name.replace(/\./g, '_')}`;
        const kd = k++;
        const ku = k++;
        tensors.set(`${key}.lora_down.weight`, { shape: [m.r, m.in], data: Float32Array.from({ length: m.r * m.in }, (_, i) => value(i, kd)), dtype: 'F32' });
        tensors.set(`${key}.lora_up.weight`, { shape: [m.out, m.r], data: Float32Array.from({ length: m.out * m.r }, (_, i) => value(i, ku)), dtype: 'F32' });
        tensors.set(`${key}.alpha`, { shape: [], data: Float32Array.of(m.alpha), dtype: 'F32' });
      }
      const h = kohyaHashes(tensors, c.metadata);
      expect(h.modelHash).toBe(c.sshs_model_hash);
      expect(h.legacyHash).toBe(c.sshs_legacy_hash);
    }
    expect(fixture.cases[1]!.sshs_legacy_hash).not.toBe('e3b0c442');
    // The same hashes from kohya's own steps on safetensors.torch.save (scripts/fixtures/lora_peft_reference.py).
    const real = JSON.parse(fs.readFileSync(new URL('./fixtures/lora/peft_reference.json', import.meta.url), 'utf8')) as { kohya_hashes: { sshs_model_hash: string; sshs_legacy_hash: string }[] };
    expect(real.kohya_hashes).toEqual(fixture.cases.map((c) => ({ sshs_model_hash: c.sshs_model_hash, sshs_legacy_hash: c.sshs_legacy_hash })));
  });

  it('DoRA magnitudes travel in peft (lora_magnitude_vector) and diffusers (split by rows with qkv); kohya/comfy refuse them', async () => {
    const withDora = randomLora({ 'blocks.0.attn.qkv': [96, 32, 4, 2], 'blocks.0.mlp.fc2': [32, 128, 4, 8] }, 5);
    for (const m of withDora.modules.values()) m.magnitude = { shape: [m.up.shape[0]!], data: Float32Array.from({ length: m.up.shape[0]! }, (_, i) => 1 + i / 10) };
    for (const format of ['peft', 'diffusers'] as const) {
      const file = path.join(dir, `dora-${format}.safetensors`);
      await writeLoraFile(file, withDora, format);
      const keys = Object.keys(readSafetensorsHeader(file).tensors);
      expect(keys).toContain(format === 'peft' ? 'transformer.blocks.0.attn.qkv.lora_magnitude_vector' : 'transformer.transformer_blocks.0.attn1.to_v.lora_magnitude_vector');
      const back = readLoraFile(file).lora;
      for (const [n, m] of withDora.modules) {
        expect(back.modules.get(n)!.magnitude!.data, `${format} ${n}`).toEqual(m.magnitude!.data);
        expect(maxRelDiff(loraDelta(back.modules.get(n)!), loraDelta(m))).toBeLessThan(1e-6);
      }
    }
    for (const format of ['kohya', 'comfy'] as const) {
      await expect(writeLoraFile(path.join(dir, `dora-${format}.safetensors`), withDora, format)).rejects.toThrow(/cannot hold PEFT DoRA adapters/);
      expect(fs.existsSync(path.join(dir, `dora-${format}.safetensors`))).toBe(false);
    }
  });

  it('trained base parameters travel as ComfyUI .diff/.diff_b in kohya and comfy files; peft layouts refuse them', async () => {
    const withDiffs: LoraWeights = { ...randomLora({ 'blocks.0.attn.proj': [32, 32, 2, 2] }, 12), diffs: new Map([
      ['blocks.0.adaLN_modulation.1.bias', { shape: [192], data: Float32Array.from({ length: 192 }, (_, i) => i / 1000) }],
      ['blocks.1.attn.proj.weight', { shape: [32, 32], data: Float32Array.from({ length: 1024 }, (_, i) => (i % 7) / 100) }],
    ]) };
    for (const format of ['kohya', 'comfy'] as const) {
      const file = path.join(dir, `diffs-${format}.safetensors`);
      await writeLoraFile(file, withDiffs, format);
      const keys = Object.keys(readSafetensorsHeader(file).tensors);
      expect(keys).toContain(format === 'kohya' ? 'lora_unet_blocks_0_adaLN_modulation_1.diff_b' : 'diffusion_model.blocks.0.adaLN_modulation.1.diff_b');
      expect(keys).toContain(format === 'kohya' ? 'lora_unet_blocks_1_attn_proj.diff' : 'diffusion_model.blocks.1.attn.proj.diff');
      const back = readLoraFile(file).lora;
      expect([...back.diffs!.keys()].sort()).toEqual([...withDiffs.diffs!.keys()].sort());
      for (const [k, d] of withDiffs.diffs!) expect(back.diffs!.get(k)!.data).toEqual(d.data);
    }
    for (const format of ['peft', 'diffusers'] as const) {
      await expect(writeLoraFile(path.join(dir, `diffs-${format}.safetensors`), withDiffs, format)).rejects.toThrow(/no place for trained base parameters/);
    }
  });

  it('kohya names resolve back to module paths, underscores inside segments included', () => {
    expect(kohyaFlatToModule('blocks_11_adaLN_modulation_1')).toBe('blocks.11.adaLN_modulation.1');
    expect(kohyaFlatToModule('final_layer_adaLN_modulation_1')).toBe('final_layer.adaLN_modulation.1');
    expect(kohyaFlatToModule('x_embedder_proj')).toBe('x_embedder.proj');
    expect(kohyaFlatToModule('blocks_0_mlp_fc1')).toBe('blocks.0.mlp.fc1');
    expect(kohyaFlatToModule('blocks_3_cross_attn_to_out_0')).toBe('blocks.3.cross_attn.to_out.0');
    expect(kohyaFlatToModule('my_odd_name', new Set(['my_odd.name']))).toBe('my_odd.name');
    const { metadata } = loraFormat('kohya').write(lora, { tagFrequency: { '10_brand': { brandx: 3 } }, trainingComment: 'c' });
    expect(JSON.parse(metadata.ss_tag_frequency!)).toEqual({ '10_brand': { brandx: 3 } });
    expect(metadata.ss_training_comment).toBe('c');
  });

  it('bad files: unknown layout, truncated file, missing half of a pair — clear errors naming the file', async () => {
    const odd = path.join(dir, 'odd.safetensors');
    await saveSafetensors(odd, { 'model.weight': { shape: [2], data: Float32Array.of(1, 2) } });
    expect(() => readLoraFile(odd)).toThrow(UsageError);
    expect(() => readLoraFile(odd)).toThrow(/odd\.safetensors: not a LoRA file in a known layout.*model\.weight/);
    const trunc = path.join(dir, 'trunc.safetensors');
    fs.writeFileSync(trunc, fs.readFileSync(path.join(dir, 'rt-kohya.safetensors')).subarray(0, 200));
    expect(() => readLoraFile(trunc)).toThrow(/trunc\.safetensors/);
    const half = path.join(dir, 'half.safetensors');
    await saveSafetensors(half, { 'lora_unet_blocks_0_attn_qkv.lora_down.weight': { shape: [2, 32], data: new Float32Array(64) } });
    expect(() => readLoraFile(half)).toThrow(/module 'lora_unet_blocks_0_attn_qkv' has no up/);
    expect(() => readLoraFile(path.join(dir, 'nope.safetensors'))).toThrow(/no such LoRA file/);
    await expect(writeLoraFile(path.join(dir, 'x.safetensors'), lora, 'onnx' as LoraFormatName)).rejects.toThrow(/unknown LoRA format 'onnx'; known: peft, kohya, comfy, diffusers/);
    expect(fs.existsSync(path.join(dir, 'x.safetensors'))).toBe(false);
  });
});
