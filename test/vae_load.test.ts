import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadSafetensors, saveSafetensors, type TensorEntry } from '../src/io/safetensors.js';
import type { AutoencoderKL } from '../src/models/vae/autoencoder_kl.js';
import { vaeConfigFromDiffusers } from '../src/models/vae/config.js';
import { loadVae, saveVae, toDiffusersVaeName } from '../src/models/vae/load.js';
import { UsageError } from '../src/util/errors.js';

// Written by scripts/fixtures/vae_ref.py: the same weights (exact in F32, F16 and BF16) under three
// naming schemes, so every spelling must load to bit-identical parameters.
const FIXTURE = path.join(import.meta.dirname, 'fixtures/vae/tiny');
const CONFIG_JSON = path.join(FIXTURE, 'config.json');
const fixtureJson = JSON.parse(fs.readFileSync(CONFIG_JSON, 'utf8')) as Record<string, unknown>;

let tmp: string;
let reference: AutoencoderKL;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-load-'));
  reference = loadVae(FIXTURE).model;
});
afterAll(() => {
  reference.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function expectSameParameters(model: AutoencoderKL): void {
  const want = new Map(reference.namedParameters());
  const got = new Map(model.namedParameters());
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, p] of got) {
    const a = p.dataSync();
    const b = want.get(name)!.dataSync();
    let same = a.length === b.length;
    for (let i = 0; same && i < a.length; i++) same = a[i] === b[i];
    if (!same) throw new Error(`parameter ${name} differs`);
  }
}

function writeConfig(dir: string, overrides: Record<string, unknown>): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, JSON.stringify({ ...fixtureJson, ...overrides }));
  return file;
}

function usageErrorOf(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return e as UsageError;
  }
  throw new Error('expected a UsageError');
}

describe('loadVae', () => {
  it('loads a diffusers folder: config fields and weights from the files', () => {
    const { config, weightsPath, ignored } = loadVae(FIXTURE);
    expect(config.blockOutChannels).toEqual([8, 16, 16]);
    expect(config.layersPerBlock).toBe(2);
    expect(config.normNumGroups).toBe(4);
    expect(config.scalingFactor).toBe(0.13025);
    expect(config.forceUpcast).toBe(true);
    expect(path.basename(weightsPath)).toBe('diffusion_pytorch_model.safetensors');
    expect(ignored).toEqual([]);
    // Spot check against the file itself, read independently (reference loaded the same folder).
    const raw = loadSafetensors(weightsPath, ['decoder.up_blocks.1.upsamplers.0.conv.weight']).get('decoder.up_blocks.1.upsamplers.0.conv.weight')!;
    const p = new Map(reference.namedParameters()).get('decoder.up_blocks.1.upsamplers.0.conv.weight')!;
    expect(p.shape).toEqual(raw.shape);
    expect(Array.from(p.dataSync())).toEqual(Array.from(raw.data));
  });

  it('accepts SD1.x-era attention names (query/key/value/proj_attn) from an F16 file', () => {
    const loaded = loadVae(path.join(FIXTURE, 'old_attention_names.safetensors'));
    expectSameParameters(loaded.model);
    loaded.model.dispose();
  });

  it('accepts original LDM single-file names (reversed decoder levels, 1×1-conv attention) from a BF16 file', () => {
    const loaded = loadVae(path.join(FIXTURE, 'ldm_single_file.safetensors'), { config: CONFIG_JSON });
    expectSameParameters(loaded.model);
    loaded.model.dispose();
  });

  it('takes the VAE out of a full SD checkpoint (first_stage_model.*) and reports the rest as ignored', async () => {
    const src = loadSafetensors(path.join(FIXTURE, 'ldm_single_file.safetensors'));
    const entries = new Map<string, TensorEntry>();
    for (const [k, t] of src) entries.set(`first_stage_model.${k}`, { shape: t.shape, data: t.data, dtype: 'F32' });
    entries.set('model.diffusion_model.out.2.bias', { shape: [4], data: new Float32Array(4), dtype: 'F32' });
    const file = path.join(tmp, 'full_checkpoint.safetensors');
    await saveSafetensors(file, entries);
    const loaded = loadVae(file, { config: CONFIG_JSON });
    expect(loaded.ignored).toEqual(['model.diffusion_model.out.2.bias']);
    expectSameParameters(loaded.model);
    loaded.model.dispose();
  });

  it('finds the vae/ subfolder of a pipeline folder and round-trips saveVae', async () => {
    const pipeline = path.join(tmp, 'pipeline');
    await saveVae(path.join(pipeline, 'vae'), reference);
    const loaded = loadVae(pipeline);
    expect(loaded.config).toEqual(vaeConfigFromDiffusers(fixtureJson, 'fixture'));
    expectSameParameters(loaded.model);
    loaded.model.dispose();
  });

  it('names the tensor and both shapes when weights do not fit the config', () => {
    const config = writeConfig(path.join(tmp, 'latent8'), { latent_channels: 8 });
    const e = usageErrorOf(() => loadVae(path.join(FIXTURE, 'diffusion_pytorch_model.safetensors'), { config }));
    expect(e.message).toContain('diffusion_pytorch_model.safetensors');
    expect(e.message).toContain("'encoder.conv_out.weight': file has [8,16,3,3], model expects [16,16,3,3]");
    expect(e.message).toContain("'post_quant_conv.weight': file has [4,4,1,1], model expects [8,8,1,1]");
  });

  it('reports the original name of a renamed tensor in a shape mismatch', () => {
    // Widening levels 1–2 from 16 to 32 channels keeps every name (the same resnets need shortcuts).
    const config = writeConfig(path.join(tmp, 'wide'), { block_out_channels: [8, 32, 32] });
    const e = usageErrorOf(() => loadVae(path.join(FIXTURE, 'ldm_single_file.safetensors'), { config }));
    expect(e.message).toContain(
      "'decoder.up.0.block.0.nin_shortcut.weight' (loaded as 'decoder.up_blocks.2.resnets.0.conv_shortcut.weight'): file has [8,16,1,1], model expects [8,32,1,1]",
    );
    expect(e.message).toContain("'encoder.norm_out.weight' (loaded as 'encoder.conv_norm_out.weight'): file has [16], model expects [32]");
  });

  it('lists missing tensors, and VAE tensors the config has no place for', () => {
    const deeper = writeConfig(path.join(tmp, 'lpb3'), { layers_per_block: 3 });
    const missing = usageErrorOf(() => loadVae(path.join(FIXTURE, 'diffusion_pytorch_model.safetensors'), { config: deeper }));
    expect(missing.message).toMatch(/missing 48 VAE tensor\(s\): encoder\.down_blocks\.0\.resnets\.2\.norm1\.weight, /);
    const shallower = writeConfig(path.join(tmp, 'lpb1'), { layers_per_block: 1 });
    const stray = usageErrorOf(() => loadVae(path.join(FIXTURE, 'diffusion_pytorch_model.safetensors'), { config: shallower }));
    expect(stray.message).toMatch(/tensor\(s\) have no place in this VAE: .*encoder\.down_blocks\.0\.resnets\.1\.norm1\.weight/);
  });

  it('asks for a config when a lone file has none beside it, and rejects bad paths and configs', () => {
    const lone = path.join(tmp, 'lone');
    fs.mkdirSync(lone);
    fs.copyFileSync(path.join(FIXTURE, 'diffusion_pytorch_model.safetensors'), path.join(lone, 'vae.safetensors'));
    expect(usageErrorOf(() => loadVae(path.join(lone, 'vae.safetensors'))).message).toMatch(/no config\.json beside the weights.*sdxl/);
    expect(usageErrorOf(() => loadVae(path.join(lone, 'vae.safetensors'), { config: 'sdlx' })).message).toMatch(/'sdlx' is neither a preset/);
    expect(usageErrorOf(() => loadVae(path.join(tmp, 'nope'))).message).toMatch(/VAE path not found/);
    expect(usageErrorOf(() => loadVae(lone)).message).toMatch(/no VAE weights found; looked for diffusion_pytorch_model\.safetensors/);
    const badTypes = writeConfig(path.join(tmp, 'types'), { up_block_types: ['UpDecoderBlock2D', 'AttnUpDecoderBlock2D', 'UpDecoderBlock2D'] });
    expect(usageErrorOf(() => loadVae(path.join(lone, 'vae.safetensors'), { config: badTypes })).message).toMatch(/types\/config\.json: 'up_block_types' must list 'UpDecoderBlock2D'/);
    const badGroups = writeConfig(path.join(tmp, 'groups'), { norm_num_groups: 3 });
    expect(usageErrorOf(() => loadVae(path.join(lone, 'vae.safetensors'), { config: badGroups })).message).toMatch(/8 is not divisible by norm_num_groups 3/);
  });
});

