import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadSafetensors, serializeSafetensors } from '../src/io/safetensors.js';
import { CLIP_TEXT_DEFAULTS } from '../src/models/text/clip_text_config.js';
import { ClipTextModel, disposeClipTextOutput } from '../src/models/text/clip_text_model.js';
import { Rng } from '../src/util/rng.js';
import { loadClipTextFromHfFolder } from '../src/models/text/hf_folder.js';
import { UsageError } from '../src/util/errors.js';

// Reference numbers: scripts/fixtures/clip_text_ref.py (HF CLIPTextModelWithProjection forward in torch, float64).
const FIXTURE = fileURLToPath(new URL('./fixtures/clip/tiny-clip-text/', import.meta.url));
const ASSETS = fileURLToPath(new URL('../assets/clip/', import.meta.url));
type Flat = { shape: number[]; data: number[] };
const ref = JSON.parse(readFileSync(new URL('./fixtures/clip/tiny-clip-text-ref.json', import.meta.url), 'utf8')) as Record<string, Flat> & {
  input_ids: number[][];
  attention_mask: number[][];
};
const baseConfig = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>;

const tmpRoots: string[] = [];
afterAll(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A diffusers-style pipeline folder: text_encoder/{config.json, model.safetensors} and tokenizer/{vocab.json, merges.txt}. */
function pipelineFolder(config: Record<string, unknown> = baseConfig, withWeights = true): string {
  const root = mkdtempSync(join(tmpdir(), 'clip-text-'));
  tmpRoots.push(root);
  mkdirSync(join(root, 'text_encoder'));
  mkdirSync(join(root, 'tokenizer'));
  writeFileSync(join(root, 'text_encoder', 'config.json'), JSON.stringify(config));
  if (withWeights) copyFileSync(join(FIXTURE, 'model.safetensors'), join(root, 'text_encoder', 'model.safetensors'));
  symlinkSync(join(ASSETS, 'vocab.json'), join(root, 'tokenizer', 'vocab.json'));
  symlinkSync(join(ASSETS, 'merges.txt'), join(root, 'tokenizer', 'merges.txt'));
  return root;
}

function expectClose(t: tf.Tensor, want: Flat, atol = 1e-5): void {
  expect(t.shape).toEqual(want.shape);
  const got = t.dataSync();
  let worst = 0;
  for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want.data[i]!));
  expect(worst).toBeLessThan(atol);
}

describe('CLIPTextModel vs the HF reference forward', () => {
  const { model, tokenizer, config } = loadClipTextFromHfFolder(pipelineFolder());
  const ids = tf.tensor2d(ref.input_ids, undefined, 'int32');

  it('reads the config, the weights under HF names, and the tokenizer beside it', () => {
    expect(config).toMatchObject({ vocabSize: 1000, hiddenSize: 32, numHiddenLayers: 2, projectionDim: 24, eosTokenId: 900, pooling: 'eos' });
    const names = [...model.stateDict().keys()];
    expect(names).toContain('text_model.encoder.layers.1.self_attn.out_proj.bias');
    expect(names).toContain('text_projection.weight');
    expect(names).not.toContain('text_model.embeddings.position_ids');
    expect(tokenizer.encode('a photo of a cat')).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
  });

  it('matches last_hidden_state, hidden_states[-2], pooled output and text_embeds', () => {
    const out = model.forward(ids, { outputHiddenStates: true });
    expectClose(out.lastHiddenState, ref.last_hidden_state!);
    expect(out.hiddenStates).toHaveLength(3);
    expectClose(out.hiddenStates![out.hiddenStates!.length - 2]!, ref.penultimate_hidden_state!);
    expectClose(out.pooled, ref.pooled_eos!);
    expectClose(out.textEmbeds!, ref.text_embeds!);
    disposeClipTextOutput(out);
  });

  it('applies a padding attention mask on top of the causal mask', () => {
    const mask = tf.tensor2d(ref.attention_mask, undefined, 'int32');
    const out = model.forward(ids, { attentionMask: mask });
    expectClose(out.lastHiddenState, ref.last_hidden_state_masked!);
    disposeClipTextOutput(out);
    mask.dispose();
  });

  it('pools at argmax(ids) for legacy configs with eos_token_id 2', () => {
    const legacy = loadClipTextFromHfFolder(pipelineFolder({ ...baseConfig, eos_token_id: 2 }));
    expect(legacy.config.pooling).toBe('argmax');
    const out = legacy.model.forward(ids);
    expectClose(out.pooled, ref.pooled_argmax!);
    // The two pooling rules really differ on this input (row 0 holds an id above EOS).
    expect(Math.abs(ref.pooled_argmax!.data[0]! - ref.pooled_eos!.data[0]!)).toBeGreaterThan(1e-3);
    disposeClipTextOutput(out);
    legacy.model.dispose();
  });

  it('does not leak tensors across a forward', () => {
    const before = tf.memory().numTensors;
    const out = model.forward(ids, { outputHiddenStates: true });
    disposeClipTextOutput(out);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses sequences longer than max_position_embeddings', () => {
    const long = tf.zeros([1, 17], 'int32');
    expect(() => model.forward(long)).toThrow(/max_position_embeddings 16/);
    long.dispose();
  });
});

