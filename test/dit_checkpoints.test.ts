import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadSafetensors, saveSafetensors } from '../src/io/safetensors.js';
import { DiT, loadDit, loadDitWeights, readDitState } from '../src/models/dit/index.js';
import { UsageError } from '../src/util/errors.js';
import { DIT_FIXTURE_DIR, ditRef, fixtureDitConfig, refTensor } from './dit_fixture.js';
import { expectClose } from './nn_fixture_util.js';

// test/fixtures/dit/tiny.safetensors is the official layout (scripts/fixtures/dit_reference.py);
// test/fixtures/dit_diffusers/ is the same model renamed to diffusers' layout in Python
// (scripts/fixtures/dit_text_ref.py, following convert_dit_to_diffusers.py).
const OFFICIAL = `${DIT_FIXTURE_DIR}tiny.safetensors`;
const DIFFUSERS = fileURLToPath(new URL('./fixtures/dit_diffusers/', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dit-ckpt-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function forward(model: DiT): tf.Tensor4D {
  return model.forward(refTensor('x') as tf.Tensor4D, refTensor('t'), refTensor('y'));
}

describe('DiT checkpoints: official state dict and diffusers DiTTransformer2DModel', () => {
  it('both layouts load (config read off the shapes / config.json) and give identical outputs, equal to torch', () => {
    const a = loadDit(OFFICIAL);
    const b = loadDit(DIFFUSERS);
    expect(a.layout).toBe('official');
    expect(b.layout).toBe('diffusers');
    expect(b.model.config).toEqual(a.model.config);
    expect({ ...a.model.config, conditioning: undefined }).toMatchObject({ ...fixtureDitConfig, conditioning: undefined });
    const outA = forward(a.model);
    const outB = forward(b.model);
    expect(outB.sub(outA).abs().max().dataSync()[0]).toBe(0);
    expectClose(outA, ditRef.get('output')!, 'output vs torch', 1e-5, 1e-4);
    a.model.dispose();
    b.model.dispose();
  });

  it('the diffusers file is read as the official tensors: q/k/v concatenated, embedders de-duplicated', () => {
    const official = loadSafetensors(OFFICIAL);
    const { state, layout } = readDitState(`${DIFFUSERS}diffusion_pytorch_model.safetensors`);
    expect(layout).toBe('diffusers');
    for (const [name, t] of state) {
      const want = official.get(name)!;
      expect(t.shape, name).toEqual(want.shape);
      expect(Array.from(t.data), name).toEqual(Array.from(want.data));
    }
    expect([...official.keys()].filter((k) => !state.has(k))).toEqual(['pos_embed']);
  });

  it('a checkpoint of another architecture names the mismatching tensor and both shapes (exit code 2)', () => {
    const wide = new DiT({ ...fixtureDitConfig, hiddenSize: 48, numHeads: 2 });
    let err: unknown;
    try {
      loadDitWeights(OFFICIAL, wide);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(/tensor 'pos_embed' has shape \[1,16,32\] in the checkpoint but \[1,16,48\] in this DiT/);
    const learnFixed = new DiT({ ...fixtureDitConfig, learnSigma: false });
    expect(() => loadDitWeights(OFFICIAL, learnFixed)).toThrow(/'final_layer.linear.weight' has shape \[32,32\] in the checkpoint but \[16,32\]/);
    wide.dispose();
    learnFixed.dispose();
  });

  it('rejects files that are no DiT, diffusers copies that disagree, and pickles, with the file named', async () => {
    const other = path.join(tmp, 'other.safetensors');
    await saveSafetensors(other, { 'encoder.conv_in.weight': { shape: [1], data: new Float32Array(1) } });
    expect(() => loadDit(other)).toThrow(/other.safetensors: not a DiT checkpoint/);
    const pt = path.join(tmp, 'DiT-XL-2-256x256.pt');
    fs.writeFileSync(pt, 'x');
    expect(() => loadDit(pt)).toThrow(/PyTorch pickles are not read here/);
    // A diffusers file whose per-block embedder copies differ cannot be one official model.
    const dir = path.join(tmp, 'diverged');
    fs.mkdirSync(dir);
    fs.copyFileSync(`${DIFFUSERS}config.json`, path.join(dir, 'config.json'));
    const tensors = loadSafetensors(`${DIFFUSERS}diffusion_pytorch_model.safetensors`);
    const key = 'transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias';
    const t = tensors.get(key)!;
    const changed = Float32Array.from(t.data);
    changed[0]! += 1;
    tensors.set(key, { shape: t.shape, data: changed });
    await saveSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), new Map([...tensors].map(([k, v]) => [k, { shape: v.shape, data: v.data }])));
    expect(() => loadDit(dir)).toThrow(/'transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias' differs from block 0's copy/);
  });

  it('a class label out of range is a usage error naming the valid range', async () => {
    const { pipelineFromArchitecture } = await import('../src/jobs/dit/model.js');
    const p = pipelineFromArchitecture({ model: fixtureDitConfig, textEncoder: null, objective: { type: 'ddpm', numTimesteps: 1000, betaStart: 1e-4, betaEnd: 0.02, timeSampling: 'uniform', logitMean: 0, logitStd: 1, shift: 1, minSnrGamma: null } });
    expect(() => p.classCondition([3, 10])).toThrow(/class label 10 is out of range: this model has classes 0…9/);
    expect(() => p.encodePrompts(['a red circle'])).toThrow(/class-conditioned: sample it with --class/);
    p.dispose();
  });
});