describe('toDiffusersVaeName', () => {
  it('maps LDM and old diffusers spellings; decoder levels are reversed', () => {
    const cases: [string, string][] = [
      ['encoder.down.3.block.1.nin_shortcut.bias', 'encoder.down_blocks.3.resnets.1.conv_shortcut.bias'],
      ['encoder.down.0.downsample.conv.weight', 'encoder.down_blocks.0.downsamplers.0.conv.weight'],
      ['decoder.up.3.block.2.conv1.weight', 'decoder.up_blocks.0.resnets.2.conv1.weight'],
      ['decoder.up.1.upsample.conv.bias', 'decoder.up_blocks.2.upsamplers.0.conv.bias'],
      ['decoder.mid.block_2.norm2.weight', 'decoder.mid_block.resnets.1.norm2.weight'],
      ['encoder.mid.attn_1.proj_out.weight', 'encoder.mid_block.attentions.0.to_out.0.weight'],
      ['encoder.mid.attn_1.norm.bias', 'encoder.mid_block.attentions.0.group_norm.bias'],
      ['decoder.mid_block.attentions.0.proj_attn.bias', 'decoder.mid_block.attentions.0.to_out.0.bias'],
      ['encoder.mid_block.attentions.0.key.weight', 'encoder.mid_block.attentions.0.to_k.weight'],
      ['decoder.norm_out.weight', 'decoder.conv_norm_out.weight'],
      ['quant_conv.weight', 'quant_conv.weight'],
      ['loss.logvar', 'loss.logvar'],
    ];
    for (const [ldm, diffusers] of cases) expect(toDiffusersVaeName(ldm, 4)).toBe(diffusers);
  });
});

describe('loaded model', () => {
  it('runs on the loaded weights without leaking tensors', () => {
    const before = tf.memory().numTensors;
    const x = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
    const { reconstruction, posterior } = reference.forward(x);
    expect(reconstruction.shape).toEqual([1, 8, 8, 3]);
    expect(posterior.mean.shape).toEqual([1, 2, 2, 4]);
    posterior.dispose();
    tf.dispose([x, reconstruction]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