describe('other HF layouts', () => {
  const ids = tf.tensor2d(ref.input_ids, undefined, 'int32');

  it('reads a sharded checkpoint through model.safetensors.index.json', () => {
    const root = pipelineFolder(baseConfig, false);
    const tensors = loadSafetensors(join(FIXTURE, 'model.safetensors'));
    const names = [...tensors.keys()].filter((k) => !k.endsWith('position_ids'));
    const shards = [names.filter((_, i) => i % 2 === 0), names.filter((_, i) => i % 2 === 1)];
    const weightMap: Record<string, string> = {};
    shards.forEach((part, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeFileSync(join(root, 'text_encoder', file), serializeSafetensors(new Map(part.map((n) => [n, tensors.get(n)!]))));
      part.forEach((n) => (weightMap[n] = file));
    });
    writeFileSync(join(root, 'text_encoder', 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const { model } = loadClipTextFromHfFolder(root);
    const out = model.forward(ids);
    expectClose(out.lastHiddenState, ref.last_hidden_state!);
    disposeClipTextOutput(out);
    model.dispose();
  });

  it('reads a full CLIPModel folder: text_config nested, vision weights ignored', () => {
    const root = mkdtempSync(join(tmpdir(), 'clip-full-'));
    tmpRoots.push(root);
    const { projection_dim, ...textConfig } = baseConfig;
    writeFileSync(join(root, 'config.json'), JSON.stringify({ model_type: 'clip', projection_dim, text_config: textConfig, vision_config: { hidden_size: 8 } }));
    const tensors = loadSafetensors(join(FIXTURE, 'model.safetensors'));
    tensors.set('vision_model.embeddings.class_embedding', { shape: [8], data: new Float32Array(8) });
    tensors.set('visual_projection.weight', { shape: [24, 8], data: new Float32Array(192) });
    writeFileSync(join(root, 'model.safetensors'), serializeSafetensors(tensors));
    symlinkSync(join(ASSETS, 'vocab.json'), join(root, 'vocab.json'));
    symlinkSync(join(ASSETS, 'merges.txt'), join(root, 'merges.txt'));
    const { model, config } = loadClipTextFromHfFolder(root);
    expect(config.projectionDim).toBe(24);
    const out = model.forward(ids);
    expectClose(out.textEmbeds!, ref.text_embeds!);
    disposeClipTextOutput(out);
    model.dispose();
  });
});

describe('fresh initialisation', () => {
  it("follows HF CLIPPreTrainedModel._init_weights' standard deviations", () => {
    const d = 64;
    const layers = 2;
    const m = new ClipTextModel({ ...CLIP_TEXT_DEFAULTS, vocabSize: 300, hiddenSize: d, intermediateSize: 4 * d, numHiddenLayers: layers, numAttentionHeads: 4, projectionDim: 32 }, { rng: new Rng(5) });
    const sd = m.stateDict();
    const std = (k: string) => {
      const x = Array.from(sd.get(k)!.dataSync() as Float32Array);
      const mean = x.reduce((a, b) => a + b, 0) / x.length;
      return Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length);
    };
    const within = (k: string, want: number) => expect(Math.abs(std(k) / want - 1)).toBeLessThan(0.05);
    within('text_model.embeddings.token_embedding.weight', 0.02);
    within('text_model.embeddings.position_embedding.weight', 0.02);
    within('text_model.encoder.layers.1.self_attn.q_proj.weight', d ** -0.5 * (2 * layers) ** -0.5);
    within('text_model.encoder.layers.1.self_attn.out_proj.weight', d ** -0.5);
    within('text_model.encoder.layers.0.mlp.fc1.weight', (2 * d) ** -0.5);
    within('text_model.encoder.layers.0.mlp.fc2.weight', d ** -0.5 * (2 * layers) ** -0.5);
    within('text_projection.weight', d ** -0.5);
    expect(std('text_model.encoder.layers.0.mlp.fc1.bias')).toBe(0);
    m.dispose();
  });
});

describe('HF folder errors', () => {
  it('names missing weight files and hints at PyTorch pickles', () => {
    const root = pipelineFolder(baseConfig, false);
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/text_encoder: missing model\.safetensors or model\.safetensors\.index\.json/);
    writeFileSync(join(root, 'text_encoder', 'pytorch_model.bin'), '');
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/found pytorch_model\.bin/);
  });

  it('names a folder without config.json', () => {
    const root = mkdtempSync(join(tmpdir(), 'clip-text-'));
    tmpRoots.push(root);
    expect(() => loadClipTextFromHfFolder(root)).toThrow(UsageError);
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/no config\.json/);
  });

  it('names the tensor and both shapes when the config disagrees with the weights', () => {
    const root = pipelineFolder({ ...baseConfig, intermediate_size: 48 });
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/tensor text_model\.encoder\.layers\.0\.mlp\.fc1\.bias has shape \[64\] but the config implies \[48\]/);
  });

  it('names tensors the config expects but the file lacks', () => {
    const root = pipelineFolder({ ...baseConfig, num_hidden_layers: 3 });
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/missing tensors for the CLIP text model: text_model\.encoder\.layers\.2\./);
  });

  it('names the places it looked for the tokenizer', () => {
    const root = pipelineFolder();
    rmSync(join(root, 'tokenizer'), { recursive: true });
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/no CLIP tokenizer files .*text_encoder\/tokenizer/);
  });

  it('rejects an unknown hidden_act by name', () => {
    const root = pipelineFolder({ ...baseConfig, hidden_act: 'swishy' });
    expect(() => loadClipTextFromHfFolder(root)).toThrow(/config\.json: hidden_act "swishy"/);
  });
});
