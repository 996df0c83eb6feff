import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './helpers/cli.js';
import { loadRecipe } from '../src/config/recipe.js';
import '../src/jobs/index.js';
import { detectModelKind } from '../src/jobs/registry.js';
import { nspRecipeSchema } from '../src/jobs/nsp/schema.js';
import { Linear } from '../src/nn/linear.js';
import { CheckpointManager } from '../src/train/checkpoint.js';
import { loadWeightsInto, readCheckpointState } from '../src/train/session.js';
import { UsageError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { nspJobStateSchema } from '../src/jobs/nsp/model.js';
import { vaeJobStateSchema, vaeLegacyState } from '../src/jobs/vae/model.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-session-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const TINY_NSP = `kind: nsp-progressive
seed: 3
backend: cpu
data: { source: procedural, procedural: { count: 8, size: 16, seed: 1 }, batch_size: 2 }
model:
  sizes: [8, 16]
  channels: [8]
  blocks_per_stage: [1]
  dense_layers: 1
  growth_channels: 4
  attention: { max_size: 0 }
  cond_dim: 8
  group_norm_groups: 4
text_encoder: { builtin: { dim: 8, layers: 1, heads: 2, context: 12 } }
train: { steps_per_scale: [2, 2], schedule: { warmup_steps: 0 } }
log: { every: 1, sample_every: 100, checkpoint_every: 100 }
sample: { prompts: ['a red circle in the top left on a blue background'], fidelity_samples: 2 }
`;

const TINY_VAE = `kind: vae
seed: 5
backend: cpu
model: { preset: tiny, block_out_channels: [8, 16], norm_num_groups: 4, scaling_factor: auto }
data: { source: procedural, procedural: { count: 4, size: 16, seed: 2 }, crop: 8, batch_size: 2 }
train: { steps: 2, schedule: { warmup_steps: 0 } }
log: { every: 1, sample_every: 100, checkpoint_every: 100 }
eval: { count: 2, grid: 2 }
`;

function write(name: string, text: string): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, text);
  return f;
}


describe('one value or one per stage', () => {
  it('accepts a single value, a one-item list, and one per stage; the value per stage follows one rule', () => {
    const base = { model: { sizes: [8, 16, 32], channels: [8] } };
    expect(() => nspRecipeSchema.parse({ ...base, train: { steps_per_scale: [5], optimizer: { lr: 1e-3 } } })).not.toThrow();
    expect(() => nspRecipeSchema.parse({ ...base, train: { steps_per_scale: [5, 6, 7], loss: { l1: [0, 1, 1] } } })).not.toThrow();
  });

  it('refuses a list of another length with file:line, exit 2, before any data is built', async () => {
    const f = write('bad-stages.yaml', TINY_NSP.replace('steps_per_scale: [2, 2]', 'steps_per_scale: [2, 2, 2]').replace('batch_size: 2', 'batch_size: [2, 2, 2]'));
    expect(() => loadRecipe(f)).toThrow(UsageError);
    const r = await cli(['train', '--recipe', f, '--out', path.join(tmp, 'never')]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/bad-stages\.yaml:4:\d+: data\.batch_size: expected one value or one per stage \(2, the length of model\.sizes\), got a list of 3/);
    expect(r.err).toMatch(/bad-stages\.yaml:15:\d+: train\.steps_per_scale: expected one value or one per stage \(2/);
    expect(r.out).not.toMatch(/backend:/); // nothing was started
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('locates cross-field model and stage-range errors too', () => {
    const f = write('bad-model.yaml', TINY_NSP.replace('group_norm_groups: 4', 'group_norm_groups: 3').replace('schedule: { warmup_steps: 0 }', 'end_scale: 5'));
    expect(() => loadRecipe(f)).toThrow(/bad-model\.yaml:\d+:\d+: model\.channels: channels\[0\]=8 is not divisible by group_norm_groups=3/);
    expect(() => loadRecipe(f)).toThrow(/bad-model\.yaml:15:\d+: train\.end_scale: expected a stage index below 2/);
  });

  it('grad_clip: 0 is accepted and means off', () => {
    expect(nspRecipeSchema.parse({ train: { grad_clip: 0 } }).train.grad_clip).toBe(0);
    expect(nspRecipeSchema.parse({}).train.grad_clip).toBe(1);
  });
});

describe('checkpoints across kinds', () => {
  let vaeRun: string;
  beforeAll(async () => {
    vaeRun = path.join(tmp, 'vae-run');
    const r = await cli(['train', '--recipe', write('vae-t.yaml', TINY_VAE), '--out', vaeRun]);
    expect(r.code, r.err).toBe(0);
  }, 60_000);

  it('resuming an NSP recipe from a VAE checkpoint is a usage error naming both kinds', async () => {
    const ckpt = new CheckpointManager(path.join(vaeRun, 'checkpoints')).latestPath()!;
    const r = await cli(['train', '--recipe', write('nsp-t.yaml', TINY_NSP), '--resume', ckpt]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/a checkpoint of kind 'vae', but this job is of kind 'nsp-progressive'/);
    expect(r.out).not.toMatch(/backend:/);
  });

  it('a state that does not match the job schema is refused, typed reading otherwise', async () => {
    const dir = path.join(tmp, 'odd');
    const model = new Linear(2, 1, { rng: new Rng(1) });
    const mgr = new CheckpointManager(dir);
    const base = { kind: 'nsp-progressive', step: 1, phase: 0, phaseStep: 1, data: null, rngs: {}, lossScaler: null };
    await mgr.save(1, { model, extra: { ...base, job: { architecture: { model: {} } } } });
    expect(() => readCheckpointState(mgr.loadLatest()!, 'nsp-progressive', nspJobStateSchema)).toThrow(/the 'nsp-progressive' state does not match/);
    model.dispose();
  });

  it('reads checkpoints written before the session existed (legacy flat state) into the same typed state', async () => {
    const mgr = new CheckpointManager(path.join(vaeRun, 'checkpoints'));
    const current = readCheckpointState(mgr.loadLatest()!, 'vae', vaeJobStateSchema);
    const s = current.state;
    // The layout the VAE trainer wrote before: { kind, step, sampler, rng, config }.
    const legacyExtra = { kind: 'vae', step: s.step, sampler: s.data, rng: s.rngs.vae, config: current.job.config };
    const legacyDir = path.join(tmp, 'legacy');
    const model = new Linear(2, 1, { rng: new Rng(1) });
    await new CheckpointManager(legacyDir).save(s.step, { model, extra: legacyExtra });
    model.dispose();
    const legacy = new CheckpointManager(legacyDir).loadLatest()!;
    expect(() => readCheckpointState(legacy, 'vae', vaeJobStateSchema)).toThrow(/not a 'vae' training checkpoint of this version/);
    const read = readCheckpointState(legacy, 'vae', vaeJobStateSchema, vaeLegacyState);
    expect(read.state).toEqual({ ...s, job: current.job });
    expect(read.job).toEqual(current.job);
  });

  it('loading weights of another architecture names the tensor and both shapes (exit 2)', () => {
    const a = new Linear(3, 2, { rng: new Rng(1) });
    const b = new Linear(4, 2, { rng: new Rng(1) });
    let err: unknown;
    try {
      loadWeightsInto(b, a.stateDict(), 'x.safetensors');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect(String(err)).toMatch(/x\.safetensors: the weights do not fit this model[\s\S]*size mismatch for weight: expected \[2,4\], got \[2,3\]/);
    a.dispose();
    b.dispose();
  });

  it('scaleforge sample dispatches on the kind: a VAE run gives a reconstruction grid', async () => {
    expect(detectModelKind(vaeRun)).toBe('vae');
    expect(detectModelKind(path.join(vaeRun, 'vae'))).toBe('vae');
    const out = path.join(tmp, 'vae-samples');
    const r = await cli(['sample', '--checkpoint', vaeRun, '--n', '2', '--out', out]);
    expect(r.code, r.err).toBe(0);
    expect(fs.readdirSync(out)).toEqual(['reconstructions-seed0.png']);
    expect(r.out).toMatch(/reconstruction PSNR: \d+\.\d\d dB/);
  });
});
